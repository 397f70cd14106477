// One-pass optimiser updates for float32 CPU parameters.
//
//   glow_adamax   Glow's Adamax (visionflows.training.optim.GlowAdamax), for every element:
//                   m <- b1*m + (1 - b1)*g;  u <- max(b2*u, |g|);  p <- p - alpha * m / (u + eps)
//                 with alpha = lr * sqrt(1 - b2^t) / (1 - b1^t) computed by the caller.
//
// The PyTorch formulation reads and writes the parameter, its gradient and both moments in seven elementwise
// passes; here it is one (the four arrays read once, three written once), which matters because a level's
// parameters (tens of MB with the moments) come from main memory every step.
#include <cmath>
#include <omp.h>

extern "C" {

int optim_abi_version() { return 1; }

void glow_adamax(float* p, const float* g, float* m, float* u, long n, float b1, float b2, float alpha, float eps,
                 int nthreads) {
  const float c1 = 1.0f - b1;
  const int nt = n >= (1L << 15) ? nthreads : 1;  // small tensors: a parallel region costs more than the work
#pragma omp parallel for num_threads(nt) schedule(static)
  for (long i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = m[i] * b1 + c1 * gi;
    const float a = u[i] * b2, b = std::fabs(gi);
    const float ui = (a >= b || a != a) ? a : b;  // max that propagates NaN, as torch.maximum
    m[i] = mi;
    u[i] = ui;
    p[i] -= alpha * (mi / (ui + eps));
  }
}

}  // extern "C"
