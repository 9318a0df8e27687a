// The loader: plan order, results independent of thread count and cache, replacement of corrupt
// files (and the >1% stop rule), restart and shutdown mid-epoch, torch batch assembly.
#include "data/loader.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <fstream>

#include "base/status_test_util.h"
#include "data/batch_tensor.h"
#include "data/dataset.h"
#include "data/jpeg.h"
#include "data/options.h"
#include "data/png.h"
#include "data/synth.h"

namespace fs = std::filesystem;

namespace reid::data {
namespace {

// The schema's loader settings (data/options.h builds them from the config), with the two decode
// threads these tests run on.
LoaderOptions SchemaLoaderOptions() {
  LoaderOptions o = LoaderOptionsFromConfig(proto::ReidConfig());
  o.num_workers = 2;
  return o;
}

class LoaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(
        (fs::temp_directory_path() / ("reid_loader_test_" + std::to_string(::getpid()))).string());
    SynthOptions opt = SynthOptionsFromConfig(reid::proto::DataConfig());  // schema defaults
    opt.ids = 8;
    opt.cameras = 3;
    opt.images_per_id = 6;
    ASSERT_OK(GenerateSynthetic(opt, *dir_));
    StatusOr<Dataset> loaded = LoadDataset(DatasetKind::kMarket1501, *dir_);
    ASSERT_OK(loaded);
    dataset_ = new Dataset(*std::move(loaded));
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    delete dataset_;
  }
  static TransformOptions Train() {
    TransformOptions t = TransformOptionsFromConfig(proto::InputConfig(), false);
    t.train = true;
    t.height = 64;
    t.width = 32;
    t.padding = 4;
    return t;
  }
  // All batches of one epoch, as floats.
  static std::vector<Batch> RunEpoch(Loader* loader, const std::vector<BatchPlan>& plans,
                                     int64_t epoch) {
    loader->StartEpoch(epoch, plans);
    std::vector<Batch> out;
    Batch b;
    while (loader->Next(&b)) out.push_back(std::move(b));
    return out;
  }
  static std::vector<float> Floats(const Batch& b) {
    return std::vector<float>(b.images.data, b.images.data + b.images.size);
  }
  static std::string* dir_;
  static Dataset* dataset_;
};
std::string* LoaderTest::dir_ = nullptr;
Dataset* LoaderTest::dataset_ = nullptr;

TEST_F(LoaderTest, BatchesInPlanOrderMatchTheTransform) {
  std::vector<int> labels;
  for (const Sample& s : dataset_->train) labels.push_back(s.pid);
  PkSampler sampler(labels, 2, 4, 1);
  const auto plans = sampler.RankBatches(0, 0, 1);
  ASSERT_GE(plans.size(), 3u);
  LoaderOptions lo = SchemaLoaderOptions();
  lo.num_workers = 3;
  lo.prefetch_batches = 2;
  Loader loader(&dataset_->train, Train(), lo);
  const auto batches = RunEpoch(&loader, plans, 0);
  ASSERT_EQ(batches.size(), plans.size());
  JpegDecoder decoder;
  const size_t per = 3 * 64 * 32;
  for (size_t i = 0; i < plans.size(); ++i) {
    EXPECT_EQ(batches[i].indices, plans[i].indices);
    for (size_t j = 0; j < plans[i].indices.size(); ++j) {
      const Sample& s = dataset_->train[plans[i].indices[j]];
      EXPECT_EQ(batches[i].pids[j], s.pid);
      EXPECT_EQ(batches[i].camids[j], s.camid);
    }
    // Check one sample per batch against the pipeline run by hand.
    const Sample& s = dataset_->train[plans[i].indices[1]];
    StatusOr<std::vector<uint8_t>> bytes = ReadFileBytes(s.path);
    ASSERT_OK(bytes);
    StatusOr<Image> img = decoder.Decode(bytes->data(), bytes->size(), 64, 32);
    ASSERT_OK(img);
    Image resized;
    ResizeForPipeline(*img, Train(), &resized);
    std::vector<float> want(per);
    TransformToTensor(resized, Train(), lo.seed, 0, plans[i].keys[1], want.data());
    EXPECT_EQ(std::vector<float>(batches[i].images.data + per, batches[i].images.data + 2 * per),
              want);
  }
  EXPECT_EQ(loader.replaced_count(), 0);
}

