// Checkpoints (DESIGN.md 9): a directory of files (tensor archives written by the trainer) plus
// meta.pb (proto::CheckpointMeta: stage, position, config, metrics, every file's size and CRC-32)
// and its text twin meta.txtpb. Written to a temporary directory, fsynced, renamed into place;
// then index.txtpb (proto::CheckpointIndex) is replaced atomically. A failed write leaves the
// previous checkpoints and the index as they were.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "base/torch_glog.h"
#include "proto/checkpoint.pb.h"

namespace reid::trainer {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;
// (file name inside the checkpoint, content).
using CheckpointFiles = std::vector<std::pair<std::string, std::string>>;

// Tensors <-> bytes of a LibTorch archive (torch::serialize), by name.
std::string SerializeTensors(const NamedTensors& tensors);
StatusOr<NamedTensors> DeserializeTensors(const std::string& bytes, const std::string& what);

// Copies `loaded` into `target` by name; every name must be present in both with equal shapes
// (InvalidArgument listing the differences otherwise).
Status CopyTensorsByName(const NamedTensors& loaded, const NamedTensors& target,
                         const std::string& what);

// A checkpoint's name from its position: "s<stage>-e<epoch:04>-i<step:06>" (the sampler position
// the run continues from), so that names sort in training order.
std::string CheckpointName(int stage, int64_t next_epoch, int64_t next_step);

class CheckpointStore {
 public:
  // `dir` = OUTPUT_DIR/checkpoints (created on the first commit).
  explicit CheckpointStore(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }
  // Writes checkpoint `name` (replacing one of that name) with `files` and `meta` (its file
  // entries are filled here), then updates the index and prunes: the newest `keep_last_n` are
  // kept, plus the best by metrics["mAP"] when keep_best, plus the newest stage-1 checkpoint
  // (stage 2 starts from it). On failure nothing committed before is touched.
  Status Commit(const std::string& name, proto::CheckpointMeta meta, const CheckpointFiles& files,
                int keep_last_n, bool keep_best);
  // The newest checkpoint that verifies, skipping (with a warning naming the file) damaged ones.
  // NotFound when there is none.
  StatusOr<std::string> FindLatestValid() const;

 private:
  std::vector<std::string> CommittedNames() const;  // sorted, oldest first
  Status WriteIndex(const proto::CheckpointIndex& index) const;
  void Prune(int keep_last_n, bool keep_best, proto::CheckpointIndex* index) const;
  std::string dir_;
  int commits_ = 0;
};

// Reads and checks `path`/meta.pb and every file it lists (size and CRC-32). NotFound when
// `path` is not a checkpoint directory, DataLoss naming the first damaged file.
Status VerifyCheckpoint(const std::string& path, proto::CheckpointMeta* meta);
// The verified content of one file of a checkpoint (size and CRC checked against `meta`).
StatusOr<std::string> ReadCheckpointFile(const std::string& path, const proto::CheckpointMeta& meta,
                                         const std::string& name);
// Resolves what --resume names: a checkpoint directory, or a run directory / its checkpoints
// folder (then its newest valid checkpoint).
StatusOr<std::string> ResolveCheckpoint(const std::string& path);

}  // namespace reid::trainer
