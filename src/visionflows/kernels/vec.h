// Vector helpers shared by the native kernels (included by noiseflow.cpp, srgb.cpp and winograd.cpp): GCC/Clang
// vector extensions over VL floats, one native register (AVX-512: 16, AVX/AVX2: 8, SSE/NEON: 4), tail-safe loads
// and stores, and branch-free exp / tanh / log / sqrt that vectorise.
//
// VL is the register width on purpose: vectors wider than the hardware's are split by GCC for arithmetic, but their
// comparisons and selects (relu, masks, the clamps of exp) are expanded lane by lane into scalar code, which made
// the kernels 3-5x slower on AVX2 machines when VL was 16 everywhere.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#include <omp.h>
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif
typedef float vf __attribute__((vector_size(VL * 4)));
typedef float vfu __attribute__((vector_size(VL * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(VL * 4)));

namespace {


inline vf ldv(const float* p) { return *(const vfu*)p; }
inline void stv(float* p, vf v) { *(vfu*)p = v; }
inline vf splat(float a) { return vf{} + a; }
inline vi lanes() {
  vi l;
  for (int t = 0; t < VL; ++t) l[t] = t;
  return l;
}
inline vf sel(vi m, vf a, vf b) { return m ? a : b; }
inline vf sel(vi m, vf a, float b) { return m ? a : splat(b); }
inline vf relu(vf a) { return sel(a < 0.0f, splat(0.0f), a); }  // NaN propagates like torch.relu
typedef double vd __attribute__((vector_size(VL * 4)));  // VL / 2 doubles
// the lanes summed in double, as a tree (a short dependency chain)
inline double hsumd(vf v) {
#if VL == 16
  vd a = __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), vd) +
         __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), vd);
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
#elif VL == 8
  vd a = __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3), vd) +
         __builtin_convertvector(__builtin_shufflevector(v, v, 4, 5, 6, 7), vd);
  return (a[0] + a[2]) + (a[1] + a[3]);
#else
  double s = 0.0;
  for (int t = 0; t < VL; ++t) s += (double)v[t];
  return s;
#endif
}
// n valid values at p (n <= VL); the rest read as zero / left untouched.
inline vf ld_tail(const float* p, int n) {
  if (n >= VL) return ldv(p);
  float tmp[VL] = {0};
  std::memcpy(tmp, p, sizeof(float) * n);
  return ldv(tmp);
}
inline void st_tail(float* p, vf v, int n) {
  if (n >= VL) {
    stv(p, v);
    return;
  }
  float tmp[VL];
  stv(tmp, v);
  std::memcpy(p, tmp, sizeof(float) * n);
}

// correctly rounded (IEEE) square root, lane by lane: the same values as std::sqrt and torch.sqrt
inline vf v_sqrt(vf x) {
#if VL == 16 && defined(__AVX512F__)
  return (vf)_mm512_sqrt_ps((__m512)x);
#elif VL == 8 && defined(__AVX__)
  return (vf)_mm256_sqrt_ps((__m256)x);
#else
  vf r;
  for (int t = 0; t < VL; ++t) r[t] = std::sqrt(x[t]);
  return r;
#endif
}

// Cephes-style exp/tanh/log (about 1 ulp), branch-free so they vectorise.
inline vf v_floor(vf x) {
  vi ti = __builtin_convertvector(x, vi);
  vf tf = __builtin_convertvector(ti, vf);
  return tf - sel(tf > x, splat(1.0f), splat(0.0f));
}
inline vf v_exp(vf x) {
  x = sel(x > 88.37f, splat(88.37f), x);
  x = sel(x < -87.33f, splat(-87.33f), x);
  vf n = v_floor(x * 1.44269504088896341f + 0.5f);
  x = x - n * 0.693359375f;
  x = x - n * -2.12194440e-4f;
  vf z = x * x;
  vf y = ((((1.9875691500E-4f * x + 1.3981999507E-3f) * x + 8.3334519073E-3f) * x + 4.1665795894E-2f) * x +
          1.6666665459E-1f) * x + 5.0000001201E-1f;
  y = y * z + x + 1.0f;
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  return y * (vf)e;
}
inline vf v_tanh(vf x) {
  vf ax = sel(x < 0.0f, -x, x);
  vf axc = sel(ax > 9.5f, splat(9.5f), ax);
  vf big = 1.0f - 2.0f / (v_exp(axc + axc) + 1.0f);
  big = sel(x < 0.0f, -big, big);
  vf z = x * x;
  vf small = ((((-5.70498872745E-3f * z + 2.06390887954E-2f) * z - 5.37397155531E-2f) * z + 1.33314422036E-1f) * z -
              3.33332819422E-1f) * z * x + x;
  return sel(ax > 0.625f, big, small);
}
inline vf v_log(vf x) {  // natural log; log(0) = -inf, negative or NaN -> NaN, +inf -> +inf
  vi bits = (vi)x;
  vi e = ((bits >> 23) & 0xff) - 126;
  vf m = (vf)((bits & 0x807fffff) | 0x3f000000);  // [0.5, 1)
  vi small = m < 0.707106781186547524f;
  vf ef = __builtin_convertvector(e, vf) - sel(small, splat(1.0f), splat(0.0f));
  m = sel(small, m + m, m) - 1.0f;
  vf z = m * m;
  vf y = (((((((7.0376836292E-2f * m - 1.1514610310E-1f) * m + 1.1676998740E-1f) * m - 1.2420140846E-1f) * m +
             1.4249322787E-1f) * m - 1.6668057665E-1f) * m + 2.0000714765E-1f) * m - 2.4999993993E-1f) * m +
          3.3333331174E-1f;
  y = y * m * z;
  y = y + ef * -2.12194440e-4f;
  y = y - 0.5f * z;
  vf r = m + y + ef * 0.693359375f;
  r = sel(x == 0.0f, splat(-INFINITY), r);
  r = sel(x == INFINITY, splat(INFINITY), r);
  r = sel(x < 0.0f, splat(NAN), r);
  return sel(x == x, r, x);
}

}  // namespace
