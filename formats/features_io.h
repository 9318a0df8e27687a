// Features given as files: read by `reid eval`, written by `reid extract` and `reid embed`: float32 (N, D) .npy
// matrices and meta CSV files (header `path,pid,camid`, one row per feature row). Both are
// untrusted: every problem is a Status naming the file (and the line).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/torch_glog.h"

namespace reid::formats {

struct MetaRow {
  std::string path;
  int64_t pid = 0;
  int64_t camid = 0;
};

// Parses a meta CSV: the header `path,pid,camid`, then `path,pid,camid` rows (the path may
// contain commas; pid and camid are integers). Blank trailing lines are allowed.
StatusOr<std::vector<MetaRow>> ReadMetaCsv(const std::string& path);
// The same from text (`name` is used in messages); for tests and fuzzing.
StatusOr<std::vector<MetaRow>> ParseMetaCsv(const std::string& text, const std::string& name);
Status WriteMetaCsv(const std::string& path, const std::vector<MetaRow>& rows);

// Reads a features .npy: a 2-D floating array with at least one column and finite values
// (float64 becomes float32). `rows` >= 0 requires that many rows (those of the meta file
// `meta_name`).
StatusOr<torch::Tensor> ReadFeatures(const std::string& path, int64_t rows,
                                     const std::string& meta_name);
// Writes (N, D) float32 features atomically enough for a tool's output (temporary + rename).
Status WriteFeatures(const std::string& path, const torch::Tensor& features);

}  // namespace reid::formats
