// Person re-id datasets (Market-1501, DukeMTMC-reID, MSMT17 V1/V2, generic CSV) parsed with the
// reference code's rules: junk pid -1 dropped, distractors (pid 0) kept, 0-based cameras, train
// ids relabelled 0..N-1 in ascending pid order, MSMT17 train + val merged.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace reid::data {

struct Sample {
  std::string path;  // absolute or relative to the working directory
  int pid = 0;       // train: relabelled 0..N-1; query/gallery: the dataset's pid (0 = distractor)
  int camid = 0;     // 0-based camera
};

struct Dataset {
  std::string root;  // the dataset folder actually used
  std::vector<Sample> train, query, gallery;
  int num_train_pids = 0;  // classes
  int num_cameras = 0;     // max camid + 1 over all splits: rows of the SIE embedding
};

enum class DatasetKind { kMarket1501, kDukeMtmc, kMsmt17, kCsv };

// Accepts market1501, dukemtmcreid (or dukemtmc), msmt17, csv and synthetic (= market1501 layout).
bool ParseDatasetKind(const std::string& name, DatasetKind* kind);

// Loads a dataset. `root` may be the dataset folder itself or its parent holding the standard
// folder name. NotFound when a folder or list is missing, InvalidArgument when a list or file
// name is malformed or a split is empty; the message names the path (and line) at fault.
StatusOr<Dataset> LoadDataset(DatasetKind kind, const std::string& root);

struct SplitStats {
  int ids = 0;
  int images = 0;
  int cameras = 0;  // distinct camera ids in the split (Dataset::num_cameras sizes SIE instead)
};
SplitStats ComputeStats(const std::vector<Sample>& split);

// The reference's table (subset | # ids | # images | # cameras) and the one-object JSON form.
std::string StatsTable(const Dataset& d);
std::string StatsJson(const Dataset& d);

}  // namespace reid::data
