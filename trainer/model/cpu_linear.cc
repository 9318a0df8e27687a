// The linear layer whose backward products run in oneDNN's sgemm where LibTorch was built against
// the same oneDNN library (Debian's is): on this project's Zen 4 machine it makes the two products
// of a linear layer's backward (the input's and the weight's gradient) 4-27% faster than OpenBLAS
// at the ViT's shapes. The forward stays LibTorch's addmm, bit for bit.
#include <ATen/Parallel.h>

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

// C (m x n, row-major, ldc = n) = op(A) op(B), as BLAS's sgemm on row-major operands.
//
// oneDNN 2.6's JIT sgemm points the stack register into heap memory while it runs (oneDNN issue
// #4845, fixed in 3.11.2): a signal handler run on one of its threads then writes its frame into
// the heap, which glibc later finds corrupted. Training installs handlers (SIGINT, SIGTERM, SIGHUP,
// SIGUSR1) whose signals come at any time, so no thread of the call may run one: the calling thread
// blocks asynchronous signals for the call's duration, and the other threads of its OpenMP team
// (which run the JIT code too) block them for good. A signal sent meanwhile goes to another thread
// or waits for the end of the call (milliseconds). FusedKernels.LinearBackwardSurvivesSignals.
void Sgemm(char ta, char tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
           const float* b, int64_t ldb, float* c) {
  static const sigset_t kAsynchronous = AsynchronousSignals();
  // oneDNN runs on OpenMP's team of the calling thread; LibTorch passes its own thread count to
  // each parallel region instead, so the calling thread's may differ (e.g. autograd's threads).
  const int threads = at::get_num_threads();
  if (omp_get_max_threads() != threads) omp_set_num_threads(threads);
  sigset_t saved;
  pthread_sigmask(SIG_BLOCK, &kAsynchronous, &saved);
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    {
      thread_local bool blocked = false;
      if (omp_get_thread_num() != 0 && !blocked) {
        pthread_sigmask(SIG_BLOCK, &kAsynchronous, nullptr);
        blocked = true;
      }
    }
  }
  const dnnl_status_t status = dnnl_sgemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  CHECK_EQ(status, dnnl_success) << "dnnl_sgemm " << ta << tb << " " << m << "x" << n << "x" << k;
}

// The gradients of y = x w^T (+ b) for the upstream gradient g: {gx, gw, gb}, each only where
// wanted.
torch::autograd::variable_list LinearBackward(const torch::Tensor& x, const torch::Tensor& w0,
                                              const torch::Tensor& g0, bool want_x, bool want_w,
                                              bool want_b) {
  const torch::Tensor w = w0.contiguous();
  const int64_t n = w.size(0), k = w.size(1), m = x.numel() / k;
  const torch::Tensor g = g0.contiguous();  // (M, N) as rows
  torch::Tensor gx, gw, gb;
  if (want_x) {
    gx = torch::empty(x.sizes(), x.options());  // (M, K) = g (M, N) w (N, K)
    Sgemm('N', 'N', m, k, n, g.data_ptr<float>(), n, w.data_ptr<float>(), k, gx.data_ptr<float>());
  }
  if (want_w) {
    const torch::Tensor xc = x.contiguous();
    gw = torch::empty({n, k}, w.options());  // (N, K) = g^T (N, M) x (M, K)
    Sgemm('T', 'N', n, k, m, g.data_ptr<float>(), n, xc.data_ptr<float>(), k, gw.data_ptr<float>());
  }
  if (want_b) gb = g.view({m, n}).sum(0);
  return {gx, gw, gb};
}

class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& w, const torch::Tensor& b) {
    ctx->save_for_backward({x, w});
    return torch::nn::functional::linear(x, w, b);
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
    return torch::nn::functional::linear(x, w);
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
