// The loader under AddressSanitizer + LeakSanitizer + UBSan (built with its own instrumented copy
// of the data sources): shutdown and restart mid-epoch, corrupt files, cache, many threads.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/status_test_util.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/options.h"
#include "data/synth.h"

namespace fs = std::filesystem;

namespace reid::data {
namespace {

TEST(LoaderAsan, ShutdownRestartAndCorruptFilesAreClean) {
  const std::string dir =
      (fs::temp_directory_path() / ("reid_loader_asan_" + std::to_string(::getpid()))).string();
  SynthOptions so = SynthOptionsFromConfig(reid::proto::DataConfig());  // schema defaults
  so.ids = 8;
  so.cameras = 3;
  so.images_per_id = 6;
  ASSERT_OK(GenerateSynthetic(so, dir));
  StatusOr<Dataset> loaded = LoadDataset(DatasetKind::kMarket1501, dir);
  ASSERT_OK(loaded);
  const Dataset& d = *loaded;
  std::ofstream(d.train[3].path).close();  // one empty file
  std::vector<int> labels;
  for (const Sample& s : d.train) labels.push_back(s.pid);
  PkSampler pk(labels, 2, 4, 1);
  TransformOptions t = TransformOptionsFromConfig(proto::InputConfig(), false);
  t.train = true;
  t.height = 64;
  t.width = 32;
  t.padding = 4;
  int64_t batches = 0;
  for (int workers : {1, 2, 4}) {
    LoaderOptions lo = LoaderOptionsFromConfig(proto::ReidConfig());
    lo.num_workers = workers;
    lo.prefetch_batches = 2;
    lo.cache_budget_bytes = 1 << 16;
    Batch b;
    {
      Loader l(&d.train, t, lo);
      l.StartEpoch(0, pk.RankBatches(0, 0, 1));
      ASSERT_TRUE(l.Next(&b));
    }
    {
      Loader l(&d.train, t, lo);
      l.StartEpoch(0, pk.RankBatches(0, 0, 1));
    }
    Loader l(&d.train, t, lo);
    for (int e = 0; e < 3; ++e) {
      l.StartEpoch(e, pk.RankBatches(e, 0, 1));
      while (l.Next(&b)) ++batches;
    }
    l.StartEpoch(5, pk.RankBatches(5, 0, 1));
    ASSERT_TRUE(l.Next(&b));
    l.StartEpoch(6, pk.RankBatches(6, 0, 1));
    ASSERT_TRUE(l.Next(&b));
    EXPECT_GE(l.unreadable_count(), 0);
  }
  EXPECT_GT(batches, 0);
  std::vector<std::string> bad;
  EXPECT_FALSE(CheckReadable("train", d.train, 0.01, 2, &bad).ok());
  EXPECT_EQ(bad.size(), 1u);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace reid::data
