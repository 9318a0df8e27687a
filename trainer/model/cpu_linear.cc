// The linear layer of training whose products run in oneDNN's sgemm where LibTorch was built
// against the same oneDNN library (Debian's is): on this project's Zen 4 machine the forward's
// product is 11-17% faster than OpenBLAS (LibTorch's addmm) at the ViT's shapes, the backward's two
// (the input's and the weight's gradient) 4-27%. Inference keeps LibTorch's linear: an item's
// features must not depend on the batch it is in, and LibTorch's are the reference's.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "trainer/model/cpu_kernels.h"
#include "trainer/model/cpu_kernels_internal.h"

#ifdef REID_HAVE_DNNL
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <signal.h>
#endif

namespace reid::model {
namespace {

using internal::TakesFusedPath;

#ifdef REID_HAVE_DNNL

// The signals whose handlers may run at any time (all but those a fault raises in its own thread).
sigset_t AsynchronousSignals() {
  sigset_t set;
  sigfillset(&set);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS}) sigdelset(&set, sig);
  return set;
}

// oneDNN 2.6's JIT sgemm points the stack register into heap memory while it runs (oneDNN issue
// #4845, fixed in 3.11.2): a signal handler run on one of its threads then writes its frame into
// the heap, which glibc later finds corrupted. Training installs handlers (SIGINT, SIGTERM, SIGHUP,
// SIGUSR1) whose signals come at any time, so no thread running its code may run one: the calling
// thread blocks asynchronous signals for the products' duration, and the other threads of its
// OpenMP team block them for good. A signal sent meanwhile goes to another thread or waits for the
// end of the products (milliseconds). FusedKernels.LinearBackwardSurvivesSignals.
//
// The products are split by output columns over the team, each part one single-threaded sgemm
// (oneDNN runs single-threaded inside a parallel region): measured on this project's 2-core Zen 4
// VM at the ViT's shapes (1,032 rows), the forward's four products at 206-216 GFLOP/s against
// OpenBLAS's 177-193 (LibTorch's addmm) and oneDNN's own 2-thread split's 175-209; the backward's
// pairs as before (211-223), c_proj's 200 -> 218. fn(t, threads) runs on each thread t.
template <typename Fn>
void OnTeam(const Fn& fn) {
  static const sigset_t kAsynchronous = AsynchronousSignals();
  // LibTorch passes its own thread count to each parallel region; the calling thread's OpenMP
  // count may differ (e.g. autograd's threads).
  const int threads = at::get_num_threads();
  if (omp_get_max_threads() != threads) omp_set_num_threads(threads);  // for a team of one too
  sigset_t saved;
  pthread_sigmask(SIG_BLOCK, &kAsynchronous, &saved);
  if (threads == 1) {
    fn(0, 1);
  } else {
#pragma omp parallel num_threads(threads)
    {
      thread_local bool blocked = false;
      const int t = omp_get_thread_num();
      if (t != 0 && !blocked) {
        pthread_sigmask(SIG_BLOCK, &kAsynchronous, nullptr);
        blocked = true;
      }
      omp_set_num_threads(1);  // this thread's nested regions (oneDNN's): itself alone
      fn(t, omp_get_num_threads());
    }
  }
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
}

// Part t of `parts` of n columns: [*c0, *c1), parts of a multiple of 16 columns (whole vectors).
void ColumnPart(int64_t n, int t, int parts, int64_t* c0, int64_t* c1) {
  const int64_t width = (n + parts - 1) / parts;
  const int64_t chunk = (width + 15) / 16 * 16;
  *c0 = std::min(n, t * chunk);
  *c1 = std::min(n, *c0 + chunk);
}

// Columns [c0, c1) of C (m x ldc, row-major) = op(A) op(B), as BLAS's sgemm on row-major operands,
// where b points at B's columns c0.. (op(B) (k x ldc)): one thread.
void SgemmColumns(char ta, char tb, int64_t m, int64_t c0, int64_t c1, int64_t k, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  if (c1 <= c0) return;
  const dnnl_status_t status =
      dnnl_sgemm(ta, tb, m, c1 - c0, k, 1.0f, a, lda, b, ldb, 0.0f, c + c0, ldc);
  CHECK_EQ(status, dnnl_success) << "dnnl_sgemm " << ta << tb << " " << m << "x" << c1 - c0 << "x"
                                 << k;
}

