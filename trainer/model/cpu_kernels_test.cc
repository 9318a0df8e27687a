// The fused CPU kernels against the unfused LibTorch ops they replace: forward and gradients to
// 1e-6 relative (max |fused - unfused| / max |unfused|), forward values also element by element,
// on sizes with vector tails, 2 threads, inputs reaching exp's overflow and underflow. Negative
// controls: the same checks reject a kernel whose constant is off by 1e-5 (values) or 1e-4
// (gradients), so they are tight enough to catch a slightly wrong kernel.
#include "trainer/model/cpu_kernels.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <thread>

#include "trainer/model/clip.h"
#include "trainer/model/cpu_gemm.h"
#include "trainer/model/test_util.h"

namespace reid::model {
namespace {

using testing::RelativeError;

constexpr double kBound = 1e-6;

// max over elements of |a - b| / |b| (equal elements, zeros included, count 0).
double ElementwiseRelativeError(const torch::Tensor& a, const torch::Tensor& b) {
  auto d = (a - b).abs() / b.abs();
  return torch::where(a == b, torch::zeros_like(d), d).max().item<double>();
}

class FusedKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    at::set_num_threads(2);
    torch::manual_seed(7);
    SetFusedCpuKernels(true);
  }
  void TearDown() override { SetFusedCpuKernels(true); }
};

// QuickGELU inputs: 3 * 40,009 normal values (tasks of 32,768 elements and vector tails),
// including the region where the derivative crosses zero.
torch::Tensor GeluInput() { return torch::randn({3, 40009}) * 3; }

// The autograd node that produced y: the fused kernels' own (CppNode<...Function>) or LibTorch's.
std::string Node(const torch::Tensor& x,
                 const std::function<torch::Tensor(const torch::Tensor&)>& f) {
  return f(x.clone().requires_grad_(true)).grad_fn()->name();
}

// Forward values and the gradient of sum(f(x) * g) for a random g (an upstream gradient that is
// not all ones, so a wrong term cannot hide).
std::pair<torch::Tensor, torch::Tensor> ValueAndGrad(
    const std::function<torch::Tensor(const torch::Tensor&)>& f, const torch::Tensor& x0,
    const torch::Tensor& g) {
  auto x = x0.clone().requires_grad_(true);
  auto y = f(x);
  (y * g).sum().backward();
  return {y.detach(), x.grad()};
}

TEST_F(FusedKernels, QuickGeluMatchesUnfused) {
  const auto x = GeluInput();
  const auto g = torch::randn_like(x);
  auto [y, gx] = ValueAndGrad(QuickGelu, x, g);
  auto [y_ref, gx_ref] = ValueAndGrad(QuickGeluUnfused, x, g);
  EXPECT_NE(Node(x, QuickGelu).find("QuickGeluFunction"), std::string::npos);  // fused ran
  EXPECT_LT(RelativeError(y, y_ref), kBound);
  EXPECT_LT(ElementwiseRelativeError(y, y_ref), kBound);
  EXPECT_LT(RelativeError(gx, gx_ref), kBound);
  torch::NoGradGuard no_grad;  // inference: the same values without autograd
  EXPECT_TRUE(torch::equal(QuickGelu(x), y));
}

// exp(-1.702 x) overflowing (x -60, -100: ATen's exp gives inf, sigmoid 0) and underflowing
// (x 55, 100), zero, and infinities (-inf * 0 is NaN in both).
TEST_F(FusedKernels, QuickGeluExtremeValues) {
  const float inf = std::numeric_limits<float>::infinity();
  const auto x = torch::tensor({-100.f, -60.f, -52.f, -51.f, -1.25f, 0.f, 55.f, 100.f, inf, -inf});
  const auto g = torch::ones_like(x);
  auto [y, gx] = ValueAndGrad(QuickGelu, x, g);
  auto [y_ref, gx_ref] = ValueAndGrad(QuickGeluUnfused, x, g);
  const auto finite = y_ref.isfinite();
  EXPECT_TRUE(torch::equal(finite, y.isfinite()));
  EXPECT_LT(ElementwiseRelativeError(y.masked_select(finite), y_ref.masked_select(finite)), kBound);
  const auto gfinite = gx_ref.isfinite();
  EXPECT_TRUE(torch::equal(gfinite, gx.isfinite()));
  EXPECT_LT((gx - gx_ref).masked_select(gfinite).abs().max().item<double>(), 1e-6);
}

