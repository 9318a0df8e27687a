// `reid ckpt show|verify|diff`: a checkpoint's metadata, its integrity, and per-tensor differences
// between two checkpoints' models.
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>

#include "trainer/checkpoint.h"
#include "cli/commands.h"

namespace reid::trainer {
namespace {

constexpr const char* kUsage =
    "usage: reid ckpt show DIR | verify DIR | diff A B   (DIR: a checkpoint, or a run directory "
    "for its newest valid checkpoint)";

int Show(const std::string& arg) {
  StatusOr<std::string> path = ResolveCheckpoint(arg);
  if (!path.ok()) return Fail("ckpt", path.status());
  proto::CheckpointMeta meta;
  Status s = ReadCheckpointMeta(*path, &meta);  // an unusable meta.pb is not shown
  if (!s.ok()) return Fail("ckpt", s);
  s = VerifyCheckpoint(*path, &meta);
  meta.clear_config();  // the config is long; it is in meta.txtpb and in the run directory
  std::string text;
  google::protobuf::TextFormat::PrintToString(meta, &text);
  std::cout << "checkpoint " << *path << "\n" << text;
  if (!s.ok()) std::cout << "# not valid: " << s.message() << "\n";
  return kExitOk;
}

// Exit 1 with "FAILED" for a damaged checkpoint (DataLoss: a file missing, of another size or
// CRC, not a regular file, over its limit, or a broken meta.pb); 2 for what is not a checkpoint of
// this build (no meta.pb, another format version).
int Verify(const std::string& path) {
  proto::CheckpointMeta meta;
  Status s = VerifyCheckpoint(path, &meta);
  if (!s.ok() && s.code() != Status::Code::kDataLoss) return Fail("ckpt", s);
  if (!s.ok()) {
    std::cout << "FAILED " << s.message() << "\n";
    return kExitFailure;
  }
  std::cout << "OK " << path << ": " << meta.files_size() << " files, sizes and CRC-32 match\n";
  return kExitOk;
}

StatusOr<NamedTensors> LoadModel(const std::string& arg) {
  StatusOr<std::string> path = ResolveCheckpoint(arg);
  if (!path.ok()) return path.status();
  proto::CheckpointMeta meta;
  REID_RETURN_IF_ERROR(VerifyCheckpoint(*path, &meta));
  StatusOr<std::string> bytes = ReadCheckpointFile(*path, meta, "model.pt");
  if (!bytes.ok()) return bytes.status();
  return DeserializeTensors(*bytes, *path + "/model.pt");
}

int Diff(const std::string& a_path, const std::string& b_path) {
  StatusOr<NamedTensors> a = LoadModel(a_path), b = LoadModel(b_path);
  for (const auto* r : {&a, &b}) {
    if (!r->ok()) return Fail("ckpt", r->status());
  }
  std::map<std::string, torch::Tensor> bm(b->begin(), b->end());
  double max_abs = 0, max_rel = 0;
  int missing = 0;
  for (const auto& [name, ta] : *a) {
    auto it = bm.find(name);
    if (it == bm.end() || it->second.sizes() != ta.sizes()) {
      std::cout << name << ": only in A or shapes differ\n";
      ++missing;
      continue;
    }
    const torch::Tensor x = ta.to(torch::kFloat64), y = it->second.to(torch::kFloat64);
    const double abs = x.numel() ? (x - y).abs().max().item<double>() : 0.0;
    const double scale = y.numel() ? y.abs().max().item<double>() : 0.0;
    const double rel = abs == 0 ? 0.0 : (scale > 0 ? abs / scale : INFINITY);
    char line[256];
    std::snprintf(line, sizeof(line), "%s: max_abs_diff=%.3e max_rel_diff=%.3e", name.c_str(), abs,
                  rel);
    std::cout << line << "\n";
    max_abs = std::max(max_abs, abs);
    max_rel = std::max(max_rel, rel);
  }
  if (a->size() != b->size() || missing) {
    std::cout << "tensors differ in names or shapes (A " << a->size() << ", B " << b->size()
              << ")\n";
  }
  char last[128];
  std::snprintf(last, sizeof(last), "max_abs_diff=%.6e max_rel_diff=%.6e", max_abs, max_rel);
  std::cout << last << "\n";
  return (a->size() != b->size() || missing) ? kExitFailure : kExitOk;
}

}  // namespace

int RunCkpt(int argc, char** argv, const std::vector<std::string>& /*set_overrides*/) {
  const std::string verb = argc > 1 ? argv[1] : "";
  if (verb == "show" && argc == 3) return Show(argv[2]);
  if (verb == "verify" && argc == 3) return Verify(argv[2]);
  if (verb == "diff" && argc == 4) return Diff(argv[2], argv[3]);
  return Fail("ckpt", Status::InvalidArgument(kUsage));
}

}  // namespace reid::trainer