// y = x w^T (+ b): x (..., K), w (N, K), b (N) or undefined.
torch::Tensor LinearForward(const torch::Tensor& x0, const torch::Tensor& w0,
                            const torch::Tensor& b0) {
  const torch::Tensor x = x0.contiguous(), w = w0.contiguous();
  const torch::Tensor b = b0.defined() ? b0.contiguous() : b0;
  const int64_t n = w.size(0), k = w.size(1), m = x.numel() / k;
  auto sizes = x.sizes().vec();
  sizes.back() = n;
  torch::Tensor y = torch::empty(sizes, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  OnTeam([&](int t, int threads) {
    int64_t c0 = 0, c1 = 0;
    ColumnPart(n, t, threads, &c0, &c1);
    // y[:, c0:c1] = x (M, K) w[c0:c1]^T (K, c1 - c0), then the bias added (addmm's order: the
    // product, then the bias).
    SgemmColumns('N', 'T', m, c0, c1, k, xp, k, wp + c0 * k, k, yp, n);
    if (bp == nullptr) return;
    for (int64_t i = 0; i < m; ++i) {
      float* row = yp + i * n;
      for (int64_t j = c0; j < c1; ++j) row[j] += bp[j];
    }
  });
  return y;
}

// The gradients of y = x w^T (+ b) for the upstream gradient g: {gx, gw, gb}, each only where
// wanted.
torch::autograd::variable_list LinearBackward(const torch::Tensor& x0, const torch::Tensor& w0,
                                              const torch::Tensor& g0, bool want_x, bool want_w,
                                              bool want_b) {
  const torch::Tensor w = w0.contiguous();
  const int64_t n = w.size(0), k = w.size(1), m = x0.numel() / k;
  const torch::Tensor g = g0.contiguous();  // (M, N) as rows
  const torch::Tensor x = want_w ? x0.contiguous() : x0;
  torch::Tensor gx, gw, gb;
  if (want_x) gx = torch::empty(x0.sizes(), x0.options());  // (M, K) = g (M, N) w (N, K)
  if (want_w) gw = torch::empty({n, k}, w.options());       // (N, K) = g^T (N, M) x (M, K)
  const float* gp = g.data_ptr<float>();
  OnTeam([&](int t, int threads) {
    int64_t c0 = 0, c1 = 0;  // columns of both gradients (K)
    ColumnPart(k, t, threads, &c0, &c1);
    if (want_x)
      SgemmColumns('N', 'N', m, c0, c1, n, gp, n, w.data_ptr<float>() + c0, k, gx.data_ptr<float>(),
                   k);
    if (want_w)
      SgemmColumns('T', 'N', n, c0, c1, m, gp, n, x.data_ptr<float>() + c0, k, gw.data_ptr<float>(),
                   k);
  });
  if (want_b) gb = g.view({m, n}).sum(0);
  return {gx, gw, gb};
}

class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& w, const torch::Tensor& b) {
    ctx->save_for_backward({x, w});
    return LinearForward(x, w, b);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    return LinearBackward(saved[0], saved[1], grads[0], ctx->needs_input_grad(0),
                          ctx->needs_input_grad(1), ctx->needs_input_grad(2));
  }
};

// The same without a bias (an autograd Function takes no undefined inputs).
class LinearNoBiasFunction : public torch::autograd::Function<LinearNoBiasFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& w) {
    ctx->save_for_backward({x, w});
    return LinearForward(x, w, torch::Tensor());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto g = LinearBackward(saved[0], saved[1], grads[0], ctx->needs_input_grad(0),
                            ctx->needs_input_grad(1), false);
    return {g[0], g[1]};
  }
};

#endif  // REID_HAVE_DNNL

}  // namespace

bool LinearRunsOneDnn() {
#ifdef REID_HAVE_DNNL
  return true;
#else
  return false;
#endif
}

torch::Tensor LinearUnfused(const torch::Tensor& x, const torch::Tensor& w,
                            const torch::Tensor& b) {
  return torch::nn::functional::linear(x, w, b);
}

torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
#ifdef REID_HAVE_DNNL
  if (torch::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad()) &&
      TakesFusedPath(x) && TakesFusedPath(w) && (!b.defined() || TakesFusedPath(b)) &&
      x.dim() >= 1 && w.dim() == 2 && x.size(-1) == w.size(1) && x.numel() > 0) {
    return b.defined() ? LinearFunction::apply(x, w, b) : LinearNoBiasFunction::apply(x, w);
  }
#endif
  return LinearUnfused(x, w, b);
}

}  // namespace reid::model