TEST_F(FusedKernels, BoundCatchesASlightlyWrongQuickGelu) {
  const auto x = GeluInput();
  const auto g = torch::randn_like(x);
  auto [y, gx] = ValueAndGrad(QuickGelu, x, g);
  auto alpha_off = [](double rel) {
    return [rel](const torch::Tensor& t) { return t * torch::sigmoid(1.702 * (1 + rel) * t); };
  };
  auto [y_bad, unused] = ValueAndGrad(alpha_off(1e-5), x, g);
  EXPECT_GT(ElementwiseRelativeError(y, y_bad), kBound);
  auto [unused2, gx_bad] = ValueAndGrad(alpha_off(1e-4), x, g);
  EXPECT_GT(RelativeError(gx, gx_bad), kBound);
}

TEST_F(FusedKernels, QuickGeluNonContiguousInput) {
  const auto x = torch::randn({64, 130}).t();  // transposed view
  const auto g = torch::randn_like(x);
  auto [y, gx] = ValueAndGrad(QuickGelu, x, g);
  auto [y_ref, gx_ref] = ValueAndGrad(QuickGeluUnfused, x, g);
  EXPECT_LT(RelativeError(y, y_ref), kBound);
  EXPECT_LT(RelativeError(gx, gx_ref), kBound);
}

TEST_F(FusedKernels, OtherDtypesAndSwitchOffRunTheUnfusedOps) {
  const auto x = torch::randn({5, 33}, torch::kDouble);
  EXPECT_TRUE(torch::equal(QuickGelu(x), QuickGeluUnfused(x)));
  const auto qkv = torch::randn({2, 5, 3 * 8}, torch::kDouble);
  EXPECT_TRUE(torch::equal(Attention(qkv, 2, {}), AttentionUnfused(qkv, 2, {})));
  SetFusedCpuKernels(false);
  const auto f = torch::randn({5, 33});
  EXPECT_TRUE(torch::equal(QuickGelu(f), QuickGeluUnfused(f)));
  const auto fqkv = torch::randn({2, 5, 3 * 8});
  EXPECT_TRUE(torch::equal(Attention(fqkv, 2, {}), AttentionUnfused(fqkv, 2, {})));
}

TEST(SmallGemm, MatchesMmWithStridedAAndTails) {
  torch::manual_seed(3);
  for (const auto& [m, k, n] : {std::array<int64_t, 3>{129, 64, 144}, {7, 129, 64}, {1, 3, 16}}) {
    const auto a = torch::randn({k, m});  // used transposed: A(i, p) = a[p][i]
    const auto b = torch::randn({k, n + 5});
    auto c = torch::full({m, n + 3}, 7.0f);
    SmallGemm({a.data_ptr<float>(), 1, m}, m, k, b.data_ptr<float>(), n + 5, n, c.data_ptr<float>(),
              n + 3);
    const auto ref = torch::mm(a.t(), b.slice(1, 0, n));
    EXPECT_LT(RelativeError(c.slice(1, 0, n), ref), kBound) << m << "x" << k << "x" << n;
    EXPECT_TRUE(torch::equal(c.slice(1, n), torch::full({m, 3}, 7.0f)));  // beyond n untouched
  }
}

// qkv (B, L, 3W) like an input projection's output, heads of width hd: the fused attention against
// nn.MultiheadAttention's ops, output and qkv's gradient; hd 64 (rows read in place) and 24
// (padded copies), the ViT's 129 tokens and the text's causal 77.
void CheckAttention(int64_t l, int64_t heads, int64_t hd, bool causal) {
  const auto qkv = torch::randn({3, l, 3 * heads * hd}) * 3;
  const auto g = torch::randn({3, l, heads * hd});
  torch::Tensor mask;
  if (causal) mask = torch::full({l, l}, -std::numeric_limits<float>::infinity()).triu(1);
  auto fused = [&](const torch::Tensor& t) { return Attention(t, heads, mask); };
  auto unfused = [&](const torch::Tensor& t) { return AttentionUnfused(t, heads, mask); };
  auto [o, gx] = ValueAndGrad(fused, qkv, g);
  auto [o_ref, gx_ref] = ValueAndGrad(unfused, qkv, g);
  const std::string what = "L " + std::to_string(l) + " heads " + std::to_string(heads) + " hd " +
                           std::to_string(hd) + (causal ? " causal" : "");
  const bool fused_path = Node(qkv, fused).find("AttentionFunction") != std::string::npos;
  EXPECT_EQ(fused_path, l <= 256) << what;
  EXPECT_LT(RelativeError(o, o_ref), kBound) << what;
  for (int part = 0; part < 3; ++part) {  // q, k, v separately: each must be right
    const int64_t w = heads * hd;
    EXPECT_LT(RelativeError(gx.slice(2, part * w, (part + 1) * w),
                            gx_ref.slice(2, part * w, (part + 1) * w)),
              kBound)
        << what << " part " << part;
  }
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(Attention(qkv, heads, mask), o)) << what;
}

