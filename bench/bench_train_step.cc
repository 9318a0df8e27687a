// One stage-2 training step (image encoder forward, BN necks and classifiers, ID + triplet + I2T
// losses over the cross-modal attention against a frozen text bank, backward, Adam with the
// stage's parameter groups) of our trainer vs the same step in Python PyTorch
// (bench/ref_train_step.py, the model of tests/train_step_reference.py) at the same thread count
// and device, random init, for the tiny config (its P x K batch) and for ViT-B/16 at 256x128
// (batch 8 on CPU, 64 on GPU). Prints images/s of each and ratio = ours / reference (> 1: ours
// faster). Usage (from the project root):
//   bench_train_step [--json] [--threads=N] [--iters=N] [--rounds=N] [--device=cpu|cuda]
//                    [--models=tiny,vit_b16] [--profile]
// --profile: ours only, one step of each model under LibTorch's profiler (time per operator).
// --iters: timed steps of ViT-B/16 per round (best of; default 3); the tiny model gets 10x as
// many; --rounds: ours then the reference, repeated (default 2). The reference runs with
// /usr/bin/python3, or $REID_PYTHON where set (a GPU machine's venv).
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "base/init.h"
#include "bench/bench_flags.h"
#include "bench/bench_profile.h"
#include "proto/config.h"
#include "trainer/losses.h"
#include "trainer/model/reid_model.h"
#include "trainer/schedule.h"

DEFINE_bool(json, false, "print one JSON object (with a `ratio` field)");
DEFINE_bool(profile, false, "print a per-operator profile of one step of each model");
DEFINE_int32(threads, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())),
             "intra-op threads (default: the machine's cores)");
DEFINE_int32(iters, 3, "timed steps of ViT-B/16 per round (best of); the tiny model gets 10x");
DEFINE_int32(rounds, 2, "rounds of ours then the reference");
DEFINE_string(device, "cpu", "cpu or cuda");
DEFINE_string(models, "tiny,vit_b16", "comma-separated: tiny, vit_b16");

namespace {

struct Args {
  bool json = false;
  bool profile = false;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int iters = 3;
  int rounds = 2;
  std::string device = "cpu";
  std::string models = "tiny,vit_b16";
};

bool ParseArgs(int argc, char** argv, Args* a) {
  reid::bench::ParseBenchFlags(
      "usage: bench_train_step [--json] [--threads=N] [--iters=N] [--device=cpu|cuda] "
      "[--models=tiny,vit_b16] [--rounds=2] [--profile]",
      &argc, &argv);
  a->json = FLAGS_json;
  a->profile = FLAGS_profile;
  a->threads = FLAGS_threads;
  a->iters = FLAGS_iters;
  a->rounds = FLAGS_rounds;
  a->device = FLAGS_device;
  a->models = FLAGS_models;
  if (a->device != "cpu" && a->device != "cuda") {
    std::cerr << "error: --device=" << a->device << ": must be cpu or cuda\n";
    return false;
  }
  if (a->device == "cuda" && !torch::cuda::is_available()) {
    std::cerr << "error: --device=cuda: this LibTorch has no CUDA or no GPU is visible\n";
    return false;
  }
  if (a->threads <= 0 || a->iters <= 0 || a->rounds <= 0) {
    std::cerr << "error: --threads, --iters and --rounds must be > 0\n";
    return false;
  }
  return true;
}

// One benchmarked model: a config (file + overrides), its class count and batch.
struct Case {
  std::string name, image;
  reid::proto::ReidConfig cfg;
  int64_t classes = 0, batch = 0;
  int iters = 0;
  double ours_s = 0, ref_s = 0, faults_per_step = 0;
};

bool MakeCase(const std::string& name, const std::string& file,
              const std::vector<std::string>& overrides, int64_t classes, int iters, Case* c) {
  c->name = name;
  c->classes = classes;
  c->iters = iters;
  const reid::config::Problems problems = reid::config::Load(file, overrides, &c->cfg);
  for (const std::string& p : problems) std::cerr << "error: " << file << ": " << p << "\n";
  const auto& s2 = c->cfg.stage2();
  c->batch = static_cast<int64_t>(s2.ids_per_batch()) * s2.num_instances();
  const auto& size = c->cfg.input().size_train();
  c->image = std::to_string(size.height()) + "x" + std::to_string(size.width());
  return problems.empty();
}

// Trainer::SetTrainable(2): the image side, necks (not their frozen biases), classifiers, SIE and
// the cross-modal attention train; the text side and g do not.
std::vector<std::pair<std::string, torch::Tensor>> Stage2Trainable(reid::model::ReidModel& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& p : m->named_parameters()) {
    const std::string& n = p.key();
    const bool train = n.rfind("text_encoder.", 0) != 0 && n.rfind("prompt_learner.", 0) != 0 &&
                       n.rfind("context_adjust.", 0) != 0 && n != "bottleneck.bias" &&
                       n != "bottleneck_proj.bias";
    p.value().requires_grad_(train);
    if (train) out.emplace_back(n, p.value());
  }
  return out;
}

