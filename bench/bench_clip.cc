// Forward + backward of the ViT-B/16 image encoder (batch 8 at 256x128, stride 16, training mode)
// with our LibTorch modules vs the same model in Python PyTorch (bench/ref_clip.py) at the same
// thread count and device. Prints best seconds per step of each and ratio = reference / ours (> 1:
// ours is faster). Usage (from the project root):
//   bench_clip [--json] [--threads=N] [--iters=N] [--batch=8] [--device=cpu|cuda]
// The reference runs with /usr/bin/python3, or $REID_PYTHON where set (a GPU machine's venv).
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include <torch/cuda.h>

#include "trainer/model/clip.h"

namespace {

struct Args {
  bool json = false;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int iters = 3;
  int batch = 8;
  std::string device = "cpu";
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
    } else if (s.rfind("--batch=", 0) == 0) {
      a->batch = std::atoi(s.c_str() + 8);
    } else if (s.rfind("--device=", 0) == 0) {
      a->device = s.substr(9);
    } else {
      std::cerr << "usage: bench_clip [--json] [--threads=N] [--iters=N] [--batch=8] "
                   "[--device=cpu|cuda]\n";
      return false;
    }
  }
  if (a->device != "cpu" && a->device != "cuda") {
    std::cerr << "error: --device=" << a->device << ": must be cpu or cuda\n";
    return false;
  }
  if (a->device == "cuda" && !torch::cuda::is_available()) {
    std::cerr << "error: --device=cuda: this LibTorch has no CUDA or no GPU is visible\n";
    return false;
  }
  return a->threads > 0 && a->iters > 0 && a->batch > 0;
}

double RunOurs(const Args& args) {
  at::set_num_threads(args.threads);
  torch::manual_seed(0);
  reid::model::VisionShape shape;  // ViT-B/16 at 256x128: 16x8 grid
  shape.grid_h = 16;
  shape.grid_w = 8;
  reid::model::VisionTransformer vis(shape);
  const torch::Device device(args.device == "cuda" ? torch::kCUDA : torch::kCPU);
  vis->to(device);
  vis->train();
  auto x = torch::randn({args.batch, 3, 256, 128}, torch::TensorOptions().device(device));
  auto step = [&] {
    reid::model::VisionOutputs o = vis(x);
    (o.cls_last.sum() + o.cls.sum() + o.cls_proj.sum()).backward();
    if (device.is_cuda()) torch::cuda::synchronize();
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
  const char* python = std::getenv("REID_PYTHON");
  const std::string cmd = std::string(python ? python : "/usr/bin/python3") +
                          " bench/ref_clip.py " + std::to_string(args.threads) + " " +
                          std::to_string(args.iters) + " " + std::to_string(args.batch) + " " +
                          args.device;
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
        "{\"benchmark\":\"clip_vit_b16_fwd_bwd\",\"batch\":%d,\"image\":\"256x128\","
        "\"device\":\"%s\",\"threads\":%d,\"iters\":%d,\"ours_s\":%.4f,\"reference_s\":%.4f,\"reference\":"
        "\"Python PyTorch %s\",\"ratio\":%.3f}\n",
        args.batch, args.device.c_str(), args.threads, args.iters, ours, ref, "bench/ref_clip.py",
        ratio);
  } else {
    std::printf("ViT-B/16 forward+backward, batch %d at 256x128 on %s, %d threads (best of %d)\n",
                args.batch, args.device.c_str(), args.threads, args.iters);
    std::printf("  ours (LibTorch)   %.3f s/step\n  Python PyTorch    %.3f s/step\n", ours, ref);
    std::printf("ratio (reference / ours, > 1 = ours faster): %.2f\n", ratio);
  }
  return 0;
}