TEST_F(FusedKernels, AttentionMatchesUnfused) {
  CheckAttention(129, 12, 64, false);
  CheckAttention(77, 8, 64, true);
  CheckAttention(19, 2, 24, false);
  CheckAttention(5, 3, 24, true);
  CheckAttention(256, 2, 64, false);  // the longest fused
  CheckAttention(300, 2, 16, false);  // unfused beyond
}

TEST_F(FusedKernels, BoundCatchesASlightlyWrongAttention) {
  const auto qkv = torch::randn({2, 129, 3 * 4 * 64}) * 3;
  const auto g = torch::randn({2, 129, 4 * 64});
  auto [o, gx] = ValueAndGrad([](const torch::Tensor& t) { return Attention(t, 4, {}); }, qkv, g);
  // One head's scores 1e-5 too large (q scaled): output and gradient move beyond the bound.
  auto wrong = [](const torch::Tensor& t) {
    auto q_scale = torch::ones({1, 1, 3 * 4 * 64});
    q_scale.slice(2, 0, 64).fill_(1 + 1e-5);
    return AttentionUnfused(t * q_scale, 4, {});
  };
  auto [o_bad, gx_bad] = ValueAndGrad(wrong, qkv, g);
  EXPECT_GT(RelativeError(o, o_bad), kBound);
  EXPECT_GT(RelativeError(gx, gx_bad), kBound);
}

// A whole residual block (attention with and without the causal mask, MLP) with the fused
// kernels against the same block with them off: output and every parameter's gradient.
TEST_F(FusedKernels, ResidualBlockMatchesUnfused) {
  for (const bool causal : {false, true}) {
    ResidualAttentionBlock block(64, 4);  // head width 16: scale 1/4
    const int64_t l = causal ? 77 : 129;
    const auto x = torch::randn({3, l, 64});
    const auto g = torch::randn({3, l, 64});
    torch::Tensor mask;
    if (causal) mask = torch::full({l, l}, -std::numeric_limits<float>::infinity()).triu(1);
    std::vector<torch::Tensor> grads[2], outs(2);
    for (const bool fused : {true, false}) {
      SetFusedCpuKernels(fused);
      block->zero_grad();
      auto y = block(x, mask);
      (y * g).sum().backward();
      outs[fused] = y.detach();
      for (const auto& p : block->parameters()) grads[fused].push_back(p.grad().clone());
    }
    EXPECT_LT(RelativeError(outs[1], outs[0]), kBound);
    for (size_t i = 0; i < grads[0].size(); ++i) {
      EXPECT_LT(RelativeError(grads[1][i], grads[0][i]), kBound) << "parameter " << i;
    }
  }
}

// The linear layer (in oneDNN where built with it) against LibTorch's: output and the gradients of
// input, weight and bias to 1e-6, for a 3-d input and a 2-d one without bias (130 outputs: parts
// of 16 columns and a shorter last one).
TEST_F(FusedKernels, LinearMatchesUnfused) {
  if (!LinearRunsOneDnn()) GTEST_SKIP() << "built without oneDNN (libdnnl-dev): nothing to compare";
  for (const bool bias : {true, false}) {
    const auto x0 = bias ? torch::randn({3, 129, 192}) : torch::randn({37, 300});
    const int64_t n = bias ? 576 : 130, k = x0.size(-1);
    const auto w0 = torch::randn({n, k}) / std::sqrt(static_cast<double>(k));
    const auto b0 = bias ? torch::randn({n}) : torch::Tensor();
    auto out_sizes = x0.sizes().vec();
    out_sizes.back() = n;
    const auto g = torch::randn(out_sizes);
    torch::Tensor outs[2], gx[2], gw[2], gb[2];
    for (const bool fused : {true, false}) {
      auto x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
      auto b = bias ? b0.clone().requires_grad_(true) : b0;
      auto y = fused ? Linear(x, w, b) : LinearUnfused(x, w, b);
      if (fused) {  // oneDNN's backward, not LibTorch's AddmmBackward0/MmBackward0
        EXPECT_NE(y.grad_fn()->name().find("Linear"), std::string::npos) << y.grad_fn()->name();
      }
      (y * g).sum().backward();
      outs[fused] = y.detach();
      gx[fused] = x.grad();
      gw[fused] = w.grad();
      if (bias) gb[fused] = b.grad();
    }
    EXPECT_LT(RelativeError(outs[1], outs[0]), kBound) << "output, bias " << bias;
    EXPECT_LT(RelativeError(gx[1], gx[0]), kBound) << "input gradient, bias " << bias;
    EXPECT_LT(RelativeError(gw[1], gw[0]), kBound) << "weight gradient, bias " << bias;
    if (bias) EXPECT_LT(RelativeError(gb[1], gb[0]), kBound) << "bias gradient";
  }
  // Without gradients, and for other dtypes, it is LibTorch's linear.
  torch::NoGradGuard no_grad;
  const auto xd = torch::randn({4, 8}, torch::kDouble), wd = torch::randn({3, 8}, torch::kDouble);
  EXPECT_TRUE(torch::equal(Linear(xd, wd, {}), LinearUnfused(xd, wd, {})));
}

