// `reid dataset-stats`: parses a dataset with the reference rules and prints ids/images/cameras
// per split (the reference's table, or one JSON object with --json).
#include <gflags/gflags.h>

#include <iostream>

#include "data/dataset.h"
#include "cli/commands.h"

DEFINE_string(dataset, "market1501",
              "Dataset, the lowercase of the config's data.dataset: market1501, dukemtmcreid "
              "(alias dukemtmc), msmt17, csv or synthetic (= market1501 layout)");
DEFINE_string(data_root, "", "Dataset folder, or its parent holding the standard folder name");
DEFINE_bool(json, false, "Print one JSON object instead of a table");

namespace reid::trainer {

int RunDatasetStats(int /*argc*/, char** /*argv*/,
                    const std::vector<std::string>& /*set_overrides*/) {
  data::DatasetKind kind;
  if (!data::ParseDatasetKind(FLAGS_dataset, &kind)) {
    return Fail(
        "dataset-stats",
        Status::InvalidArgument(
            "--dataset = '" + FLAGS_dataset +
            "': expected market1501, dukemtmcreid (or dukemtmc), msmt17, csv or synthetic"));
  }
  if (FLAGS_data_root.empty()) {
    return Fail("dataset-stats", Status::InvalidArgument("--data_root is required"));
  }
  const StatusOr<data::Dataset> loaded = data::LoadDataset(kind, FLAGS_data_root);
  if (!loaded.ok()) return Fail("dataset-stats", loaded.status());
  const data::Dataset& d = *loaded;
  if (FLAGS_json) {
    std::cout << data::StatsJson(d) << "\n";
  } else {
    std::cout << "=> " << FLAGS_dataset << " loaded from " << d.root << "\n"
              << "Dataset statistics:\n"
              << data::StatsTable(d);
  }
  return kExitOk;
}

}  // namespace reid::trainer