long MinorFaults() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

// Best seconds per step of ours (after one warm-up step); *faults_per_step: the minor page
// faults (fresh memory mapped by the kernel) per timed step. profile: one step after two, under
// LibTorch's profiler, printed (bench_profile.h).
double RunOurs(const Case& c, const torch::Device& device, double* faults_per_step,
               bool profile = false) {
  torch::manual_seed(0);
  reid::StatusOr<reid::model::ReidModel> built = reid::model::BuildReidModel(c.cfg, c.classes, 0);
  CHECK(built.ok()) << built.status().message();
  reid::model::ReidModel model = *built;
  model->to(device);
  model->train();
  const auto& s2 = c.cfg.stage2();
  auto optimizer = reid::trainer::MakeOptimizer(
      s2.optimizer(), s2.momentum(), reid::trainer::Stage2ParamGroups(s2, Stage2Trainable(model)));
  const auto& size = c.cfg.input().size_train();
  const auto opts = torch::TensorOptions().device(device);
  const torch::Tensor x = torch::randn({c.batch, 3, size.height(), size.width()}, opts);
  const torch::Tensor y =  // P ids x K images
      torch::arange(s2.ids_per_batch(), opts.dtype(torch::kLong))
          .repeat_interleave(s2.num_instances());
  const torch::Tensor bank = torch::randn({c.classes, model->shape().text.output_dim}, opts);
  auto step = [&] {
    reid::model::VisionOutputs v = model->EncodeImage(x);
    auto score = model->classifier(model->bottleneck(v.cls));
    auto score_proj = model->classifier_proj(model->bottleneck_proj(v.cls_proj));
    reid::trainer::Stage2Losses l =
        reid::trainer::Stage2Loss(c.cfg.loss(), score, score_proj, v.cls_last, v.cls, v.cls_proj,
                                  model->ImageTextLogits(v.cls_proj, bank), y);
    optimizer->zero_grad();
    l.total.backward();
    optimizer->step();
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  step();
  if (profile) {
    step();
    reid::bench::StartProfile();
    const auto start = std::chrono::steady_clock::now();
    step();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s:\n", c.name.c_str());
    reid::bench::PrintProfile(secs);
    return secs;
  }
  double best = 1e30;
  const long faults = MinorFaults();
  for (int i = 0; i < c.iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    step();
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  *faults_per_step = static_cast<double>(MinorFaults() - faults) / c.iters;
  return best;
}

// Best seconds per step of bench/ref_train_step.py on the same effective config; 0 on failure.
double RunReference(const Case& c, const Args& args) {
  char path[] = "/tmp/bench_train_step_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return 0;
  close(fd);
  std::ofstream(path) << reid::config::ToText(c.cfg);
  const char* python = std::getenv("REID_PYTHON");
  const std::string cmd = std::string(python ? python : "/usr/bin/python3") +
                          " bench/ref_train_step.py " + path + " " + std::to_string(c.classes) +
                          " " + std::to_string(args.threads) + " " + std::to_string(c.iters) + " " +
                          args.device;
  FILE* pipe = popen(cmd.c_str(), "r");
  double secs = 0;
  if (pipe != nullptr) {
    if (std::fscanf(pipe, "%lf", &secs) != 1) secs = 0;
    if (pclose(pipe) != 0) secs = 0;
  }
  std::remove(path);
  return secs;
}

}  // namespace

int main(int argc, char** argv) {
  reid::base::ReexecWithPassiveOpenMP(argv);  // as `reid train` does
  reid::base::KeepFreedMemory();
  Args args;
  if (!ParseArgs(argc, argv, &args)) return 2;
  at::set_num_threads(args.threads);
  const torch::Device device(args.device == "cuda" ? torch::kCUDA : torch::kCPU);
  const std::string vit_ids = args.device == "cuda" ? "16" : "2";  // x 4 images: 64 or 8
  std::vector<Case> cases(2);
  // Tiny: its own P x K batch, the synthetic dataset's 96 ids. ViT-B/16: the paper's modules,
  // 256x128, Market-1501's 751 ids, the byte-level tokenizer (the text side does not run).
  if (!MakeCase("tiny", "configs/synthetic_tiny.textproto", {}, 96, 10 * args.iters, &cases[0]) ||
      !MakeCase("vit_b16", "configs/market1501_improved.textproto",
                {"input { size_train { height: 256 width: 128 } size_test { height: 256 width: "
                 "128 } } model { vocab_size: 514 weights: '' bpe_vocab: '' }",
                 "stage2 { ids_per_batch: " + vit_ids +
                     " ims_per_batch: " + std::to_string(4 * std::stoi(vit_ids)) + " }"},
                751, args.iters, &cases[1])) {
    std::cerr << "error: run from the project root\n";
    return 2;
  }
  std::vector<Case> chosen;
  for (const Case& c : cases) {
    if (("," + args.models + ",").find("," + c.name + ",") != std::string::npos)
      chosen.push_back(c);
  }
  if (chosen.empty()) {
    std::cerr << "error: --models=" << args.models << ": none of tiny, vit_b16\n";
    return 2;
  }
  cases = chosen;
  if (args.profile) {
    double faults = 0;
    for (const Case& c : cases) RunOurs(c, device, &faults, /*profile=*/true);
    return 0;
  }
  // Rounds alternate ours and the reference (a shared machine's load only ever adds time).
  for (int r = 0; r < args.rounds; ++r) {
    for (Case& c : cases) {
      double faults = 0;
      const double ours = RunOurs(c, device, &faults), ref = RunReference(c, args);
      c.faults_per_step = r == 0 ? faults : std::min(c.faults_per_step, faults);
      if (ref <= 0) {
        std::cerr << "error: the Python reference failed (run from the project root with "
                     "Debian's python3-torch)\n";
        return 1;
      }
      c.ours_s = r == 0 ? ours : std::min(c.ours_s, ours);
      c.ref_s = r == 0 ? ref : std::min(c.ref_s, ref);
    }
  }
  double ratio = 1e30;
  for (const Case& c : cases) ratio = std::min(ratio, c.ref_s / c.ours_s);
  if (args.json) {
    std::printf(
        "{\"benchmark\":\"train_step_stage2\",\"device\":\"%s\",\"threads\":%d,"
        "\"rounds\":%d,\"cases\":[",
        args.device.c_str(), args.threads, args.rounds);
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      std::printf(
          "%s{\"model\":\"%s\",\"batch\":%lld,\"image\":\"%s\",\"iters\":%d,"
          "\"ours_images_per_s\":%.2f,\"reference_images_per_s\":%.2f,\"ratio\":%.3f,"
          "\"page_faults_per_step\":%.0f}",
          i ? "," : "", c.name.c_str(), static_cast<long long>(c.batch), c.image.c_str(), c.iters,
          c.batch / c.ours_s, c.batch / c.ref_s, c.ref_s / c.ours_s, c.faults_per_step);
    }
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    std::printf(
        "],\"reference\":\"Python PyTorch bench/ref_train_step.py\",\"ratio\":%.3f,"
        "\"omp_wait_policy\":\"%s\"}\n",
        ratio, policy ? policy : "unset");
    return 0;
  }
  std::printf("stage-2 training step on %s, %d threads (best of the timed steps)\n",
              args.device.c_str(), args.threads);
  for (const Case& c : cases) {
    std::printf(
        "  %-8s batch %3lld at %-7s  ours %8.2f images/s  Python PyTorch %8.2f images/s"
        "  ratio %.2f\n",
        c.name.c_str(), static_cast<long long>(c.batch), c.image.c_str(), c.batch / c.ours_s,
        c.batch / c.ref_s, c.ref_s / c.ours_s);
  }
  std::printf("ratio (ours / reference images/s, the lowest; > 1 = ours faster): %.2f\n", ratio);
  return 0;
}
