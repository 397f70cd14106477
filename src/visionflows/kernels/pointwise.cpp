// Epilogues of 1x1 convolutions on channels-last rows (the coupling networks' pointwise layers), float32.
//
// A 1x1 convolution on [B, H, W, C] is a matrix product on [N = B*H*W, C] rows (done by the Python side with
// torch.mm). What follows it is one pass here instead of three or four elementwise kernels:
//
//   pw_epilogue       Y [N, C] in place: Y = relu?(Y + bias + skip)          (bias [C], skip [N, C], both optional)
//   pw_epilogue_adj   dZ = relu?'(Y) * dY and dbias = sum over rows of dZ    (Y: the epilogue's output, for the
//                                                                            ReLU mask Y > 0; dbias optional)
//
// Rows are split between threads; the bias gradient is summed per thread in double into scratch [nthreads, C]
// and then across threads in a fixed order (the result does not depend on timing).
#include <omp.h>

extern "C" {

int pw_abi_version() { return 1; }

void pw_epilogue(float* Y, const float* bias, const float* skip, int relu, long N, int C, int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (long n = 0; n < N; ++n) {
    float* y = Y + n * C;
    const float* s = skip ? skip + n * C : nullptr;
#pragma omp simd
    for (int c = 0; c < C; ++c) {
      float v = y[c] + (bias ? bias[c] : 0.0f) + (s ? s[c] : 0.0f);
      y[c] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
  }
}

void pw_epilogue_adj(const float* dY, const float* Y, int relu, float* dZ, float* dbias, double* scratch, long N,
                     int C, int nthreads) {
  int used = 1;
#pragma omp parallel num_threads(nthreads)
  {
    const int nt = omp_get_num_threads(), id = omp_get_thread_num();
#pragma omp single
    used = nt;
    double* part = dbias ? scratch + (long)id * C : nullptr;
    if (part)
      for (int c = 0; c < C; ++c) part[c] = 0.0;
    const long n0 = N * id / nt, n1 = N * (id + 1) / nt;
    for (long n = n0; n < n1; ++n) {
      const float* dy = dY + n * C;
      const float* y = Y + n * C;
      float* dz = dZ + n * C;
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        const float g = (relu && !(y[c] > 0.0f)) ? 0.0f : dy[c];
        dz[c] = g;
        if (part) part[c] += g;
      }
    }
  }
  if (dbias)
    for (int c = 0; c < C; ++c) {
      double acc = 0.0;
      for (int t = 0; t < used; ++t) acc += scratch[(long)t * C + c];
      dbias[c] = (float)acc;
    }
}

}  // extern "C"
