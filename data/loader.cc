// The per-rank loader: decode threads, bounded prefetch ring, RAM cache, bad-file replacement.
#include "data/loader.h"

#include <glog/logging.h>

#include <algorithm>
#include <map>
#include <sstream>

#include "data/jpeg.h"
#include "data/rng.h"

namespace reid::data {

BatchBuffer HeapBuffer(size_t num_floats) {
  std::shared_ptr<float[]> mem(new float[num_floats]);  // uninitialised: every float is written
  BatchBuffer b;
  b.data = mem.get();
  b.size = num_floats;
  b.owner = std::shared_ptr<void>(mem, mem.get());
  return b;
}

Loader::Loader(const std::vector<Sample>* samples, const TransformOptions& transform,
               const LoaderOptions& options, BufferAllocator allocator)
    : samples_(samples),
      transform_(transform),
      options_(options),
      allocator_(std::move(allocator)) {
  CHECK(samples_ != nullptr);
  CHECK_GT(options_.num_workers, 0) << "Loader: num_workers";
  CHECK_GT(options_.prefetch_batches, 0) << "Loader: prefetch_batches";
  std::map<int, int> slot_of_pid;
  pid_slot_.resize(samples_->size());
  for (size_t i = 0; i < samples_->size(); ++i) {
    auto [it, added] = slot_of_pid.emplace((*samples_)[i].pid, static_cast<int>(by_pid_.size()));
    if (added) by_pid_.emplace_back();
    by_pid_[it->second].push_back(static_cast<int64_t>(i));
    pid_slot_[i] = it->second;
  }
  cache_.resize(samples_->size());
  bad_.assign(samples_->size(), 0);
  slots_.resize(options_.prefetch_batches);
  for (int i = 0; i < options_.num_workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  done_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void Loader::StartEpoch(int64_t epoch, std::vector<BatchPlan> plans) {
  std::unique_lock<std::mutex> lock(mu_);
  ++generation_;  // samples in flight for the old epoch are dropped when they finish
  done_cv_.wait(lock, [this] { return in_flight_ == 0; });
  if (error_) std::rethrow_exception(error_);
  epoch_ = epoch;
  plans_ = std::move(plans);
  claim_batch_ = claim_pos_ = consumed_ = 0;
  for (Slot& s : slots_) s = Slot();
  lock.unlock();
  work_cv_.notify_all();
}

bool Loader::Next(Batch* batch) {
  std::unique_lock<std::mutex> lock(mu_);
  if (consumed_ >= plans_.size()) return false;
  Slot& slot = slots_[consumed_ % slots_.size()];
  done_cv_.wait(lock, [&] { return stop_ || (claim_batch_ > consumed_ && slot.remaining == 0); });
  if (error_) std::rethrow_exception(error_);  // a worker's exception, in the consumer's thread
  if (stop_) return false;
  *batch = std::move(slot.batch);
  slot = Slot();
  ++consumed_;
  lock.unlock();
  work_cv_.notify_all();
  return true;
}

void Loader::SetUpSlot(const BatchPlan& plan, size_t sample_floats, Slot* slot) {
  slot->batch = Batch();
  slot->batch.step = plan.step;
  slot->batch.indices = plan.indices;
  for (int64_t i : plan.indices) {
    CHECK(i >= 0 && i < static_cast<int64_t>(samples_->size()))
        << "batch of step " << plan.step << ": sample index " << i << " of " << samples_->size();
    slot->batch.pids.push_back((*samples_)[i].pid);
    slot->batch.camids.push_back((*samples_)[i].camid);
  }
  slot->batch.images = allocator_(sample_floats * plan.indices.size());
  slot->remaining = static_cast<int>(plan.indices.size());
}

void Loader::WorkerLoop() {
  JpegDecoder decoder;
  const size_t sample_floats = 3ull * transform_.height * transform_.width;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    work_cv_.wait(lock, [this] {
      return stop_ || (claim_batch_ < plans_.size() && claim_batch_ < consumed_ + slots_.size());
    });
    if (stop_) return;
    const size_t b = claim_batch_, j = claim_pos_;
    const BatchPlan& plan = plans_[b];
    Slot& slot = slots_[b % slots_.size()];
    if (j == 0) {
      try {  // allocates the batch: a pinned tensor may throw c10::Error, the heap bad_alloc
        SetUpSlot(plan, sample_floats, &slot);
      } catch (...) {
        Fail(std::current_exception());
        return;
      }
    }
    if (plan.indices.empty()) {  // an empty batch (e.g. a rank's share of a tiny last batch)
      ++claim_batch_;
      done_cv_.notify_all();
      continue;
    }
    if (++claim_pos_ >= plan.indices.size()) {
      ++claim_batch_;
      claim_pos_ = 0;
    }
    const uint64_t generation = generation_;
    const int64_t epoch = epoch_, index = plan.indices[j];
    const int64_t key = j < plan.keys.size() ? plan.keys[j] : index;
    float* out = slot.batch.images.data + j * sample_floats;
    ++in_flight_;
    lock.unlock();
    std::exception_ptr error;
    try {
      LoadSample(index, key, epoch, &decoder, out);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    --in_flight_;
    if (error) {
      Fail(error);
      return;
    }
    if (generation == generation_ && --slot.remaining == 0) done_cv_.notify_all();
    if (in_flight_ == 0) done_cv_.notify_all();
  }
}

void Loader::Fail(std::exception_ptr error) {
  if (!error_) error_ = std::move(error);
  stop_ = true;
  done_cv_.notify_all();
  work_cv_.notify_all();
}

void Loader::MarkBad(int64_t index, const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (bad_[index]) return;
    bad_[index] = 1;
  }
  ++unreadable_;
  LOG(WARNING) << "unreadable image " << (*samples_)[index].path << " (" << error
               << "): replaced by another image of identity " << (*samples_)[index].pid;
}

bool Loader::LoadResized(int64_t index, JpegDecoder* decoder, std::shared_ptr<const Image>* image) {
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (bad_[index]) return false;
    if (cache_[index]) {
      *image = cache_[index];
      return true;
    }
  }
  const int min_h = transform_.dct_scaling ? transform_.height : 0;
  const int min_w = transform_.dct_scaling ? transform_.width : 0;
  const StatusOr<std::vector<uint8_t>> bytes = ReadFileBytes((*samples_)[index].path);
  const StatusOr<Image> decoded = bytes.ok()
                                      ? decoder->Decode(bytes->data(), bytes->size(), min_h, min_w)
                                      : StatusOr<Image>(bytes.status());
  if (!decoded.ok()) {
    MarkBad(index, decoded.status().message());
    return false;
  }
  auto resized = std::make_shared<Image>();
  ResizeForPipeline(*decoded, transform_, resized.get());
  *image = resized;
  if (options_.cache_budget_bytes > 0) {
    // Two workers can miss on the same index (PK batches repeat images of small identities):
    // only the one that stores the image counts its bytes.
    const int64_t bytes = static_cast<int64_t>(resized->bytes());
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (!cache_[index] && cache_bytes_ + bytes <= options_.cache_budget_bytes) {
      cache_[index] = resized;
      cache_bytes_ += bytes;
    }
  }
  return true;
}

void Loader::LoadSample(int64_t index, int64_t key, int64_t epoch, JpegDecoder* decoder,
                        float* out) {
  std::shared_ptr<const Image> image;
  if (!LoadResized(index, decoder, &image)) {
    ++replaced_;
    // Replacement: the first readable same-identity image in an order drawn from the sample's
    // key, so the choice does not depend on which thread found which bad file first.
    const std::vector<int64_t>& same = by_pid_[pid_slot_[index]];
    Rng rng(options_.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(key),
            RngStream::kReplace);
    const size_t start = static_cast<size_t>(rng.UniformInt(0, same.size() - 1));
    for (size_t t = 0; t < same.size() && !image; ++t) {
      const int64_t candidate = same[(start + t) % same.size()];
      if (candidate != index) LoadResized(candidate, decoder, &image);
    }
    if (!image) {
      LOG_FIRST_N(WARNING, 10) << "identity " << (*samples_)[index].pid
                               << " has no readable image: using a black image";
      auto black = std::make_shared<Image>();
      black->Resize(transform_.height, transform_.width);
      std::fill(black->pixels.begin(), black->pixels.end(), 0);
      image = black;
    }
  }
  TransformToTensor(*image, transform_, options_.seed, epoch, key, out);
}

Status CheckReadable(const std::string& split_name, const std::vector<Sample>& split,
                     double max_fraction, int threads, std::vector<std::string>* bad_paths) {
  std::vector<char> bad(split.size(), 0);
  std::atomic<size_t> next{0};
  std::mutex error_mu;
  std::exception_ptr error;  // the first exception of a thread, rethrown here after the join
  auto work = [&] {
    try {
      JpegDecoder decoder;
      for (size_t i; (i = next++) < split.size();) {
        // 1x1 minimum: the smallest DCT scale (1/8) still decodes every entropy-coded block.
        const StatusOr<std::vector<uint8_t>> bytes = ReadFileBytes(split[i].path);
        bad[i] = !bytes.ok() || !decoder.Decode(bytes->data(), bytes->size(), 1, 1).ok();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
      next = split.size();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(1, threads); ++t) pool.emplace_back(work);
  for (std::thread& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  bad_paths->clear();
  for (size_t i = 0; i < split.size(); ++i) {
    if (bad[i]) bad_paths->push_back(split[i].path);
  }
  if (split.empty() || bad_paths->size() <= max_fraction * split.size()) return Status::Ok();
  std::ostringstream msg_stream;
  msg_stream << split_name << ": " << bad_paths->size() << " of " << split.size()
             << " images cannot be decoded (more than " << max_fraction * 100 << "%); first ones:";
  std::string msg = msg_stream.str();
  for (size_t i = 0; i < std::min<size_t>(10, bad_paths->size()); ++i) {
    msg += "\n  " + (*bad_paths)[i];
  }
  return Status::InvalidArgument(msg);
}

}  // namespace reid::data