// A block's output at one token per batch row (training's last block) against the whole block's
// output at those rows: values and every gradient (parameters and input) to 1e-6, with and
// without the causal mask, with the fused kernels on and off.
TEST_F(FusedKernels, BlockRowsMatchTheWholeBlock) {
  for (const bool fused : {true, false}) {
    SetFusedCpuKernels(fused);
    for (const bool causal : {false, true}) {
      ResidualAttentionBlock block(64, 4);
      const int64_t b = 5, l = causal ? 77 : 129;
      const auto x0 = torch::randn({b, l, 64});
      const auto rows =
          causal ? torch::randint(0, l, {b}, torch::kLong) : torch::zeros({b}, torch::kLong);
      const auto g = torch::randn({b, 64});
      torch::Tensor mask;
      if (causal) mask = torch::full({l, l}, -std::numeric_limits<float>::infinity()).triu(1);
      torch::Tensor outs[2], gx[2];
      std::vector<torch::Tensor> grads[2];
      for (const bool only_rows : {true, false}) {
        block->zero_grad();
        auto x = x0.clone().requires_grad_(true);
        torch::Tensor y;
        if (only_rows) {
          y = block->ForwardRows(x, rows, mask);
        } else {
          auto all = block(x, mask);
          y = all.index({torch::arange(b), rows});
        }
        (y * g).sum().backward();
        outs[only_rows] = y.detach();
        gx[only_rows] = x.grad();
        for (const auto& p : block->parameters()) grads[only_rows].push_back(p.grad().clone());
      }
      const std::string what =
          std::string(fused ? "fused" : "unfused") + (causal ? ", causal" : "");
      EXPECT_LT(RelativeError(outs[1], outs[0]), kBound) << what;
      EXPECT_LT(RelativeError(gx[1], gx[0]), kBound) << what;
      for (size_t i = 0; i < grads[0].size(); ++i) {
        EXPECT_LT(RelativeError(grads[1][i], grads[0][i]), kBound) << what << ", parameter " << i;
      }
    }
  }
}

// Signals arriving while the linear layer's backward runs (oneDNN 2.6's JIT sgemm points the stack
// register into the heap while it runs, so a handler run there would write its frame into the
// heap: oneDNN issue #4845): the stop signals of `reid train` arrive at any time. A thread sends
// the main thread and the process a signal with a handler every 20 us during 2 s of backward
// passes on 2 threads; a corrupted heap aborts the test (glibc's checks), a sound one passes.
std::atomic<int64_t> g_signals_handled{0};
void CountSignal(int) { g_signals_handled.fetch_add(1, std::memory_order_relaxed); }

TEST_F(FusedKernels, LinearBackwardSurvivesSignals) {
  if (!LinearRunsOneDnn()) GTEST_SKIP() << "built without oneDNN (libdnnl-dev): nothing to test";
  struct sigaction action = {}, old = {};
  action.sa_handler = CountSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ASSERT_EQ(sigaction(SIGUSR2, &action, &old), 0);
  const pthread_t main_thread = pthread_self();
  std::atomic<bool> done{false};
  std::thread sender([&] {
    for (int64_t i = 0; !done.load(); ++i) {
      if (i % 2 == 0)
        pthread_kill(main_thread, SIGUSR2);
      else
        kill(getpid(), SIGUSR2);
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  });
  const auto x = torch::randn({1032, 768}, torch::requires_grad());
  const auto w = (torch::randn({768, 768}) / 28).requires_grad_(true);
  const auto b = torch::zeros({768}, torch::requires_grad());
  const auto g = torch::randn({1032, 768});
  const auto start = std::chrono::steady_clock::now();
  int passes = 0;
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(2)) {
    (Linear(x, w, b) * g).sum().backward();
    ++passes;
  }
  done = true;
  sender.join();
  sigaction(SIGUSR2, &old, nullptr);
  std::vector<std::unique_ptr<float[]>> heap;  // the heap still allocates and frees
  for (int i = 0; i < 1000; ++i) heap.emplace_back(new float[1 + i * 37]);
  heap.clear();
  EXPECT_GT(passes, 10);
  EXPECT_GT(g_signals_handled.load(), 1000) << "the handler ran " << g_signals_handled.load();
  EXPECT_TRUE(torch::isfinite(w.grad()).all().item<bool>());
}

}  // namespace
}  // namespace reid::model
