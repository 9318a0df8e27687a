// Forward + backward of the ViT-B/16 image encoder (batch 8 at 256x128, stride 16, training mode)
// with our LibTorch modules vs the same model in Python PyTorch (bench/ref_clip.py) at the same
// thread count and device, and vs the machine's floor for it: a plain fp32 GEMM of the model's
// dominant shape (the MLP's (B*L) x W x 4W product) timed in the same run. Prints best seconds per
// step of each, ratio = reference / ours (> 1: ours faster), the step's FLOP/s (the matrix
// products' multiply-adds of forward and backward, counted from the shapes: see StepFlops) and
// peak_fraction = that over the GEMM's FLOP/s. Usage (from the project root):
//   bench_clip [--json] [--threads=N] [--iters=N] [--batch=8] [--device=cpu|cuda] [--profile]
// --profile: ours only, one step under LibTorch's profiler, time per operator (self time).
// The reference runs with /usr/bin/python3, or $REID_PYTHON where set (a GPU machine's venv).
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/init.h"
#include "bench/bench_flags.h"
#include "bench/bench_profile.h"
#include "trainer/model/clip.h"
#include "trainer/model/cpu_kernels.h"

DEFINE_bool(json, false, "print one JSON object (with a `ratio` field)");
DEFINE_bool(profile, false, "ours only: one step under LibTorch's profiler, time per operator");
DEFINE_bool(no_reference, false, "skip the Python reference");
DEFINE_int32(threads, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())),
             "intra-op threads (default: the machine's cores)");
DEFINE_int32(iters, 3, "timed steps (best of)");
DEFINE_int32(batch, 8, "images per step");
DEFINE_string(device, "cpu", "cpu or cuda");

