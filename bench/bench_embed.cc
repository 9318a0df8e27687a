// The embedding pipeline of `reid embed` (trainer::ExtractInferenceFeatures: JPEG decode, test
// transforms, batching, InferenceModel forward) against CLIP-ReID's own inference loop in Python
// (bench/ref_embed.py: PIL open, torchvision Resize + ToTensor + Normalize, a DataLoader with the
// same number of workers, the model of tests/clipreid_model.py in eval mode under no_grad), on
// the same JPEG crops with the same weights and thread count. Random weights: the C++ model
// writes its state dict (CLIP-ReID's key names) with formats::WriteTorchSaveFile and the reference
// loads it. Before timing, both sides' features of the same images are compared (max relative
// difference per row, printed; the run fails above 1e-3), so that the timing is of the same work.
// Usage (from the project root):
//   bench_embed [--json] [--model=tiny,vitb16] [--threads=N] [--workers=N] [--images=N]
//               [--source=HxW] [--passes=N] [--flip] [--device=cpu|cuda] [--keep=DIR]
// --images: crops per pass (default 512 for tiny, 64 for vitb16 on CPU, 512 on GPU); --source:
// the crops' size (default 128x64, Market-1501's; upscaled to 256x128 for vitb16, downscaled to
// 64x32 for tiny); --passes: timed passes over the crops after a warm-up pass (best of; default
// 2); --workers: decode threads / DataLoader workers (default = --threads). The reference runs
// with /usr/bin/python3, or $REID_PYTHON where set.
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_flags.h"
#include "data/dataset.h"
#include "data/jpeg.h"
#include "data/options.h"
#include "data/synth.h"
#include "proto/config.h"
#include "trainer/eval/inference_model.h"
#include "formats/npy.h"
#include "formats/torch_save_writer.h"

namespace fs = std::filesystem;

DEFINE_bool(json, false, "print one JSON object (with a `ratio` field)");
DEFINE_bool(flip, false, "also the horizontally flipped crops (as TEST.FLIP_FEATS)");
DEFINE_string(model, "tiny,vitb16", "comma-separated: tiny, vitb16");
DEFINE_string(device, "cpu", "cpu or cuda");
DEFINE_string(keep, "", "keep the crops, weights and features in this folder");
DEFINE_int32(threads, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())),
             "intra-op threads (default: the machine's cores)");
DEFINE_int32(workers, 0, "decode threads / DataLoader workers (0: = --threads)");
DEFINE_int32(images, 0, "crops per pass (0: 512 for tiny, 64 for vitb16 on CPU, 512 on GPU)");
DEFINE_int32(passes, 2, "timed passes over the crops after a warm-up pass (best of)");
DEFINE_string(source, "128x64", "the crops' size HxW");

