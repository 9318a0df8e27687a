// Threaded image loader of one rank: a pool of decode threads fills a bounded queue of batches
// (plain float buffers, (B, 3, H, W)), in plan order; optional RAM cache of decoded, resized
// images; unreadable files replaced by another image of the same identity, logged and counted.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "data/dataset.h"
#include "data/image.h"
#include "data/jpeg.h"
#include "data/sampler.h"
#include "data/transforms.h"

namespace reid::data {

// Memory for one batch's images; `owner` keeps it alive (a std::vector or a torch::Tensor).
struct BatchBuffer {
  float* data = nullptr;
  size_t size = 0;              // floats
  std::shared_ptr<void> owner;  // frees the memory
  bool torch_owned = false;     // owner is a torch::Tensor (see batch_tensor.h)
};
using BufferAllocator = std::function<BatchBuffer(size_t num_floats)>;
BatchBuffer HeapBuffer(size_t num_floats);  // the default allocator

struct Batch {
  int64_t step = 0;
  std::vector<int64_t> indices;  // dataset indices as planned (before any replacement)
  std::vector<int64_t> pids, camids;
  BatchBuffer images;  // (B, 3, H, W)
};

// Built by LoaderOptionsFromConfig (data/options.h): the schema (data.num_workers,
// data.prefetch_batches, data.cache_budget_mb, seed) holds the defaults, so none is restated here;
// a zero count is refused by the Loader.
struct LoaderOptions {
  int num_workers = 0;             // decode threads
  int prefetch_batches = 0;        // batches in flight ahead of the consumer
  int64_t cache_budget_bytes = 0;  // RAM cache of resized uint8 images; 0 = off
  uint64_t seed = 0;
};

// Typical use on one rank (stage 2):
//   PkSampler sampler(train_labels, P, K, cfg.seed());
//   Loader loader(&dataset.train, TransformOptionsFromConfig(cfg.input(), true),
//                 LoaderOptionsFromConfig(cfg), TorchBufferAllocator());
//   for (epoch...) {
//     loader.StartEpoch(epoch, sampler.RankBatches(epoch, rank, world, start_step));
//     for (Batch b; loader.Next(&b);) { TensorBatch t = ToTensors(b, H, W); ... }
//   }
// Inference: loader.StartEpoch(0, InferencePlans(shard.begin, shard.end, test_batch_size)).
class Loader {
 public:
  // `samples` must outlive the loader.
  Loader(const std::vector<Sample>* samples, const TransformOptions& transform,
         const LoaderOptions& options, BufferAllocator allocator = HeapBuffer);
  ~Loader();  // stops the threads, also mid-epoch
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Starts (or restarts) an epoch over `plans`; a running epoch is abandoned.
  void StartEpoch(int64_t epoch, std::vector<BatchPlan> plans);
  // Next batch in plan order; false at the end of the epoch. An exception of a decode thread
  // (an allocation that failed) stops the loader and is rethrown here, in the caller's thread,
  // and by StartEpoch from then on.
  bool Next(Batch* batch);

  int64_t unreadable_count() const { return unreadable_.load(); }  // distinct bad files seen
  int64_t replaced_count() const { return replaced_.load(); }      // samples replaced
  int64_t cache_bytes() const { return cache_bytes_.load(); }

 private:
  struct Slot {
    Batch batch;
    int remaining = 0;
  };
  void WorkerLoop();
  void SetUpSlot(const BatchPlan& plan, size_t sample_floats, Slot* slot);
  // Fills out[(3, H, W)] for sample `index` (or a same-identity replacement).
  void LoadSample(int64_t index, int64_t key, int64_t epoch, JpegDecoder* decoder, float* out);
  bool LoadResized(int64_t index, JpegDecoder* decoder, std::shared_ptr<const Image>* image);
  void MarkBad(int64_t index, const std::string& error);
  // Records a worker's exception (the first one) and stops every thread; mu_ held.
  void Fail(std::exception_ptr error);

  const std::vector<Sample>* samples_;
  TransformOptions transform_;
  LoaderOptions options_;
  BufferAllocator allocator_;
  std::vector<std::vector<int64_t>> by_pid_;  // same-identity candidates for replacement
  std::vector<int> pid_slot_;                 // sample -> index into by_pid_

  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  bool stop_ = false;
  int64_t epoch_ = 0;
  uint64_t generation_ = 0;
  std::vector<BatchPlan> plans_;
  size_t claim_batch_ = 0, claim_pos_ = 0, consumed_ = 0;
  int in_flight_ = 0;
  std::vector<Slot> slots_;  // ring of prefetch_batches
  std::exception_ptr error_;  // a worker's exception, rethrown by Next and StartEpoch
  std::vector<std::thread> workers_;

  std::mutex cache_mu_;
  std::vector<std::shared_ptr<const Image>> cache_;
  std::vector<char> bad_;  // guarded by cache_mu_
  std::atomic<int64_t> cache_bytes_{0}, unreadable_{0}, replaced_{0};
};

// Pre-training check: decodes every image of `split` (at the smallest DCT scale, quickly) with
// `threads` threads. OK when at most `max_fraction` of it is unreadable, else InvalidArgument
// naming the split, the count and the first bad paths. *bad_paths gets every bad path.
Status CheckReadable(const std::string& split_name, const std::vector<Sample>& split,
                     double max_fraction, int threads, std::vector<std::string>* bad_paths);

}  // namespace reid::data
