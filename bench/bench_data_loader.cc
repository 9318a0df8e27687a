// bench_data_loader: images/s of the stage-2 train pipeline (decode + resize + flip/pad/crop +
// normalise + random erasing + batch, 256x128) of data/loader.h against bench/ref_data_loader.py
// (PIL + torchvision + torch DataLoader with the same number of workers), on the same JPEGs.
// Usage (from the project root): bench_data_loader [--json] [--images=N] [--threads=1,2]
//   [--batch=64] [--dir=FOLDER_OF_JPEGS] [--python=/usr/bin/python3]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_flags.h"
#include "data/loader.h"
#include "data/options.h"
#include "data/rng.h"
#include "data/synth.h"

namespace fs = std::filesystem;
using reid::data::BatchPlan;

DEFINE_bool(json, false, "print one JSON object (with a `ratio` field)");
DEFINE_int32(images, 2048, "images per run");
DEFINE_string(threads, "1,2", "comma-separated decode thread counts (DataLoader workers), each run");
DEFINE_int32(batch, 64, "images per batch");
DEFINE_string(dir, "", "folder of JPEGs (default: synthetic ones in a temporary folder)");
DEFINE_string(python, "/usr/bin/python3", "the Python that runs bench/ref_data_loader.py");

namespace {

struct Args {
  bool json = false;
  int images = 2048, batch = 64;
  std::vector<int> threads = {1, 2};
  std::string dir, python = "/usr/bin/python3";
};

bool ParseArgs(int argc, char** argv, Args* a) {
  reid::bench::ParseBenchFlags(
      "usage: bench_data_loader [--json] [--images=N] [--threads=1,2] [--batch=64] "
      "[--dir=FOLDER_OF_JPEGS] [--python=/usr/bin/python3]",
      &argc, &argv);
  a->json = FLAGS_json;
  a->images = FLAGS_images;
  a->batch = FLAGS_batch;
  a->dir = FLAGS_dir;
  a->python = FLAGS_python;
  a->threads.clear();
  std::stringstream ss(FLAGS_threads);
  for (std::string t; std::getline(ss, t, ',');) {
    const int n = std::atoi(t.c_str());
    if (n <= 0 || std::to_string(n) != t) {
      std::cerr << "error: --threads=" << FLAGS_threads << ": want positive integers, e.g. 1,2\n";
      return false;
    }
    a->threads.push_back(n);
  }
  if (a->threads.empty() || a->images <= 0 || a->batch <= 0) {
    std::cerr << "error: --images and --batch must be > 0, --threads not empty\n";
    return false;
  }
  return true;
}

// Images/s of our loader with `threads` decode threads; the first batch (start-up) is not timed.
double RunOurs(const std::vector<reid::data::Sample>& samples, int threads, const Args& args) {
  reid::data::TransformOptions t =
      reid::data::TransformOptionsFromConfig(reid::proto::InputConfig(), false);
  t.train = true;  // 256x128, bicubic, flip 0.5, pad 10, crop, normalise, erasing 0.5
  reid::data::LoaderOptions lo;
  lo.num_workers = threads;
  lo.prefetch_batches = 4;
  const int batches = 1 + (args.images + args.batch - 1) / args.batch;
  reid::data::Rng rng(1, 0, 0, reid::data::RngStream::kStage1);
  std::vector<BatchPlan> plans(batches);
  for (int b = 0; b < batches; ++b) {
    plans[b].step = b;
    for (int j = 0; j < args.batch; ++j) {
      plans[b].indices.push_back(rng.UniformInt(0, samples.size() - 1));
      plans[b].keys.push_back(static_cast<int64_t>(b) * args.batch + j);
    }
  }
  reid::data::Loader loader(&samples, t, lo);
  loader.StartEpoch(0, plans);
  reid::data::Batch batch;
  loader.Next(&batch);
  const auto start = std::chrono::steady_clock::now();
  int64_t n = 0;
  while (loader.Next(&batch)) n += batch.indices.size();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return n / secs;
}

// Images/s of the Python reference, or a negative value when it cannot run.
double RunReference(const std::string& dir, int threads, const Args& args) {
  const std::string cmd = args.python + " bench/ref_data_loader.py --dir='" + dir +
                          "' --workers=" + std::to_string(threads) +
                          " --batch=" + std::to_string(args.batch) +
                          " --images=" + std::to_string(args.images);
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof(buf), p)) out += buf;
  if (pclose(p) != 0) return -1;
  const size_t at = out.find("\"images_per_s\": ");
  return at == std::string::npos ? -1 : std::atof(out.c_str() + at + 16);
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (!ParseArgs(argc, argv, &args)) return 2;
  if (!fs::exists("bench/ref_data_loader.py")) {
    std::cerr << "error: run from the project root (bench/ref_data_loader.py not found)\n";
    return 2;
  }
  std::string tmp;
  if (args.dir.empty()) {  // our own synthetic JPEGs: 512 images of 128x64 (Market-1501's size)
    char tmpl[] = "/tmp/bench_data_loader_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return 1;
    tmp = tmpl;
    reid::data::SynthOptions so =
        reid::data::SynthOptionsFromConfig(reid::proto::DataConfig());  // schema defaults
    so.ids = 64;
    so.images_per_id = 8;
    const reid::StatusOr<reid::data::SynthSummary> sum = reid::data::GenerateSynthetic(so, tmp);
    if (!sum.ok()) {
      std::cerr << "error: " << sum.status().message() << "\n";
      return 1;
    }
    args.dir = tmp + "/bounding_box_train";
  }
  std::vector<reid::data::Sample> samples;
  for (const auto& e : fs::directory_iterator(args.dir)) {
    if (e.path().extension() == ".jpg") samples.push_back({e.path().string(), 0, 0});
  }
  std::sort(samples.begin(), samples.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  if (samples.empty()) {
    std::cerr << "error: no .jpg files in " << args.dir << "\n";
    return 2;
  }
  std::ostringstream rows;
  double min_ratio = 1e30;
  bool ok = true;
  for (int t : args.threads) {
    const double ours = RunOurs(samples, t, args);
    const double ref = RunReference(args.dir, t, args);
    ok &= ref > 0;
    const double ratio = ref > 0 ? ours / ref : 0;
    min_ratio = std::min(min_ratio, ratio);
    if (args.json) {
      rows << (rows.tellp() > 0 ? "," : "") << "{\"threads\":" << t
           << ",\"ours_images_per_s\":" << ours << ",\"reference_images_per_s\":" << ref
           << ",\"ratio\":" << ratio << "}";
    } else {
      std::printf("threads %d: ours %8.1f images/s, reference %8.1f images/s, ratio %.2f\n", t,
                  ours, ref, ratio);
    }
  }
  if (!tmp.empty()) fs::remove_all(tmp);
  if (args.json) {
    std::cout << "{\"benchmark\":\"data_loader\",\"pipeline\":\"stage-2 train 256x128\","
              << "\"reference\":\"bench/ref_data_loader.py (PIL + torchvision + DataLoader)\","
              << "\"images\":" << args.images << ",\"files\":" << samples.size() << ",\"results\":["
              << rows.str() << "],\"ratio\":" << min_ratio << "}\n";
  } else {
    std::printf("ratio (lowest over thread counts): %.2f\n", min_ratio);
  }
  if (!ok) std::cerr << "error: the Python reference failed (" << args.python << ")\n";
  return ok ? 0 : 1;
}