namespace {

struct Args {
  bool json = false, flip = false;
  std::string models = "tiny,vitb16", device = "cpu", keep;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int workers = 0;  // 0: = threads
  int images = 0;   // 0: per model
  int passes = 2;
  int source_h = 128, source_w = 64;
};

bool ParseArgs(int argc, char** argv, Args* a) {
  reid::bench::ParseBenchFlags(
      "usage: bench_embed [--json] [--model=tiny,vitb16] [--threads=N] [--workers=N] "
      "[--images=N] [--source=HxW] [--passes=N] [--flip] [--device=cpu|cuda] [--keep=DIR]",
      &argc, &argv);
  a->json = FLAGS_json;
  a->flip = FLAGS_flip;
  a->models = FLAGS_model;
  a->device = FLAGS_device;
  a->keep = FLAGS_keep;
  a->threads = FLAGS_threads;
  a->workers = FLAGS_workers;
  a->images = FLAGS_images;
  a->passes = FLAGS_passes;
  char rest = 0;
  if (std::sscanf(FLAGS_source.c_str(), "%dx%d%c", &a->source_h, &a->source_w, &rest) != 2 ||
      a->source_h < 16 || a->source_w < 16 || a->source_h > 4096 || a->source_w > 4096) {
    std::cerr << "error: --source=" << FLAGS_source << ": want HxW, each in 16..4096\n";
    return false;
  }
  if (a->threads <= 0 || a->workers < 0 || a->images < 0 || a->passes <= 0) {
    std::cerr << "error: --threads and --passes must be > 0, --workers and --images >= 0\n";
    return false;
  }
  if (a->workers == 0) a->workers = a->threads;
  if (a->device != "cpu" && a->device != "cuda") {
    std::cerr << "error: --device=" << a->device << ": must be cpu or cuda\n";
    return false;
  }
  if (a->device == "cuda" && !torch::cuda::is_available()) {
    std::cerr << "error: --device=cuda: this LibTorch has no CUDA or no GPU is visible\n";
    return false;
  }
  return true;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// One benchmarked model shape.
struct Case {
  std::string name;
  reid::proto::ReidConfig cfg;
  int images = 0;
  double ours_s = 0, ref_s = 0;  // best seconds per pass, the same work (full-size decode)
  double ours_dct_s = 0;         // ours with libjpeg's DCT scaling (the default), when it applies
  double max_rel_diff = -1;      // features, ours vs reference, the same work
  double dct_rel_diff = -1;      // the same with DCT scaling (when it applies)
  bool dct_scaled = false;
};

bool MakeCase(const std::string& name, const Args& args, Case* c) {
  c->name = name;
  std::string file;
  std::vector<std::string> overrides;
  // Test-time batching and decode threads as the reference's val loader gets them.
  const std::string data =
      "data { num_workers: " + std::to_string(args.workers) + " test_batch_size: 64 }";
  if (name == "tiny") {
    file = "configs/synthetic_tiny.textproto";  // 64x32, width 128, 2 blocks
    overrides = {data};
    c->images = args.images > 0 ? args.images : 512;
  } else if (name == "vitb16") {
    // ViT-B/16 (the schema's default vision shape) at CLIP-ReID's Market-1501 size 256x128.
    file = "configs/market1501_improved.textproto";
    overrides = {data,
                 "input { size_train { height: 256 width: 128 } size_test { height: 256 "
                 "width: 128 } } model { vocab_size: 514 }"};
    c->images = args.images > 0 ? args.images : (args.device == "cuda" ? 512 : 64);
  } else {
    std::cerr << "error: --model=" << name << ": must be tiny or vitb16\n";
    return false;
  }
  const reid::config::Problems problems = reid::config::Load(file, overrides, &c->cfg);
  for (const std::string& p : problems) std::cerr << "error: " << file << ": " << p << "\n";
  return problems.empty();
}

// A random InferenceModel of the case's shape, no SIE (crops of unknown cameras); LayerNorm and
// BN parameters and BN statistics are perturbed so that no part of the forward is an identity.
reid::trainer::InferenceModel MakeModel(const Case& c) {
  const auto& m = c.cfg.model();
  reid::model::VisionShape v;
  v.width = m.vision_width();
  v.layers = m.vision_layers();
  v.heads = m.vision_heads() > 0 ? m.vision_heads() : std::max<int64_t>(1, v.width / 64);
  v.patch = m.vision_patch_size();
  v.stride = m.stride_size();
  v.output_dim = m.embed_dim();
  const auto& size = c.cfg.input().size_test();
  std::tie(v.grid_h, v.grid_w) =
      reid::model::PatchGrid(size.height(), size.width(), v.patch, v.stride);
  torch::manual_seed(11);
  reid::trainer::InferenceModel model(v, 0, m.sie_coe(),
                                      m.neck_feat() == reid::proto::ModelConfig::AFTER);
  torch::NoGradGuard no_grad;
  for (auto& p : model->named_parameters()) p.value().add_(0.02 * torch::randn_like(p.value()));
  for (auto& b : model->named_buffers()) {
    if (b.key().find("running_mean") != std::string::npos) b.value().normal_(0, 0.1);
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 1.5);
  }
  model->eval();
  return model;
}

// The model's parameters and buffers by name, for torch.save.
std::vector<std::pair<std::string, torch::Tensor>> StateDict(reid::trainer::InferenceModel& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : m->named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : m->named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

// The reference's JSON output: {"seconds": best s per pass, "images": N, ...}; 0 on failure.
double RunReference(const Case& c, const Args& args, int64_t heads, const std::string& weights,
                    const std::string& list, const std::string& features) {
  const auto& in = c.cfg.input();
  std::ostringstream cmd;
  const char* python = std::getenv("REID_PYTHON");
  cmd << (python ? python : "/usr/bin/python3") << " bench/ref_embed.py --weights=" << weights
      << " --images=" << list << " --out=" << features << " --height=" << in.size_test().height()
      << " --width=" << in.size_test().width() << " --stride=" << c.cfg.model().stride_size()
      << " --heads=" << heads << " --neck="
      << (c.cfg.model().neck_feat() == reid::proto::ModelConfig::AFTER ? "after" : "before")
      << " --mean " << in.pixel_mean(0) << " " << in.pixel_mean(1) << " " << in.pixel_mean(2)
      << " --std " << in.pixel_std(0) << " " << in.pixel_std(1) << " " << in.pixel_std(2)
      << " --threads=" << args.threads << " --workers=" << args.workers
      << " --batch=" << c.cfg.data().test_batch_size() << " --passes=" << args.passes
      << " --device=" << args.device << (args.flip ? " --flip" : "");
  FILE* pipe = popen(cmd.str().c_str(), "r");
  if (pipe == nullptr) return 0;
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof(buf), pipe)) out += buf;
  if (pclose(pipe) != 0) return 0;
  const size_t at = out.find("\"seconds\": ");
  return at == std::string::npos ? 0 : std::atof(out.c_str() + at + 11);
}

