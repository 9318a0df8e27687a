// Forward + backward of the ViT-B/16 image encoder (batch 8 at 256x128, stride 16, training mode)
// with our LibTorch modules vs the same model in Python PyTorch (bench/ref_clip.py) at the same
// thread count. Prints best seconds per step of each and ratio = reference / ours (> 1: ours is
// faster). Usage (from the project root): bench_clip [--json] [--threads=N] [--iters=N]
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include "trainer/model/clip.h"

namespace {

struct Args {
  bool json = false;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int iters = 3;
};

bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    if (s == "--json") {
      a->json = true;
    } else if (s.rfind("--threads=", 0) == 0) {
      a->threads = std::atoi(s.c_str() + 10);
    } else if (s.rfind("--iters=", 0) == 0) {
      a->iters = std::atoi(s.c_str() + 8);
    } else {
      std::cerr << "usage: bench_clip [--json] [--threads=N] [--iters=N]\n";
      return false;
    }
  }
  return a->threads > 0 && a->iters > 0;
}

double RunOurs(const Args& args) {
  at::set_num_threads(args.threads);
  torch::manual_seed(0);
  reid::model::VisionShape shape;  // ViT-B/16 at 256x128: 16x8 grid
  shape.grid_h = 16;
  shape.grid_w = 8;
  reid::model::VisionTransformer vis(shape);
  vis->train();
  auto x = torch::randn({8, 3, 256, 128});
  auto step = [&] {
    reid::model::VisionOutputs o = vis(x);
    (o.cls_last.sum() + o.cls.sum() + o.cls_proj.sum()).backward();
  };
  step();
  double best = 1e30;
  for (int i = 0; i < args.iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    step();
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

double RunReference(const Args& args) {
  const std::string cmd = "/usr/bin/python3 bench/ref_clip.py " + std::to_string(args.threads) +
                          " " + std::to_string(args.iters);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return 0;
  double secs = 0;
  if (std::fscanf(pipe, "%lf", &secs) != 1) secs = 0;
  const int status = pclose(pipe);
  return status == 0 ? secs : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (!ParseArgs(argc, argv, &args)) return 2;
  const double ours = RunOurs(args);
  const double ref = RunReference(args);
  if (ref <= 0) {
    std::cerr << "error: the Python reference failed (run from the project root with Debian's "
                 "python3-torch)\n";
    return 1;
  }
  const double ratio = ref / ours;
  if (args.json) {
    std::printf(
        "{\"benchmark\":\"clip_vit_b16_fwd_bwd\",\"batch\":8,\"image\":\"256x128\","
        "\"threads\":%d,\"iters\":%d,\"ours_s\":%.4f,\"reference_s\":%.4f,\"reference\":"
        "\"Python PyTorch %s\",\"ratio\":%.3f}\n",
        args.threads, args.iters, ours, ref, "bench/ref_clip.py", ratio);
  } else {
    std::printf("ViT-B/16 forward+backward, batch 8 at 256x128, %d threads (best of %d)\n",
                args.threads, args.iters);
    std::printf("  ours (LibTorch)   %.3f s/step\n  Python PyTorch    %.3f s/step\n", ours, ref);
    std::printf("ratio (reference / ours, > 1 = ours faster): %.2f\n", ratio);
  }
  return 0;
}