namespace {

struct Args {
  bool json = false;
  bool profile = false;
  bool reference = true;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int iters = 3;
  int batch = 8;
  std::string device = "cpu";
};

bool ParseArgs(int argc, char** argv, Args* a) {
  reid::bench::ParseBenchFlags(
      "usage: bench_clip [--json] [--threads=N] [--iters=N] [--batch=8] [--device=cpu|cuda] "
      "[--profile] [--no_reference]",
      &argc, &argv);
  a->json = FLAGS_json;
  a->profile = FLAGS_profile;
  a->reference = !FLAGS_no_reference;
  a->threads = FLAGS_threads;
  a->iters = FLAGS_iters;
  a->batch = FLAGS_batch;
  a->device = FLAGS_device;
  if (a->device != "cpu" && a->device != "cuda") {
    std::cerr << "error: --device=" << a->device << ": must be cpu or cuda\n";
    return false;
  }
  if (a->device == "cuda" && !torch::cuda::is_available()) {
    std::cerr << "error: --device=cuda: this LibTorch has no CUDA or no GPU is visible\n";
    return false;
  }
  if (a->threads <= 0 || a->iters <= 0 || a->batch <= 0) {
    std::cerr << "error: --threads, --iters and --batch must be > 0\n";
    return false;
  }
  return true;
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

reid::model::VisionShape BenchShape() {
  reid::model::VisionShape shape;  // ViT-B/16 at 256x128: 16x8 grid
  shape.grid_h = 16;
  shape.grid_w = 8;
  return shape;
}

// FLOPs of one training step's matrix products, 2 per multiply-add: per block the qkv projection
// (B*L x W x 3W), the scores Q K^T and their product with V (B*heads x L x L x W/heads each),
// out_proj (B*L x W x W) and the MLP's two (B*L x W x 4W); the patch embedding (B*N x 3*p*p x W)
// and the CLS projection (B x W x D). The backward pass computes two products per forward product
// (gradient of each operand), except the patch embedding, whose input (the image) needs none.
// The last block counts what a training step makes of it (clip.cc makes only the CLS token's
// row there): keys and values over all L tokens, the query, scores, out_proj and MLP for one
// token per image. Elementwise work (softmax, LayerNorm, QuickGELU, adds) is not counted.
double StepFlops(const reid::model::VisionShape& s, int64_t b) {
  const double n = static_cast<double>(s.grid_h * s.grid_w), l = n + 1, w = s.width;
  const double block = 2 * b * l * w * (3 * w) + 2 * (2 * b * l * l * w) + 2 * b * l * w * w +
                       2 * (2 * b * l * w * (4 * w));
  const double last_block = 2 * b * l * w * (2 * w) + 2 * b * w * w + 2 * (2 * b * l * w) +
                            2 * b * w * w + 2 * (2 * b * w * (4 * w));
  const double embed = 2 * b * n * (3.0 * s.patch * s.patch) * w;
  const double forward = (s.layers - 1) * block + last_block + embed + 2 * b * w * s.output_dim;
  return 3 * forward - embed;
}

// The floor: a plain fp32 GEMM (B*L x W) x (W x 4W), the MLP's c_fc product in nn.Linear's layout
// (weight (4W, W) used transposed), into a preallocated output; best seconds of `reps` in a row.
struct Gemm {
  torch::Tensor a, weight, out;
  double flops = 0;
  Gemm(const reid::model::VisionShape& s, int64_t b, const torch::Device& device) {
    const int64_t rows = b * (s.grid_h * s.grid_w + 1);
    const auto opts = torch::TensorOptions().device(device);
    a = torch::randn({rows, s.width}, opts);
    weight = torch::randn({4 * s.width, s.width}, opts);
    out = torch::empty({rows, 4 * s.width}, opts);
    flops = 2.0 * rows * s.width * 4 * s.width;
  }
  double Best(int reps, const torch::Device& device) {
    torch::NoGradGuard no_grad;
    double best = 1e30;
    for (int i = 0; i < reps; ++i) {
      const auto start = std::chrono::steady_clock::now();
      torch::mm_out(out, a, weight.t());
      if (device.is_cuda()) torch::cuda::synchronize();
      best = std::min(best, Seconds(start));
    }
    return best;
  }
};

// The step's linear-layer products alone, back to back, in the layouts autograd runs them: per
// block and layer (qkv, out_proj, c_fc, c_proj; W_in -> W_out over B*L rows) the forward x W^T,
// the backward's g W and g^T x, into preallocated outputs. Their FLOP/s is what the step would
// reach if everything between the products took no time (the attention's products and the patch
// embedding, 3% of the FLOPs, are left out).
struct LinearProducts {
  struct Layer {
    torch::Tensor x, w, y, g, gx, gw;
  };
  std::vector<Layer> layers;
  int64_t blocks = 0;
  double flops = 0;
  LinearProducts(const reid::model::VisionShape& s, int64_t b, const torch::Device& device)
      : blocks(s.layers) {
    const int64_t rows = b * (s.grid_h * s.grid_w + 1), w = s.width;
    const auto opts = torch::TensorOptions().device(device);
    for (const auto& [in, out] :
         {std::pair<int64_t, int64_t>{w, 3 * w}, {w, w}, {w, 4 * w}, {4 * w, w}}) {
      layers.push_back({torch::randn({rows, in}, opts), torch::randn({out, in}, opts),
                        torch::empty({rows, out}, opts), torch::randn({rows, out}, opts),
                        torch::empty({rows, in}, opts), torch::empty({out, in}, opts)});
      flops += s.layers * 3 * 2.0 * rows * in * out;
    }
  }
  double Time(const torch::Device& device) {
    torch::NoGradGuard no_grad;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < blocks; ++i) {
      for (Layer& l : layers) torch::mm_out(l.y, l.x, l.w.t());
    }
    for (int64_t i = 0; i < blocks; ++i) {
      for (Layer& l : layers) {
        torch::mm_out(l.gx, l.g, l.w);
        torch::mm_out(l.gw, l.g.t(), l.x);
      }
    }
    if (device.is_cuda()) torch::cuda::synchronize();
    return Seconds(start);
  }
};

struct Ours {
  double step_s = 1e30, unfused_s = 1e30, gemm_s = 1e30, gemm_flops = 0;
  double products_s = 1e30, products_flops = 0;
  double faults_per_step = 0;  // minor page faults (the kernel mapping fresh memory)
};

long MinorFaults() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

// Best step with the fused CPU kernels (cpu_kernels.h) and without, and the best GEMM, timed in
// turn (GEMM, fused step, unfused step, the linear products alone) so that all see the same load;
// two warm-up steps of each first (the heap reaches its steady size: see page_faults_per_step).
// The profile runs one fused step after two.
Ours RunOurs(const Args& args, bool profile) {
  torch::manual_seed(0);
  const reid::model::VisionShape shape = BenchShape();
  reid::model::VisionTransformer vis(shape);
  const torch::Device device(args.device == "cuda" ? torch::kCUDA : torch::kCPU);
  vis->to(device);
  vis->train();
  auto x = torch::randn({args.batch, 3, 256, 128}, torch::TensorOptions().device(device));
  auto step = [&](bool fused) {
    reid::model::SetFusedCpuKernels(fused);
    const auto start = std::chrono::steady_clock::now();
    reid::model::VisionOutputs o = vis(x);
    (o.cls_last.sum() + o.cls.sum() + o.cls_proj.sum()).backward();
    if (device.is_cuda()) torch::cuda::synchronize();
    return Seconds(start);
  };
  Gemm gemm(shape, args.batch, device);
  LinearProducts products(shape, args.batch, device);
  Ours r;
  r.gemm_flops = gemm.flops;
  r.products_flops = products.flops;
  step(true);
  step(true);
  if (profile) {
    reid::bench::StartProfile();
    const long faults = MinorFaults();
    r.step_s = step(true);
    r.faults_per_step = static_cast<double>(MinorFaults() - faults);
    return r;
  }
  step(false);
  step(false);
  for (int i = 0; i < args.iters; ++i) {
    r.gemm_s = std::min(r.gemm_s, gemm.Best(5, device));
    const long faults = MinorFaults();
    r.step_s = std::min(r.step_s, step(true));
    r.faults_per_step += static_cast<double>(MinorFaults() - faults) / args.iters;
    r.unfused_s = std::min(r.unfused_s, step(false));
    r.products_s = std::min(r.products_s, products.Time(device));
  }
  r.gemm_s = std::min(r.gemm_s, gemm.Best(5, device));
  reid::model::SetFusedCpuKernels(true);
  return r;
}

int Profile(const Args& args) {
  at::set_num_threads(args.threads);
  const Ours r = RunOurs(args, /*profile=*/true);
  reid::bench::PrintProfile(r.step_s);
  std::printf("minor page faults in the step: %.0f\n", r.faults_per_step);
  return 0;
}

// OMP_WAIT_POLICY (and GOMP_SPINCOUNT) as this process and the reference run with.
std::string WaitPolicy() {
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  return std::string(policy ? policy : "unset") +
         (spin ? std::string(", GOMP_SPINCOUNT=") + spin : "");
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
  reid::base::ReexecWithPassiveOpenMP(argv);  // as `reid train` does
  reid::base::KeepFreedMemory();
  Args args;
  if (!ParseArgs(argc, argv, &args)) return 2;
  if (args.profile) return Profile(args);
  at::set_num_threads(args.threads);
  const Ours ours = RunOurs(args, /*profile=*/false);
  const double ref = args.reference ? RunReference(args) : 0;
  if (args.reference && ref <= 0) {
    std::cerr << "error: the Python reference failed (run from the project root with Debian's "
                 "python3-torch)\n";
    return 1;
  }
  const double ratio = ref / ours.step_s;
  const double step_flops = StepFlops(BenchShape(), args.batch);
  const double gemm_gflops = ours.gemm_flops / ours.gemm_s / 1e9;
  const double step_gflops = step_flops / ours.step_s / 1e9;
  const double peak_fraction = step_gflops / gemm_gflops;
  const double products_gflops = ours.products_flops / ours.products_s / 1e9;
  if (args.json) {
    std::printf(
        "{\"benchmark\":\"clip_vit_b16_fwd_bwd\",\"batch\":%d,\"image\":\"256x128\","
        "\"device\":\"%s\",\"threads\":%d,\"iters\":%d,\"ours_s\":%.4f,\"reference_s\":%.4f,"
        "\"reference\":\"Python PyTorch %s\",\"ratio\":%.3f,\"step_gflop\":%.1f,"
        "\"step_gflops\":%.1f,\"gemm_gflops\":%.1f,\"peak_fraction\":%.3f,\"unfused_s\":%.4f,"
        "\"fused_speedup\":%.3f,\"linear_products_gflops\":%.1f,\"products_peak_fraction\":%.3f,"
        "\"page_faults_per_step\":%.0f,\"omp_wait_policy\":\"%s\"}\n",
        args.batch, args.device.c_str(), args.threads, args.iters, ours.step_s, ref,
        "bench/ref_clip.py", ratio, step_flops / 1e9, step_gflops, gemm_gflops, peak_fraction,
        ours.unfused_s, ours.unfused_s / ours.step_s, products_gflops,
        products_gflops / gemm_gflops, ours.faults_per_step, WaitPolicy().c_str());
  } else {
    std::printf("ViT-B/16 forward+backward, batch %d at 256x128 on %s, %d threads (best of %d)\n",
                args.batch, args.device.c_str(), args.threads, args.iters);
    std::printf("  ours (LibTorch)   %.3f s/step\n  Python PyTorch    %.3f s/step\n", ours.step_s,
                ref);
    std::printf("ratio (reference / ours, > 1 = ours faster): %.2f\n", ratio);
    std::printf("  ours without the fused CPU kernels %.3f s/step (%.2fx)\n", ours.unfused_s,
                ours.unfused_s / ours.step_s);
    std::printf(
        "step: %.1f GFLOP of matrix products, %.1f GFLOP/s; plain GEMM %.1f GFLOP/s; "
        "peak_fraction %.3f\n",
        step_flops / 1e9, step_gflops, gemm_gflops, peak_fraction);
    std::printf("the linear layers' products alone: %.1f GFLOP/s (%.3f of the GEMM)\n",
                products_gflops, products_gflops / gemm_gflops);
  }
  return 0;
}