// max over rows of |a_i - b_i| / |b_i| (L2); -1 when the shapes differ.
double MaxRelDiff(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes()) return -1;
  const torch::Tensor num = (a - b).norm(2, 1), den = b.norm(2, 1).clamp_min(1e-12);
  return (num / den).max().item<double>();
}

// Best seconds per pass of ours (after a warm-up pass that also gives the features).
double RunOurs(reid::trainer::InferenceModel& model, const reid::proto::ReidConfig& cfg,
               const std::vector<reid::data::Sample>& samples, const Args& args,
               const torch::Device& device, torch::Tensor* features) {
  int64_t unreadable = 0;
  *features = reid::trainer::ExtractInferenceFeatures(model, cfg, samples, args.flip, nullptr,
                                                      device, {}, &unreadable);
  CHECK_EQ(unreadable, 0) << "unreadable benchmark images";
  double best = 1e30;
  for (int p = 0; p < args.passes; ++p) {
    const double start = Now();
    torch::Tensor f =
        reid::trainer::ExtractInferenceFeatures(model, cfg, samples, args.flip, nullptr, device);
    if (device.is_cuda()) torch::cuda::synchronize();
    best = std::min(best, Now() - start);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (!ParseArgs(argc, argv, &args)) return 2;
  if (!fs::exists("bench/ref_embed.py")) {
    std::cerr << "error: run from the project root (bench/ref_embed.py not found)\n";
    return 2;
  }
  at::set_num_threads(args.threads);
  const torch::Device device(args.device == "cuda" ? torch::kCUDA : torch::kCPU);
  std::vector<Case> cases;
  std::stringstream names(args.models);
  for (std::string n; std::getline(names, n, ',');) {
    Case c;
    if (!MakeCase(n, args, &c)) return 2;
    cases.push_back(c);
  }
  if (cases.empty()) return 2;
  std::string dir = args.keep;
  if (dir.empty()) {
    char tmpl[] = "/tmp/bench_embed_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return 1;
    dir = tmpl;
  } else {
    fs::create_directories(dir);
  }
  // The crops: synthetic persons, JPEG quality 90, as many as the largest case uses.
  int most = 0;
  for (const Case& c : cases) most = std::max(most, c.images);
  reid::data::SynthOptions so = reid::data::SynthOptionsFromConfig(reid::proto::DataConfig());
  so.height = args.source_h;
  so.width = args.source_w;
  std::vector<reid::data::Sample> all;
  for (int i = 0; i < most; ++i) {
    const std::string path = dir + "/" + std::to_string(100000 + i) + ".jpg";
    if (!fs::exists(path)) {
      const reid::data::Image img = reid::data::RenderPerson(so, 1 + i / 8, i % so.cameras, i % 8);
      const reid::StatusOr<std::vector<uint8_t>> jpeg = reid::data::EncodeJpeg(img, 90);
      CHECK(jpeg.ok()) << jpeg.status().message();
      std::ofstream(path, std::ios::binary)
          .write(reinterpret_cast<const char*>(jpeg->data()), jpeg->size());
    }
    all.push_back({path, i, 0});
  }
  bool ok = true;
  for (Case& c : cases) {
    const std::vector<reid::data::Sample> samples(all.begin(), all.begin() + c.images);
    const std::string list = dir + "/" + c.name + "_list.txt";
    {
      std::ofstream out(list);
      for (const auto& s : samples) out << s.path << "\n";
    }
    reid::trainer::InferenceModel model = MakeModel(c);
    const std::string weights = dir + "/" + c.name + ".pth";
    const reid::Status written = reid::formats::WriteTorchSaveFile(weights, StateDict(model));
    CHECK(written.ok()) << written.message();
    model->to(device);
    // libjpeg's DCT scaling (on by default) decodes crops at least twice the test size at 1/2
    // .. 1/8 scale, which PIL does not: the comparison (and the ratio) turns it off; ours with it
    // is timed and compared beside.
    const auto& test = c.cfg.input().size_test();
    c.dct_scaled = c.cfg.input().jpeg_dct_scaling() && args.source_h >= 2 * test.height() &&
                   args.source_w >= 2 * test.width();
    reid::proto::ReidConfig exact = c.cfg;
    exact.mutable_input()->set_jpeg_dct_scaling(false);
    torch::Tensor ours, ours_dct;
    // Ours, the reference, then ours with DCT scaling (a shared machine's load only ever adds
    // time).
    c.ours_s = RunOurs(model, exact, samples, args, device, &ours);
    const std::string ref_features = dir + "/" + c.name + "_ref.npy";
    c.ref_s = RunReference(c, args, model->vision().heads, weights, list, ref_features);
    if (c.ref_s <= 0) {
      std::cerr << "error: the Python reference failed for " << c.name
                << " (run from the project root with Debian's python3-torch)\n";
      ok = false;
      continue;
    }
    const reid::StatusOr<torch::Tensor> ref = reid::formats::ReadNpy(ref_features);
    CHECK(ref.ok()) << ref.status().message();
    if (c.dct_scaled) {
      c.ours_dct_s = RunOurs(model, c.cfg, samples, args, device, &ours_dct);
      c.dct_rel_diff = MaxRelDiff(ours_dct.cpu(), *ref);
    }
    c.max_rel_diff = MaxRelDiff(ours.cpu(), *ref);
    if (c.max_rel_diff < 0 || c.max_rel_diff > 1e-3) {
      std::cerr << "error: " << c.name << ": our features and the reference's differ (max "
                << "relative difference " << c.max_rel_diff << "): not the same work\n";
      ok = false;
    }
  }
  if (args.keep.empty()) fs::remove_all(dir);
  if (!ok) return 1;
  double ratio = 1e30;
  for (const Case& c : cases) ratio = std::min(ratio, c.ref_s / c.ours_s);
  if (args.json) {
    std::printf(
        "{\"benchmark\":\"embed\",\"device\":\"%s\",\"threads\":%d,\"workers\":%d,"
        "\"source\":\"%dx%d\",\"flip\":%s,\"passes\":%d,\"cases\":[",
        args.device.c_str(), args.threads, args.workers, args.source_h, args.source_w,
        args.flip ? "true" : "false", args.passes);
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      const auto& t = c.cfg.input().size_test();
      std::printf(
          "%s{\"model\":\"%s\",\"input\":\"%dx%d\",\"images\":%d,"
          "\"ours_images_per_s\":%.2f,\"reference_images_per_s\":%.2f,\"ratio\":%.3f,"
          "\"max_rel_diff\":%.3g,\"dct_scaled\":%s,\"ours_dct_images_per_s\":%.2f,"
          "\"dct_rel_diff\":%.3g}",
          i ? "," : "", c.name.c_str(), t.height(), t.width(), c.images, c.images / c.ours_s,
          c.images / c.ref_s, c.ref_s / c.ours_s, c.max_rel_diff, c.dct_scaled ? "true" : "false",
          c.dct_scaled ? c.images / c.ours_dct_s : 0.0, c.dct_rel_diff);
    }
    std::printf(
        "],\"reference\":\"bench/ref_embed.py (PIL + torchvision + DataLoader + "
        "tests/clipreid_model.py)\",\"ratio\":%.3f}\n",
        ratio);
    return 0;
  }
  std::printf(
      "embedding %dx%d JPEG crops on %s, %d threads, %d decode workers%s (best of %d "
      "passes)\n",
      args.source_h, args.source_w, args.device.c_str(), args.threads, args.workers,
      args.flip ? ", flip" : "", args.passes);
  for (const Case& c : cases) {
    const auto& t = c.cfg.input().size_test();
    std::printf(
        "  %-7s %3dx%-3d %4d images  ours %8.2f images/s  reference %8.2f images/s  "
        "ratio %.2f  max rel diff %.2g",
        c.name.c_str(), t.height(), t.width(), c.images, c.images / c.ours_s, c.images / c.ref_s,
        c.ref_s / c.ours_s, c.max_rel_diff);
    std::printf("\n");
    if (c.dct_scaled) {
      std::printf(
          "          with libjpeg's DCT-scaled decoding (the config's default; less "
          "work): ours %8.2f images/s, max rel diff %.2g\n",
          c.images / c.ours_dct_s, c.dct_rel_diff);
    }
  }
  std::printf("ratio (ours / reference images/s, the lowest; > 1 = ours faster): %.2f\n", ratio);
  return 0;
}
