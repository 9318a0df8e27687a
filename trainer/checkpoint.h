// Checkpoints (docs/design.md 11): a directory of tensor files (torch.save zips, read by our own
// bounded reader: loading one runs no code) plus meta.pb (proto::CheckpointMeta: stage, position,
// config, metrics, every file's size and CRC-32) and its text twin meta.txtpb. Written to a
// temporary directory, fsynced, renamed into place; then index.txtpb (proto::CheckpointIndex) is
// replaced atomically. A failed write leaves the previous checkpoints and the index as they were.
// Checkpoints are ordered by the position their meta.pb records, never by their names.
#pragma once

#include <cstdint>
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

// The format this build writes and reads: 2 = tensor files are torch.save zips. Format 1 (an
// earlier build) stored LibTorch archives, which only the TorchScript loader reads, and that
// loader runs code from the file: such checkpoints are refused.
inline constexpr uint32_t kCheckpointFormatVersion = 2;
// meta.pb may list at most this many files (a checkpoint has five at most), each once.
inline constexpr int kMaxCheckpointFiles = 16;
// model.pt's size limit where no model is built to derive one from (ckpt, eval, export...):
// about a billion float32 values; the ViT-B/16 model is 0.6 GB.
inline constexpr uint64_t kMaxModelFileBytes = uint64_t{4} << 30;

// Tensors -> bytes of a torch.save zip (formats::SerializeTorchSave), in order. Internal when a
// tensor cannot be stored (a dtype without a torch.save storage, a repeated name).
StatusOr<std::string> SerializeTensors(const NamedTensors& tensors);
// Bytes of a torch.save zip -> tensors, sorted by name, dtypes as stored, read by
// formats::ReadTorchSaveZip (no code runs; memory bounded by the bytes). DataLoss "WHAT: not a
// checkpoint tensor file (REASON)", one line.
StatusOr<NamedTensors> DeserializeTensors(const std::string& bytes, const std::string& what);

// Copies `loaded` into `target` by name; every name must be present in both with equal shapes
// (InvalidArgument listing the differences otherwise).
Status CopyTensorsByName(const NamedTensors& loaded, const NamedTensors& target,
                         const std::string& what);

// A checkpoint's name from its position: "s<stage>-e<epoch:04>-i<step:06>" (the sampler position
// the run continues from). Names sort in training order only while the numbers keep their width
// (e10000 sorts before e9999): order by the position in meta.pb instead.
std::string CheckpointName(int stage, int64_t next_epoch, int64_t next_step);

// Fills meta's build facts (version, git sha, LibTorch, CUDA/NCCL) and its creation time (now).
void StampBuildAndTime(proto::CheckpointMeta* meta);

class CheckpointStore {
 public:
  // `dir` = OUTPUT_DIR/checkpoints (created on the first commit).
  explicit CheckpointStore(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }
  // Writes checkpoint `name` (replacing one of that name; `name` must be CheckpointName of
  // meta's position) with `files` (at most kMaxCheckpointFiles, model.pt among them) and `meta`
  // (its file entries and format version are filled here), then updates the index and prunes:
  // the newest `keep_last_n` by position are kept, plus the best by metrics["mAP"] when
  // keep_best, plus the newest stage-1 checkpoint (stage 2 starts from it), plus `name` itself.
  // On failure nothing committed before is touched.
  Status Commit(const std::string& name, proto::CheckpointMeta meta, const CheckpointFiles& files,
                int keep_last_n, bool keep_best);
  // The newest checkpoint by position that verifies, skipping (with a warning naming the file)
  // damaged ones and folders that are not checkpoints of this directory. NotFound when there is
  // none; InvalidArgument when the newest is of format version 1 (see kCheckpointFormatVersion).
  StatusOr<std::string> FindLatestValid() const;
  // Cleans up after a run killed while writing a checkpoint: removes .tmp-NAME folders (an
  // unfinished write) and index.txtpb.tmp; a .old-NAME folder (the committed checkpoint NAME,
  // moved aside while a new one of that name was renamed in) is moved back when NAME is missing,
  // else removed. Returns one line per action, for the log. Call only while holding the output
  // directory's lock (OutputDirLock), before any rank reads the checkpoints.
  std::vector<std::string> RemoveLeftovers() const;

 private:
  struct Listed {
    std::string name;
    proto::CheckpointMeta meta;
  };
  // The checkpoints of this directory, oldest first by the position their meta.pb records
  // (stage, sampler epoch, sampler step, creation time); any format version. A folder counts
  // only when its meta.pb reads and its name is CheckpointName(position); a folder named like a
  // checkpoint that is not one adds a line to *problems (when given); other folders are ignored.
  std::vector<Listed> List(std::vector<std::string>* problems) const;
  Status WriteIndex(const proto::CheckpointIndex& index) const;
  // Removes checkpoints of this format beyond the ones kept (see Commit; `committed` is always
  // kept) and lists the kept ones in `index`. Folders that are not ours are never touched.
  void Prune(int keep_last_n, bool keep_best, const std::string& committed,
             proto::CheckpointIndex* index) const;
  std::string dir_;
  int commits_ = 0;
};

// Reads and checks `path`/meta.pb alone: NotFound when `path` is not a checkpoint directory;
// DataLoss naming meta.pb when it cannot be parsed, lists more than kMaxCheckpointFiles files, a
// file twice, a name that is not plain, or no model.pt; InvalidArgument for a format version
// other than kCheckpointFormatVersion (saying why).
Status ReadCheckpointMeta(const std::string& path, proto::CheckpointMeta* meta);
// ReadCheckpointMeta, then every listed file: a regular file (a FIFO or a link to a device is
// damage, never opened for reading), within CheckpointFileLimit, of the listed size and CRC-32,
// read in 4 MiB pieces (memory stays bounded whatever the sizes). DataLoss naming the first
// damaged file.
Status VerifyCheckpoint(const std::string& path, proto::CheckpointMeta* meta);
// The most bytes file `name` of a checkpoint may hold: model.pt kMaxModelFileBytes; the others
// derived from meta.pb: optimizer.pt 3 x model.pt's listed size + 16 MiB (Adam's two or three
// moments of at most every parameter), class_centers.pt model.pt's + 1 MiB, rng.pt 64 KiB per
// rank + 1 MiB, scaler.pt 1 MiB; any other name kMaxModelFileBytes.
uint64_t CheckpointFileLimit(const proto::CheckpointMeta& meta, const std::string& name);
// The verified content of one file of a checkpoint: a regular file of at most `max_bytes`
// (0: CheckpointFileLimit; `limit_what` says where a caller's limit comes from, for the
// message), the listed size and CRC-32. DataLoss naming the file (and both sizes when it is too
// large); NotFound when meta.pb does not list it.
StatusOr<std::string> ReadCheckpointFile(const std::string& path, const proto::CheckpointMeta& meta,
                                         const std::string& name, uint64_t max_bytes = 0,
                                         const std::string& limit_what = "");
// Resolves what --resume names: a checkpoint directory, or a run directory / its checkpoints
// folder (then its newest valid checkpoint).
StatusOr<std::string> ResolveCheckpoint(const std::string& path);

}  // namespace reid::trainer