TEST_F(LoaderTest, IndependentOfThreadsAndCache) {
  std::vector<int> labels;
  for (const Sample& s : dataset_->train) labels.push_back(s.pid);
  PkSampler sampler(labels, 4, 4, 2);
  const auto plans = sampler.RankBatches(1, 0, 1);
  LoaderOptions one = SchemaLoaderOptions();
  one.num_workers = 1;
  one.prefetch_batches = 1;
  LoaderOptions many = SchemaLoaderOptions();
  many.num_workers = 4;
  many.prefetch_batches = 3;
  many.cache_budget_bytes = 20 * 64 * 32 * 3;  // room for 20 of the 48 images
  Loader a(&dataset_->train, Train(), one), b(&dataset_->train, Train(), many);
  const auto ea = RunEpoch(&a, plans, 1);
  for (int pass = 0; pass < 2; ++pass) {  // the second pass reads from the cache
    const auto eb = RunEpoch(&b, plans, 1);
    ASSERT_EQ(ea.size(), eb.size());
    for (size_t i = 0; i < ea.size(); ++i) EXPECT_EQ(Floats(ea[i]), Floats(eb[i])) << i;
  }
  EXPECT_GT(b.cache_bytes(), 0);
  EXPECT_LE(b.cache_bytes(), many.cache_budget_bytes);
}

TEST_F(LoaderTest, CorruptFilesAreReplacedBySameIdentityAndCounted) {
  // A copy of the train split with three bad files: empty, truncated, not an image.
  const fs::path bad_dir = fs::path(*dir_) / "bad";
  fs::create_directories(bad_dir);
  std::vector<Sample> split = dataset_->train;
  const std::string empty = (bad_dir / "empty.jpg").string();
  const std::string truncated = (bad_dir / "truncated.jpg").string();
  const std::string text = (bad_dir / "text.jpg").string();
  std::ofstream(empty).close();
  {
    StatusOr<std::vector<uint8_t>> bytes = ReadFileBytes(split[0].path);
    ASSERT_OK(bytes);
    std::ofstream(truncated, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes->data()), bytes->size() / 2);
  }
  std::ofstream(text) << "not a jpeg";
  split[0].path = empty;
  split[7].path = truncated;
  split[13].path = text;
  std::vector<std::string> bad;
  const Status unreadable = CheckReadable("train", split, 0.01, 2, &bad);
  EXPECT_EQ(bad.size(), 3u);
  EXPECT_EQ(unreadable.exit_code(), 2);
  const std::string& err = unreadable.message();
  EXPECT_NE(err.find("train: 3 of 48 images cannot be decoded"), std::string::npos) << err;
  EXPECT_NE(err.find(empty), std::string::npos);
  EXPECT_OK(CheckReadable("train", split, 0.1, 2, &bad));
  EXPECT_OK(CheckReadable("train", dataset_->train, 0.0, 2, &bad));

  std::vector<BatchPlan> plans(1);
  for (int64_t i : {0, 7, 13, 1}) {
    plans[0].indices.push_back(i);
    plans[0].keys.push_back(i);
  }
  TransformOptions test = TransformOptionsFromConfig(proto::InputConfig(), false);
  test.height = 64;
  test.width = 32;
  Loader loader(&split, test, SchemaLoaderOptions());
  const auto batches = RunEpoch(&loader, plans, 0);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(loader.unreadable_count(), 3);
  EXPECT_EQ(loader.replaced_count(), 3);
  // Each replacement is one of the identity's other (readable) images.
  const size_t per = 3 * 64 * 32;
  for (int j = 0; j < 3; ++j) {
    const int64_t index = plans[0].indices[j];
    bool found = false;
    for (size_t k = 0; k < split.size() && !found; ++k) {
      if (split[k].pid != split[index].pid || k == static_cast<size_t>(index)) continue;
      std::vector<BatchPlan> one(1);
      one[0].indices = {static_cast<int64_t>(k)};
      Loader single(&split, test, SchemaLoaderOptions());
      const auto b = RunEpoch(&single, one, 0);
      found =
          std::equal(b[0].images.data, b[0].images.data + per, batches[0].images.data + j * per);
    }
    EXPECT_TRUE(found) << "sample " << index;
  }
}

TEST_F(LoaderTest, FifosAndDeviceLinksNamedLikeImagesAreUnreadableAtOnce) {
  // A FIFO that nobody writes would block a reader forever; a link to /dev/zero would read
  // until memory runs out. Both must be counted as unreadable images, quickly.
  const fs::path bad_dir = fs::path(*dir_) / "special";
  fs::create_directories(bad_dir);
  const std::string fifo = (bad_dir / "0001_c1s1_000001_00.jpg").string();
  const std::string zero = (bad_dir / "0001_c1s1_000002_00.jpg").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  fs::create_symlink("/dev/zero", zero);
  std::vector<Sample> split = dataset_->train;
  split[0].path = fifo;
  split[1].path = zero;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::string> bad;
  EXPECT_FALSE(CheckReadable("train", split, 0.01, 2, &bad).ok());
  EXPECT_EQ(bad, (std::vector<std::string>{fifo, zero}));
  std::vector<BatchPlan> plans(1);
  plans[0].indices = {0, 1, 2};
  TransformOptions test = TransformOptionsFromConfig(proto::InputConfig(), false);
  test.height = 64;
  test.width = 32;
  Loader loader(&split, test, SchemaLoaderOptions());
  ASSERT_EQ(RunEpoch(&loader, plans, 0).size(), 1u);
  EXPECT_EQ(loader.unreadable_count(), 2);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST_F(LoaderTest, PngImagesLoadLikeTheirJpegs) {
  // A PNG of a decoded training JPEG gives the JPEG's exact pixels through the loader.
  std::vector<Sample> split = dataset_->train;
  StatusOr<std::vector<uint8_t>> jpeg = ReadFileBytes(split[3].path);
  ASSERT_OK(jpeg);
  JpegDecoder decoder;
  StatusOr<Image> pixels = decoder.Decode(jpeg->data(), jpeg->size(), 0, 0);
  ASSERT_OK(pixels);
  const std::string png = *dir_ + "/as_png.png";
  StatusOr<std::vector<uint8_t>> png_bytes = EncodePng(*pixels);
  ASSERT_OK(png_bytes);
  std::ofstream(png, std::ios::binary)
      .write(reinterpret_cast<const char*>(png_bytes->data()), png_bytes->size());
  split[4].path = png;
  std::vector<BatchPlan> plans(1);
  plans[0].indices = {3, 4};
  TransformOptions test = TransformOptionsFromConfig(proto::InputConfig(), false);
  test.height = 64;
  test.width = 32;
  test.dct_scaling = false;  // PNG has no scaled decoding: both at full size
  Loader loader(&split, test, SchemaLoaderOptions());
  const auto batches = RunEpoch(&loader, plans, 0);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(loader.unreadable_count(), 0);
  const size_t per = 3 * 64 * 32;
  EXPECT_TRUE(std::equal(batches[0].images.data, batches[0].images.data + per,
                         batches[0].images.data + per))
      << "the PNG's sample differs from its JPEG's";
}

TEST_F(LoaderTest, ShutdownAndRestartMidEpoch) {
  std::vector<BatchPlan> plans;
  for (int b = 0; b < 200; ++b) {
    BatchPlan p;
    p.step = b;
    for (int j = 0; j < 8; ++j) p.indices.push_back((b * 8 + j) % dataset_->train.size());
    plans.push_back(p);
  }
  for (int workers : {1, 3}) {
    LoaderOptions lo = SchemaLoaderOptions();
    lo.num_workers = workers;
    {
      Loader loader(&dataset_->train, Train(), lo);
      loader.StartEpoch(0, plans);
      Batch b;
      ASSERT_TRUE(loader.Next(&b));
      EXPECT_EQ(b.step, 0);
    }  // destroyed with ~199 batches left: must return
    {
      Loader loader(&dataset_->train, Train(), lo);
      loader.StartEpoch(0, plans);
    }  // destroyed before anything was consumed
    Loader loader(&dataset_->train, Train(), lo);
    loader.StartEpoch(0, plans);
    Batch b;
    ASSERT_TRUE(loader.Next(&b));
    loader.StartEpoch(1, std::vector<BatchPlan>(plans.begin() + 5, plans.begin() + 7));
    ASSERT_TRUE(loader.Next(&b));
    EXPECT_EQ(b.step, 5);
    ASSERT_TRUE(loader.Next(&b));
    EXPECT_EQ(b.step, 6);
    EXPECT_FALSE(loader.Next(&b));
    // An empty batch (a rank's share of a tiny last batch) comes through as an empty batch.
    std::vector<BatchPlan> with_empty(3);
    for (int i = 0; i < 3; ++i) with_empty[i].step = i;
    with_empty[0].indices = {0};
    with_empty[2].indices = {1, 2};
    loader.StartEpoch(2, with_empty);
    for (size_t want : {1u, 0u, 2u}) {
      ASSERT_TRUE(loader.Next(&b));
      EXPECT_EQ(b.indices.size(), want);
    }
    EXPECT_FALSE(loader.Next(&b));
  }
}

// An exception in a decode thread (here the batch allocation, as a pinned tensor too large for
// memory throws) reaches the consumer's thread from Next, and StartEpoch after it: before, it
// escaped the std::thread and aborted the process (SIGABRT).
TEST_F(LoaderTest, WorkerExceptionsReachTheConsumer) {
  std::vector<BatchPlan> plans(4);
  for (int b = 0; b < 4; ++b) {
    plans[b].step = b;
    plans[b].indices = {b, b + 1};
  }
  int calls = 0;
  BufferAllocator failing = [&calls](size_t n) {
    if (++calls >= 2) throw std::runtime_error("cannot allocate " + std::to_string(n) + " floats");
    return HeapBuffer(n);
  };
  for (int workers : {1, 3}) {
    calls = 0;
    LoaderOptions lo = SchemaLoaderOptions();
    lo.num_workers = workers;
    lo.prefetch_batches = 1;
    Loader loader(&dataset_->train, Train(), lo, failing);
    loader.StartEpoch(0, plans);
    Batch b;
    bool threw = false;
    try {
      while (loader.Next(&b)) {
      }
    } catch (const std::runtime_error& e) {
      threw = true;
      EXPECT_EQ(std::string(e.what()), "cannot allocate 12288 floats");
    }
    EXPECT_TRUE(threw) << workers << " worker(s)";
    EXPECT_THROW(loader.StartEpoch(1, plans), std::runtime_error);
  }  // the destructor still joins every thread
}

TEST_F(LoaderTest, TorchBatchesWrapTheLoaderBuffers) {
  std::vector<BatchPlan> plans(1);
  plans[0].indices = {0, 1, 2};
  Loader loader(&dataset_->train, Train(), SchemaLoaderOptions(), TorchBufferAllocator());
  const auto batches = RunEpoch(&loader, plans, 0);
  ASSERT_EQ(batches.size(), 1u);
  const TensorBatch t = ToTensors(batches[0], 64, 32);
  EXPECT_EQ(t.images.sizes(), (std::vector<int64_t>{3, 3, 64, 32}));
  EXPECT_EQ(t.images.data_ptr<float>(), batches[0].images.data);  // no copy
  EXPECT_EQ(t.pids[2].item<int64_t>(), batches[0].pids[2]);
  EXPECT_GE(t.images.min().item<float>(), -5.0f);
  Loader heap(&dataset_->train, Train(), SchemaLoaderOptions());
  const auto hb = RunEpoch(&heap, plans, 0);
  EXPECT_TRUE(torch::equal(ToTensors(hb[0], 64, 32).images, t.images));
}

}  // namespace
}  // namespace reid::data
