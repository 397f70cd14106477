// Fused CPU kernels of Noise Flow (float32, NCHW, 4 channels, coupling split 2 | 2, coupling width WD).
//
// The Python side (visionflows/noise/fused.py, noise/kernel_ops.py) builds the parameters; these functions only compute.
// Conventions (the same as visionflows.noise.layers, noise -> latent is "forward"):
//   unc step   y = M x (per pixel, M [4][4]), then the affine coupling on y = [ya | yb]:
//              h = net(ya) = [shift(2), raw(2)], l = lam * tanh(raw), zb = yb * exp(l) + shift, logdet += sum(l)
//   net        a1 = conv3x3(ya; w1 [WD][2][3][3], b1) -> BN1 -> relu -> a2 = w2 [WD][WD] r1 + b2 -> BN2 -> relu
//              -> h = conv3x3(r2; w3 [4][WD][3][3]) + bm [4][H][W]   (gain and edge ring folded in by Python)
//   sdn        z = x / s, s = sqrt(a_bc * y + c_bc) (per sample b and channel c), logdet -= sum(log s)
//   gain       z = x / g_b (per sample), logdet -= n log|g_b| (the log-det is added by Python)
// Eval mode: BN is folded into w1/b1, w2/b2 by Python (nf_eval). Training mode: batch statistics (two-pass mean and
// variance in double, like PyTorch), forward nf_unc_train_fwd and backward nf_unc_train_bwd.
//
// Packed parameters of one unc step (float): M[16] w1[WD*18] b1[WD] w2[WD*WD] b2[WD] w3[4*WD*9] lam[1] bm[4*H*Wr]
// with Wr = W rounded up to VL (bm is zero beyond W). Gradients come back in the same layout (bm unpadded: [4*H*W]).
//
// Vectorisation: GCC/Clang vector extensions over blocks of VL pixels of one row (one register: 16 with AVX-512,
// 8 with AVX2, 4 otherwise; vec.h). Internal activations live in zero-padded planes ((H+2) x P, P = Wr + 2) so 3x3
// convolutions need no bounds checks; user tensors are read and written with tail-safe loads and stores.
#include "vec.h"

namespace {

// ------------------------------------------------------------------------------------------------ geometry
struct Geo {
  int H, W, nb, Wr, P;
  int64_t S;   // padded plane size (H+2)*P
  int64_t HW;  // H*W (user planes)
  int64_t HWr; // H*Wr (internal unpadded planes)
  Geo(int h, int w) : H(h), W(w) {
    nb = (w + VL - 1) / VL;
    Wr = nb * VL;
    P = Wr + 2;
    S = (int64_t)(h + 2) * P;
    HW = (int64_t)h * w;
    HWr = (int64_t)h * Wr;
  }
  // interior pixel (r, x) of a padded plane
  int64_t pad(int r, int x) const { return (int64_t)(r + 1) * P + x + 1; }
};

template <int WD>
struct Unc {
  const float *M, *w1, *b1, *w2, *b2, *w3, *bm;
  float lam;
  static constexpr int64_t n_small = 16 + WD * 18 + WD + WD * WD + WD + 4 * WD * 9 + 1;
  explicit Unc(const float* p) {
    M = p;
    w1 = M + 16;
    b1 = w1 + WD * 18;
    w2 = b1 + WD;
    b2 = w2 + WD * WD;
    w3 = b2 + WD;
    lam = w3[4 * WD * 9];
    bm = w3 + 4 * WD * 9 + 1;
  }
};

// thread-safe growing scratch owned by the calling (Python) thread
float* scratch(size_t n) {
  static thread_local std::vector<float> buf;
  if (buf.size() < n) buf.assign(n, 0.0f);
  return buf.data();
}
double* dscratch(size_t n) {
  static thread_local std::vector<double> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// ---------------------------------------------------------------------------------------- building blocks
// y = M x (4 channels) for one sample: src user layout [4][H][W] -> padded planes dst (4 planes of size S);
// optionally also the unpadded copy into out [4][H][W].
inline void mix_in(const float* src, const float* M, float* dst, float* out, const Geo& g) {
  vi lane = lanes();
  for (int r = 0; r < g.H; ++r)
    for (int b = 0; b < g.nb; ++b) {
      int x0 = b * VL, n = std::min(VL, g.W - x0);
      vi valid = lane < n;
      vf v[4];
      for (int i = 0; i < 4; ++i) v[i] = ld_tail(src + i * g.HW + (int64_t)r * g.W + x0, n);
      for (int o = 0; o < 4; ++o) {
        vf a = M[o * 4] * v[0] + M[o * 4 + 1] * v[1] + M[o * 4 + 2] * v[2] + M[o * 4 + 3] * v[3];
        a = sel(valid, a, splat(0.0f));
        stv(dst + o * g.S + g.pad(r, x0), a);
        if (out) st_tail(out + o * g.HW + (int64_t)r * g.W + x0, a, n);
      }
    }
}

// The 3x3 convolutions of a block of VL pixels (conv1: 2 -> WD, conv3: WD -> 4 plus the bias map, and the
// transposed ones of the backward pass) are conv1_blocks / conv3_blocks / convT_blocks below, NB blocks at a time.

// weight gradient of a 3x3 SAME conv: dw[o][i][k] += sum_p D[o](p) * X[i](p + k - 1), both padded planes
template <int CO, int CI>
inline void wgrad3(const float* D, const float* X, const Geo& g, double* dw) {
  for (int o = 0; o < CO; ++o)
    for (int i = 0; i < CI; ++i) {
      vf acc[9];
      for (int k = 0; k < 9; ++k) acc[k] = splat(0.0f);
      for (int r = 0; r < g.H; ++r)
        for (int b = 0; b < g.nb; ++b) {
          int x0 = b * VL;
          vf d = ldv(D + o * g.S + g.pad(r, x0));
          for (int ky = 0; ky < 3; ++ky) {
            const float* row = X + i * g.S + (int64_t)(r + ky) * g.P + x0;
            for (int kx = 0; kx < 3; ++kx) acc[ky * 3 + kx] += d * ldv(row + kx);
          }
        }
      for (int k = 0; k < 9; ++k) dw[(o * CI + i) * 9 + k] += hsumd(acc[k]);
    }
}

// --------------------------------------------------------------------------------------------- eval ops
// Eval ops process EVAL_NB adjacent blocks of a row at once where the row has them: each weight broadcast then feeds
// EVAL_NB multiply-adds (the per-lane order of the sums is that of one block, so the values do not change). With
// 8-lane registers (AVX2) two blocks measured 11-22% faster for sampling; with 16 lanes it did not help. The
// training kernels' convolution passes use the same grouping (conv1_row, conv3_row, convT_row).
#ifndef EVAL_NB
#if VL < 16
#define EVAL_NB 2
#else
#define EVAL_NB 1
#endif
#endif

template <int WD, int NB>
inline void conv1_blocks(const float* X, const float* w1, const float* b1, const Geo& g, int r, int x0,
                         vf (*acc)[WD]) {
  for (int n = 0; n < NB; ++n)
    for (int o = 0; o < WD; ++o) acc[n][o] = splat(b1[o]);
  for (int i = 0; i < 2; ++i)
    for (int ky = 0; ky < 3; ++ky) {
      const float* row = X + i * g.S + (int64_t)(r + ky) * g.P + x0;
      for (int kx = 0; kx < 3; ++kx) {
        vf v[NB];
        for (int n = 0; n < NB; ++n) v[n] = ldv(row + kx + n * VL);
        for (int o = 0; o < WD; ++o) {
          const float w = w1[(o * 2 + i) * 9 + ky * 3 + kx];
          for (int n = 0; n < NB; ++n) acc[n][o] += w * v[n];
        }
      }
    }
}

template <int WD, int NB>
inline void conv3_blocks(const float* R, const float* w3, const float* bm, const Geo& g, int r, int x0,
                         vf (*acc)[4]) {
  for (int n = 0; n < NB; ++n)
    for (int o = 0; o < 4; ++o) acc[n][o] = ldv(bm + o * g.HWr + (int64_t)r * g.Wr + x0 + n * VL);
  for (int i = 0; i < WD; ++i)
    for (int ky = 0; ky < 3; ++ky) {
      const float* row = R + i * g.S + (int64_t)(r + ky) * g.P + x0;
      for (int kx = 0; kx < 3; ++kx) {
        vf v[NB];
        for (int n = 0; n < NB; ++n) v[n] = ldv(row + kx + n * VL);
        for (int o = 0; o < 4; ++o) {
          const float w = w3[(o * WD + i) * 9 + ky * 3 + kx];
          for (int n = 0; n < NB; ++n) acc[n][o] += w * v[n];
        }
      }
    }
}

template <int WD, int NB>
inline void h2_blocks(const float* X, float* H2, const Geo& g, const Unc<WD>& u, int r, int b) {
  const vi lane = lanes();
  vf acc[NB][WD];
  conv1_blocks<WD, NB>(X, u.w1, u.b1, g, r, b * VL, acc);
  for (int n = 0; n < NB; ++n) {
    const int x0 = (b + n) * VL;
    const vi valid = lane < (g.W - x0);
    for (int o = 0; o < WD; ++o) acc[n][o] = relu(acc[n][o]);
    for (int o = 0; o < WD; ++o) {
      vf a = splat(u.b2[o]);
      for (int j = 0; j < WD; ++j) a += u.w2[o * WD + j] * acc[n][j];
      stv(H2 + o * g.S + g.pad(r, x0), sel(valid, relu(a), splat(0.0f)));
    }
  }
}

template <int WD>
void h2_rows(const float* X, float* H2, const Geo& g, const Unc<WD>& u, int r0, int r1) {
  for (int r = r0; r < r1; ++r) {
    int b = 0;
    for (; b + EVAL_NB <= g.nb; b += EVAL_NB) h2_blocks<WD, EVAL_NB>(X, H2, g, u, r, b);
    for (; b < g.nb; ++b) h2_blocks<WD, 1>(X, H2, g, u, r, b);
  }
}

template <int WD, int NB>
inline vf affine_blocks(float* X, const float* H2, const Geo& g, const Unc<WD>& u, int r, int b, bool inverse) {
  const vi lane = lanes();
  vf h[NB][4];
  conv3_blocks<WD, NB>(H2, u.w3, u.bm, g, r, b * VL, h);
  vf lsum = splat(0.0f);
  for (int n = 0; n < NB; ++n) {
    const int x0 = (b + n) * VL;
    const vi valid = lane < (g.W - x0);
    for (int j = 0; j < 2; ++j) {
      vf l = u.lam * v_tanh(h[n][2 + j]);
      float* px = X + (2 + j) * g.S + g.pad(r, x0);
      vf xb = ldv(px);
      vf out = inverse ? (xb - h[n][j]) * v_exp(-l) : xb * v_exp(l) + h[n][j];
      stv(px, sel(valid, out, xb));
      lsum += sel(valid, l, splat(0.0f));
    }
  }
  return lsum;
}

template <int WD>
double affine_rows(float* X, const float* H2, const Geo& g, const Unc<WD>& u, int r0, int r1, bool inverse) {
  double ld = 0.0;
  for (int r = r0; r < r1; ++r) {
    vf lsum = splat(0.0f);
    int b = 0;
    for (; b + EVAL_NB <= g.nb; b += EVAL_NB) lsum += affine_blocks<WD, EVAL_NB>(X, H2, g, u, r, b, inverse);
    for (; b < g.nb; ++b) lsum += affine_blocks<WD, 1>(X, H2, g, u, r, b, inverse);
    ld += hsumd(lsum);
  }
  return inverse ? -ld : ld;
}

// f(k, acc) for every block k of row r in order, acc the first (resp. last) convolution of the block; EVAL_NB
// blocks per weight broadcast (the training kernels' passes)
template <int WD, class F>
inline void conv1_row(const float* X, const float* w1, const float* b1, const Geo& g, int r, F&& f) {
  int k = 0;
  for (; k + EVAL_NB <= g.nb; k += EVAL_NB) {
    vf acc[EVAL_NB][WD];
    conv1_blocks<WD, EVAL_NB>(X, w1, b1, g, r, k * VL, acc);
    for (int n = 0; n < EVAL_NB; ++n) f(k + n, acc[n]);
  }
  for (; k < g.nb; ++k) {
    vf acc[1][WD];
    conv1_blocks<WD, 1>(X, w1, b1, g, r, k * VL, acc);
    f(k, acc[0]);
  }
}

template <int WD, class F>
inline void conv3_row(const float* R, const float* w3, const float* bm, const Geo& g, int r, F&& f) {
  int k = 0;
  for (; k + EVAL_NB <= g.nb; k += EVAL_NB) {
    vf acc[EVAL_NB][4];
    conv3_blocks<WD, EVAL_NB>(R, w3, bm, g, r, k * VL, acc);
    for (int n = 0; n < EVAL_NB; ++n) f(k + n, acc[n]);
  }
  for (; k < g.nb; ++k) {
    vf acc[1][4];
    conv3_blocks<WD, 1>(R, w3, bm, g, r, k * VL, acc);
    f(k, acc[0]);
  }
}

template <int CO, int CI, int NB>
inline void convT_blocks(const float* D, const float* w, const Geo& g, int r, int x0, vf (*acc)[CI]) {
  for (int n = 0; n < NB; ++n)
    for (int i = 0; i < CI; ++i) acc[n][i] = splat(0.0f);
  for (int o = 0; o < CO; ++o)
    for (int ky = 0; ky < 3; ++ky) {
      const float* row = D + o * g.S + (int64_t)(r + 2 - ky) * g.P + x0;
      for (int kx = 0; kx < 3; ++kx) {
        vf v[NB];
        for (int n = 0; n < NB; ++n) v[n] = ldv(row + 2 - kx + n * VL);
        for (int i = 0; i < CI; ++i) {
          const float wk = w[(o * CI + i) * 9 + ky * 3 + kx];
          for (int n = 0; n < NB; ++n) acc[n][i] += wk * v[n];
        }
      }
    }
}

// f(k, acc) for every block k of row r in order, acc the transposed convolution of the block:
// out[i] = sum_o sum_k w[o][i][k] D[o](p - k + 1), D padded planes (CO of them)
template <int CO, int CI, class F>
inline void convT_row(const float* D, const float* w, const Geo& g, int r, F&& f) {
  int k = 0;
  for (; k + EVAL_NB <= g.nb; k += EVAL_NB) {
    vf acc[EVAL_NB][CI];
    convT_blocks<CO, CI, EVAL_NB>(D, w, g, r, k * VL, acc);
    for (int n = 0; n < EVAL_NB; ++n) f(k + n, acc[n]);
  }
  for (; k < g.nb; ++k) {
    vf acc[1][CI];
    convT_blocks<CO, CI, 1>(D, w, g, r, k * VL, acc);
    f(k, acc[0]);
  }
}

void mix_rows(float* X, const float* M, const Geo& g, int r0, int r1) {
  vi lane = lanes();
  for (int r = r0; r < r1; ++r)
    for (int b = 0; b < g.nb; ++b) {
      int x0 = b * VL;
      vi valid = lane < (g.W - x0);
      vf v[4];
      for (int i = 0; i < 4; ++i) v[i] = ldv(X + i * g.S + g.pad(r, x0));
      for (int o = 0; o < 4; ++o) {
        vf a = M[o * 4] * v[0] + M[o * 4 + 1] * v[1] + M[o * 4 + 2] * v[2] + M[o * 4 + 3] * v[3];
        stv(X + o * g.S + g.pad(r, x0), sel(valid, a, v[o]));
      }
    }
}

void scale_rows(float* X, float gain, bool inverse, const Geo& g, int r0, int r1) {
  for (int c = 0; c < 4; ++c)
    for (int r = r0; r < r1; ++r) {
      float* p = X + c * g.S + g.pad(r, 0);
      if (inverse)
        for (int x = 0; x < g.W; ++x) p[x] = p[x] * gain;
      else
        for (int x = 0; x < g.W; ++x) p[x] = p[x] / gain;
    }
}

// s = sqrt(a*y + c) for a row of y (user layout) into tmp (Wr floats, zero beyond W)
inline void sdn_scale_row(const float* y, float a, float c, int W, float* tmp) {
  for (int x0 = 0; x0 < W; x0 += VL) {
    const int n = std::min(VL, W - x0);
    stv(tmp + x0, sel(lanes() < n, v_sqrt(a * ld_tail(y + x0, n) + c), 1.0f));
  }
}

double sdn_rows(float* X, const float* y, const float* a, const float* c, bool inverse, const Geo& g, int r0, int r1,
                float* tmp) {
  vi lane = lanes();
  double ld = 0.0;
  for (int ch = 0; ch < 4; ++ch)
    for (int r = r0; r < r1; ++r) {
      sdn_scale_row(y + ch * g.HW + (int64_t)r * g.W, a[ch], c[ch], g.W, tmp);
      for (int x = g.W; x < g.Wr; ++x) tmp[x] = 1.0f;
      vf lsum = splat(0.0f);
      for (int b = 0; b < g.nb; ++b) {
        int x0 = b * VL;
        vi valid = lane < (g.W - x0);
        vf s = ldv(tmp + x0);
        float* px = X + ch * g.S + g.pad(r, x0);
        vf v = ldv(px);
        stv(px, sel(valid, inverse ? v * s : v / s, v));
        lsum += sel(valid, v_log(s), splat(0.0f));
      }
      ld += hsumd(lsum);
    }
  return inverse ? ld : -ld;
}

struct Op {
  int type;  // 0 sdn (params: a[B][4], c[B][4] per sample and channel), 1 gain (params: g[B]), 2 unc (packed)
  const float* p;
};

template <int WD>
void run_ops(float* X, float* H2, const Op* ops, int nops, bool inverse, const float* clean, int B, int bidx,
             const Geo& g, int r0, int r1, double* ld, float* tmp, bool rows_parallel) {
  // rows_parallel: called inside an omp parallel region; every thread runs its own rows and barriers separate
  // the two halves of a coupling (the affine part reads neighbouring rows of H2).
  for (int k = 0; k < nops; ++k) {
    const Op& op = ops[inverse ? nops - 1 - k : k];
    if (op.type == 0) {
      *ld += sdn_rows(X, clean + (int64_t)bidx * 4 * g.HW, op.p + 4 * bidx, op.p + 4 * (B + bidx), inverse, g, r0, r1,
                      tmp);
    } else if (op.type == 1) {
      scale_rows(X, op.p[bidx], inverse, g, r0, r1);
    } else {
      Unc<WD> u(op.p);
      if (!inverse) mix_rows(X, u.M, g, r0, r1);
      if (rows_parallel) {  // the net reads the neighbouring rows the previous op wrote
#pragma omp barrier
      }
      h2_rows<WD>(X, H2, g, u, r0, r1);
      if (rows_parallel) {
#pragma omp barrier
      }
      *ld += affine_rows<WD>(X, H2, g, u, r0, r1, inverse);
      if (inverse) mix_rows(X, u.M, g, r0, r1);  // Python passes M^-1 for the inverse
      if (rows_parallel) {
#pragma omp barrier
      }
    }
  }
}

template <int WD>
void eval_impl(const float* x, float* z, float* ld, float* sq, int B, int H, int W, const float* clean, int nops,
               const int* types, const float* const* params, bool inverse, int nthreads) {
  Geo g(H, W);
  std::vector<Op> ops(nops);
  for (int k = 0; k < nops; ++k) ops[k] = Op{types[k], params[k]};
  const int64_t per = (int64_t)(4 + WD) * g.S + g.Wr;
  auto copy_in = [&](float* X, int b, int r0, int r1) {
    for (int c = 0; c < 4; ++c)
      for (int r = r0; r < r1; ++r)
        std::memcpy(X + c * g.S + g.pad(r, 0), x + ((int64_t)b * 4 + c) * g.HW + (int64_t)r * W, sizeof(float) * W);
  };
  // copies rows [r0, r1) of the result out; returns their sum of squares (0 unless sq is wanted)
  auto copy_out = [&](const float* X, int b, int r0, int r1) {
    double acc = 0.0;
    for (int c = 0; c < 4; ++c)
      for (int r = r0; r < r1; ++r) {
        const float* row = X + c * g.S + g.pad(r, 0);
        std::memcpy(z + ((int64_t)b * 4 + c) * g.HW + (int64_t)r * W, row, sizeof(float) * W);
        if (sq) {
          vf s2 = splat(0.0f);
          for (int k = 0; k < g.nb; ++k) {  // the tail beyond W is zero
            vf v = ldv(row + k * VL);
            s2 += v * v;
          }
          acc += hsumd(s2);
        }
      }
    return acc;
  };
  if (B >= nthreads || H < 2 * nthreads) {
    int nt = std::max(1, std::min(nthreads, B));
    float* ws = scratch((size_t)per * nt);
    std::memset(ws, 0, sizeof(float) * per * nt);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int b = 0; b < B; ++b) {
      float* X = ws + per * omp_get_thread_num();
      float* H2 = X + 4 * g.S;
      float* tmp = H2 + WD * g.S;
      copy_in(X, b, 0, H);
      double acc = 0.0;
      run_ops<WD>(X, H2, ops.data(), nops, inverse, clean, B, b, g, 0, H, &acc, tmp, false);
      const double s2 = copy_out(X, b, 0, H);
      if (sq) sq[b] = (float)s2;
      ld[b] = (float)acc;
    }
  } else {  // few large samples: all threads on the rows of one sample
    float* ws = scratch((size_t)(4 + WD) * g.S + (size_t)g.Wr * nthreads);
    std::memset(ws, 0, sizeof(float) * ((4 + WD) * g.S + (size_t)g.Wr * nthreads));
    std::vector<double> part(nthreads), part_sq(nthreads);
    for (int b = 0; b < B; ++b) {
      float* X = ws;
      float* H2 = X + 4 * g.S;
      std::fill(part.begin(), part.end(), 0.0);
      std::fill(part_sq.begin(), part_sq.end(), 0.0);
#pragma omp parallel num_threads(nthreads)
      {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int r0 = (int)((int64_t)H * t / nt), r1 = (int)((int64_t)H * (t + 1) / nt);
        float* tmp = H2 + WD * g.S + (int64_t)g.Wr * t;
        copy_in(X, b, r0, r1);
#pragma omp barrier
        run_ops<WD>(X, H2, ops.data(), nops, inverse, clean, B, b, g, r0, r1, &part[t], tmp, true);
        part_sq[t] = copy_out(X, b, r0, r1);
      }
      double acc = 0.0, s2 = 0.0;
      for (int t = 0; t < nthreads; ++t) {
        acc += part[t];
        s2 += part_sq[t];
      }
      if (sq) sq[b] = (float)s2;
      ld[b] = (float)acc;
    }
  }
}

// ----------------------------------------------------------------------------------------- training (unc)
// Batch statistics in two levels: each sample's mean and centred sum of squares (two passes over its own planes,
// cache-resident right after they are written), then the exact parallel-variance combination (Chan et al.) in
// double: var = (sum_b M2_b + n_b sum_b (mean_b - mean)^2) / n. Valid lanes only.
template <int WD>
void sample_stats(const float* Ab, const Geo& g, double* mean, double* m2) {
  vi lane = lanes();
  for (int c = 0; c < WD; ++c) {
    const float* p = Ab + c * g.HWr;
    vf sr = splat(0.0f);  // lane sums in float over the plane (H * nb terms per lane), then in double
    for (int r = 0; r < g.H; ++r)
      for (int k = 0; k < g.nb; ++k) sr += sel(lane < (g.W - k * VL), ldv(p + (int64_t)r * g.Wr + k * VL), 0.0f);
    const double mu = hsumd(sr) / (double)g.HW;
    const float muf = (float)mu;
    vf sq = splat(0.0f);
    for (int r = 0; r < g.H; ++r)
      for (int k = 0; k < g.nb; ++k) {
        vf d = ldv(p + (int64_t)r * g.Wr + k * VL) - muf;
        sq += sel(lane < (g.W - k * VL), d * d, 0.0f);
      }
    const double q = hsumd(sq);
    const double off = mu - (double)muf;  // sum (a - muf)^2 = M2 + n (mu - muf)^2
    mean[c] = mu;
    m2[c] = std::max(0.0, q - (double)g.HW * off * off);
  }
}

// pm, pq: [B][WD] per-sample means and centred sums of squares -> mean[c], biased var[c]
template <int WD>
void combine_stats(const double* pm, const double* pq, int B, const Geo& g, double* mean, double* var) {
  for (int c = 0; c < WD; ++c) {
    double mu = 0.0;
    for (int b = 0; b < B; ++b) mu += pm[(int64_t)b * WD + c];
    mu /= B;
    double m2 = 0.0;
    for (int b = 0; b < B; ++b) {
      const double d = pm[(int64_t)b * WD + c] - mu;
      m2 += pq[(int64_t)b * WD + c] + (double)g.HW * d * d;
    }
    mean[c] = mu;
    var[c] = m2 / ((double)B * g.HW);
  }
}

// stats layout: mean1[WD] var1[WD] mean2[WD] var2[WD] (biased variances), doubles
template <int WD>
void unc_train_fwd(const float* x, const float* prm, float* z, float* ld, double* stats, int B, int H, int W,
                   float eps, int nthreads) {
  Geo g(H, W);
  Unc<WD> u(prm);
  vi lane = lanes();
  const int64_t bufA = (int64_t)B * WD * g.HWr;
  const int64_t per = (int64_t)(4 + WD) * g.S;
  float* A = scratch((size_t)(bufA + per * nthreads));
  float* ws = A + bufA;
  std::memset(ws, 0, sizeof(float) * per * nthreads);
  double *mean1 = stats, *var1 = stats + WD, *mean2 = stats + 2 * WD, *var2 = stats + 3 * WD;
  std::vector<double> pm((size_t)B * WD), pq((size_t)B * WD);
  // F1: y = M x (into z and padded scratch), a1 = conv1(ya) + b1, its per-sample statistics
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int b = 0; b < B; ++b) {
    float* XP = ws + per * omp_get_thread_num();
    mix_in(x + (int64_t)b * 4 * g.HW, u.M, XP, z + (int64_t)b * 4 * g.HW, g);
    float* Ab = A + (int64_t)b * WD * g.HWr;
    for (int r = 0; r < H; ++r)
      conv1_row<WD>(XP, u.w1, u.b1, g, r, [&](int k, const vf* acc) {
        vi valid = lane < (W - k * VL);
        for (int o = 0; o < WD; ++o) stv(Ab + o * g.HWr + (int64_t)r * g.Wr + k * VL, sel(valid, acc[o], 0.0f));
      });
    sample_stats<WD>(Ab, g, pm.data() + (int64_t)b * WD, pq.data() + (int64_t)b * WD);
  }
  combine_stats<WD>(pm.data(), pq.data(), B, g, mean1, var1);
  float mu1[WD], is1[WD];
  for (int c = 0; c < WD; ++c) {
    mu1[c] = (float)mean1[c];
    is1[c] = (float)(1.0 / std::sqrt(var1[c] + (double)eps));
  }
  // F2: a2 = w2 relu(bn1(a1)) + b2, in place
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int b = 0; b < B; ++b) {
    float* Ab = A + (int64_t)b * WD * g.HWr;
    for (int64_t q = 0; q < g.HWr; q += VL) {
      vf r1[WD];
      for (int j = 0; j < WD; ++j) r1[j] = relu((ldv(Ab + j * g.HWr + q) - mu1[j]) * is1[j]);
      for (int o = 0; o < WD; ++o) {
        vf a = splat(u.b2[o]);
        for (int j = 0; j < WD; ++j) a += u.w2[o * WD + j] * r1[j];
        stv(Ab + o * g.HWr + q, a);
      }
    }
    sample_stats<WD>(Ab, g, pm.data() + (int64_t)b * WD, pq.data() + (int64_t)b * WD);
  }
  combine_stats<WD>(pm.data(), pq.data(), B, g, mean2, var2);
  float mu2[WD], is2[WD];
  for (int c = 0; c < WD; ++c) {
    mu2[c] = (float)mean2[c];
    is2[c] = (float)(1.0 / std::sqrt(var2[c] + (double)eps));
  }
  // F3: r2 = relu(bn2(a2)) into padded scratch, h = conv3(r2) + bm, affine on z[2:4]
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int b = 0; b < B; ++b) {
    float* R2 = ws + per * omp_get_thread_num() + 4 * g.S;
    const float* Ab = A + (int64_t)b * WD * g.HWr;
    for (int r = 0; r < H; ++r)
      for (int k = 0; k < g.nb; ++k) {
        vi valid = lane < (W - k * VL);
        for (int o = 0; o < WD; ++o) {
          vf v = relu((ldv(Ab + o * g.HWr + (int64_t)r * g.Wr + k * VL) - mu2[o]) * is2[o]);
          stv(R2 + o * g.S + g.pad(r, k * VL), sel(valid, v, 0.0f));
        }
      }
    float* zb = z + (int64_t)b * 4 * g.HW;
    vf lsum = splat(0.0f);
    double acc = 0.0;
    for (int r = 0; r < H; ++r) {
      conv3_row<WD>(R2, u.w3, u.bm, g, r, [&](int k, const vf* h) {
        int x0 = k * VL, n = std::min(VL, W - x0);
        vi valid = lane < n;
        for (int j = 0; j < 2; ++j) {
          vf l = u.lam * v_tanh(h[2 + j]);
          float* p = zb + (2 + j) * g.HW + (int64_t)r * W + x0;
          vf xb = ld_tail(p, n);
          st_tail(p, xb * v_exp(l) + h[j], n);
          lsum += sel(valid, l, 0.0f);
        }
      });
      acc += hsumd(lsum);
      lsum = splat(0.0f);
    }
    ld[b] = (float)acc;
  }
}

template <int WD>
void unc_train_bwd(const float* x, const float* prm, const double* stats, const float* dz, const float* dld,
                   float* dx, float* dprm, int B, int H, int W, float eps, int nthreads) {
  Geo g(H, W);
  Unc<WD> u(prm);
  vi lane = lanes();
  const int64_t buf = (int64_t)B * WD * g.HWr;
  const int64_t per = (int64_t)(4 + WD + 4 + WD) * g.S;
  const int64_t nsmall = Unc<WD>::n_small;
  const int64_t nbm = 4 * g.HWr;
  float* N1 = scratch((size_t)(3 * buf + (per + nbm) * nthreads));
  float* N2 = N1 + buf;
  float* D = N2 + buf;
  float* ws = D + buf;
  std::memset(ws, 0, sizeof(float) * (per + nbm) * nthreads);
  const int nsum = 2 * WD;
  double* part = dscratch((size_t)nthreads * (nsmall + nsum));
  std::memset(part, 0, sizeof(double) * nthreads * (nsmall + nsum));
  // offsets into the small gradient vector
  const int oM = 0, ow1 = 16, ob1 = ow1 + WD * 18, ow2 = ob1 + WD, ob2 = ow2 + WD * WD, ow3 = ob2 + WD,
            olam = ow3 + 4 * WD * 9;
  float mu1[WD], is1[WD], mu2[WD], is2[WD];
  for (int c = 0; c < WD; ++c) {
    mu1[c] = (float)stats[c];
    is1[c] = (float)(1.0 / std::sqrt(stats[WD + c] + (double)eps));
    mu2[c] = (float)stats[2 * WD + c];
    is2[c] = (float)(1.0 / std::sqrt(stats[3 * WD + c] + (double)eps));
  }
  auto thread_ws = [&](int t, float*& XP, float*& R2, float*& DH, float*& DA, float*& dbm) {
    XP = ws + (per + nbm) * t;
    R2 = XP + 4 * g.S;
    DH = R2 + WD * g.S;
    DA = DH + 4 * g.S;
    dbm = DA + WD * g.S;
  };
  // B1: recompute the net, affine backward, conv3 backward, relu2 mask; BN2 sums
#pragma omp parallel num_threads(nthreads)
  {
    int t = omp_get_thread_num();
    float *XP, *R2, *DH, *DA, *dbm;
    thread_ws(t, XP, R2, DH, DA, dbm);
    double* gs = part + (nsmall + nsum) * t;
    double* sums = gs + nsmall;
#pragma omp for schedule(static)
    for (int b = 0; b < B; ++b) {
      const int64_t off = (int64_t)b * 4 * g.HW;
      mix_in(x + off, u.M, XP, nullptr, g);
      float* N1b = N1 + (int64_t)b * WD * g.HWr;
      float* N2b = N2 + (int64_t)b * WD * g.HWr;
      for (int r = 0; r < H; ++r)
        conv1_row<WD>(XP, u.w1, u.b1, g, r, [&](int k, const vf* a1) {
          int x0 = k * VL;
          vi valid = lane < (W - x0);
          vf r1[WD];
          const int64_t q = (int64_t)r * g.Wr + x0;
          for (int j = 0; j < WD; ++j) {
            vf n1 = sel(valid, (a1[j] - mu1[j]) * is1[j], 0.0f);
            stv(N1b + j * g.HWr + q, n1);
            r1[j] = relu(n1);
          }
          for (int o = 0; o < WD; ++o) {
            vf a = splat(u.b2[o]);
            for (int j = 0; j < WD; ++j) a += u.w2[o * WD + j] * r1[j];
            vf n2 = sel(valid, (a - mu2[o]) * is2[o], 0.0f);
            stv(N2b + o * g.HWr + q, n2);
            stv(R2 + o * g.S + g.pad(r, x0), relu(n2));
          }
        });
      vf dlam = splat(0.0f);
      const float gld = dld[b];
      for (int r = 0; r < H; ++r)
        conv3_row<WD>(R2, u.w3, u.bm, g, r, [&](int k, const vf* h) {
          int x0 = k * VL, n = std::min(VL, W - x0);
          vi valid = lane < n;
          for (int j = 0; j < 2; ++j) {
            vf th = v_tanh(h[2 + j]);
            vf l = u.lam * th;
            vf e = v_exp(l);
            vf xb = ldv(XP + (2 + j) * g.S + g.pad(r, x0));
            vf dzb = ld_tail(dz + off + (2 + j) * g.HW + (int64_t)r * W + x0, n);
            st_tail(dx + off + (2 + j) * g.HW + (int64_t)r * W + x0, dzb * e, n);
            vf dl = sel(valid, dzb * xb * e + gld, 0.0f);
            dlam += dl * th;
            vf draw = dl * u.lam * (1.0f - th * th);
            stv(DH + j * g.S + g.pad(r, x0), dzb);
            stv(DH + (2 + j) * g.S + g.pad(r, x0), draw);
            float* bj = dbm + j * g.HWr + (int64_t)r * g.Wr + x0;
            stv(bj, ldv(bj) + dzb);
            float* bj2 = dbm + (2 + j) * g.HWr + (int64_t)r * g.Wr + x0;
            stv(bj2, ldv(bj2) + draw);
          }
        });
      gs[olam] += hsumd(dlam);
      wgrad3<4, WD>(DH, R2, g, gs + ow3);
      vf s1[WD], s2[WD];
      for (int i = 0; i < WD; ++i) s1[i] = s2[i] = splat(0.0f);
      float* Db = D + (int64_t)b * WD * g.HWr;
      for (int r = 0; r < H; ++r)
        convT_row<4, WD>(DH, u.w3, g, r, [&](int k, const vf* dr) {
          const int64_t q = (int64_t)r * g.Wr + k * VL;
          for (int i = 0; i < WD; ++i) {
            vf n2 = ldv(N2b + i * g.HWr + q);
            vf d = sel(n2 > 0.0f, dr[i], 0.0f);  // n2 is 0 on invalid lanes
            stv(Db + i * g.HWr + q, d);
            s1[i] += d;
            s2[i] += d * n2;
          }
        });
      for (int i = 0; i < WD; ++i) {
        sums[i] += hsumd(s1[i]);
        sums[WD + i] += hsumd(s2[i]);
      }
    }
  }
  const double n = (double)B * g.HW;
  auto reduce_sums = [&](float* m1, float* m2) {
    for (int c = 0; c < WD; ++c) {
      double a = 0.0, bsum = 0.0;
      for (int t = 0; t < nthreads; ++t) {
        double* sums = part + (nsmall + nsum) * t + nsmall;
        a += sums[c];
        bsum += sums[WD + c];
        sums[c] = sums[WD + c] = 0.0;
      }
      m1[c] = (float)(a / n);
      m2[c] = (float)(bsum / n);
    }
  };
  float md2[WD], mdn2[WD];
  reduce_sums(md2, mdn2);
  // B2: BN2 backward, conv2 backward, relu1 mask; BN1 sums
#pragma omp parallel num_threads(nthreads)
  {
    int t = omp_get_thread_num();
    double* gs = part + (nsmall + nsum) * t;
    double* sums = gs + nsmall;
#pragma omp for schedule(static)
    for (int b = 0; b < B; ++b) {
      float* N1b = N1 + (int64_t)b * WD * g.HWr;
      float* N2b = N2 + (int64_t)b * WD * g.HWr;
      float* Db = D + (int64_t)b * WD * g.HWr;
      vf gw2[WD * WD], gb2[WD], s1[WD], s2[WD];
      for (int i = 0; i < WD * WD; ++i) gw2[i] = splat(0.0f);
      for (int i = 0; i < WD; ++i) gb2[i] = s1[i] = s2[i] = splat(0.0f);
      for (int r = 0; r < H; ++r)
        for (int k = 0; k < g.nb; ++k) {
          const int64_t q = (int64_t)r * g.Wr + k * VL;
          vi valid = lane < (W - k * VL);
          vf da[WD], n1[WD];
          for (int o = 0; o < WD; ++o) {
            vf n2 = ldv(N2b + o * g.HWr + q);
            vf d = ldv(Db + o * g.HWr + q);
            da[o] = sel(valid, is2[o] * (d - md2[o] - n2 * mdn2[o]), 0.0f);
            gb2[o] += da[o];
          }
          for (int j = 0; j < WD; ++j) n1[j] = ldv(N1b + j * g.HWr + q);
          for (int o = 0; o < WD; ++o)
            for (int j = 0; j < WD; ++j) gw2[o * WD + j] += da[o] * relu(n1[j]);
          for (int j = 0; j < WD; ++j) {
            vf dr = splat(0.0f);
            for (int o = 0; o < WD; ++o) dr += u.w2[o * WD + j] * da[o];
            vf d1 = sel(n1[j] > 0.0f, dr, 0.0f);
            stv(Db + j * g.HWr + q, d1);
            s1[j] += d1;
            s2[j] += d1 * n1[j];
          }
        }
      for (int i = 0; i < WD * WD; ++i) gs[ow2 + i] += hsumd(gw2[i]);
      for (int i = 0; i < WD; ++i) {
        gs[ob2 + i] += hsumd(gb2[i]);
        sums[i] += hsumd(s1[i]);
        sums[WD + i] += hsumd(s2[i]);
      }
    }
  }
  float md1[WD], mdn1[WD];
  reduce_sums(md1, mdn1);
  // B3: BN1 backward, conv1 backward, coupling pass-through, M backward
#pragma omp parallel num_threads(nthreads)
  {
    int t = omp_get_thread_num();
    float *XP, *R2, *DH, *DA, *dbm;
    thread_ws(t, XP, R2, DH, DA, dbm);
    double* gs = part + (nsmall + nsum) * t;
#pragma omp for schedule(static)
    for (int b = 0; b < B; ++b) {
      const int64_t off = (int64_t)b * 4 * g.HW;
      float* N1b = N1 + (int64_t)b * WD * g.HWr;
      float* Db = D + (int64_t)b * WD * g.HWr;
      vf gb1[WD];
      for (int o = 0; o < WD; ++o) gb1[o] = splat(0.0f);
      for (int r = 0; r < H; ++r)
        for (int k = 0; k < g.nb; ++k) {
          const int64_t q = (int64_t)r * g.Wr + k * VL;
          vi valid = lane < (W - k * VL);
          for (int o = 0; o < WD; ++o) {
            vf n1 = ldv(N1b + o * g.HWr + q);
            vf d = ldv(Db + o * g.HWr + q);
            vf da = sel(valid, is1[o] * (d - md1[o] - n1 * mdn1[o]), 0.0f);
            gb1[o] += da;
            stv(DA + o * g.S + g.pad(r, k * VL), da);
          }
        }
      for (int o = 0; o < WD; ++o) gs[ob1 + o] += hsumd(gb1[o]);
      mix_in(x + off, u.M, XP, nullptr, g);
      wgrad3<WD, 2>(DA, XP, g, gs + ow1);
      vf gM[16];
      for (int i = 0; i < 16; ++i) gM[i] = splat(0.0f);
      for (int r = 0; r < H; ++r)
        convT_row<WD, 2>(DA, u.w1, g, r, [&](int k, const vf* dxa) {
          int x0 = k * VL, nn = std::min(VL, W - x0);
          const int64_t pix = (int64_t)r * W + x0;
          vf dy[4], xin[4];
          dy[0] = ld_tail(dz + off + pix, nn) + dxa[0];
          dy[1] = ld_tail(dz + off + g.HW + pix, nn) + dxa[1];
          dy[2] = ld_tail(dx + off + 2 * g.HW + pix, nn);
          dy[3] = ld_tail(dx + off + 3 * g.HW + pix, nn);
          vi valid = lane < nn;
          for (int i = 0; i < 4; ++i) {
            dy[i] = sel(valid, dy[i], 0.0f);
            xin[i] = ld_tail(x + off + i * g.HW + pix, nn);
          }
          for (int o = 0; o < 4; ++o)
            for (int i = 0; i < 4; ++i) gM[o * 4 + i] += dy[o] * xin[i];
          for (int i = 0; i < 4; ++i) {
            vf v = u.M[i] * dy[0] + u.M[4 + i] * dy[1] + u.M[8 + i] * dy[2] + u.M[12 + i] * dy[3];
            st_tail(dx + off + i * g.HW + pix, v, nn);
          }
        });
      for (int i = 0; i < 16; ++i) gs[oM + i] += hsumd(gM[i]);
    }
  }
  // reduce the per-thread gradients in a fixed order
  for (int64_t i = 0; i < nsmall; ++i) {
    double s = 0.0;
    for (int t = 0; t < nthreads; ++t) s += part[(nsmall + nsum) * t + i];
    dprm[i] = (float)s;
  }
  for (int o = 0; o < 4; ++o)
    for (int r = 0; r < H; ++r)
      for (int xx = 0; xx < W; ++xx) {
        double s = 0.0;
        for (int t = 0; t < nthreads; ++t) s += ws[(per + nbm) * t + per + o * g.HWr + (int64_t)r * g.Wr + xx];
        dprm[nsmall + o * g.HW + (int64_t)r * W + xx] = (float)s;
      }
}

// ------------------------------------------------------------------------------------------- sdn training
// a, c: [B][4] (per sample and channel); z = x / s, s = sqrt(a y + c), ld[b] = -sum log s
void sdn_fwd(const float* x, const float* y, const float* a, const float* c, float* z, float* ld, int B, int H,
             int W, int nthreads) {
  const int64_t hw = (int64_t)H * W;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int b = 0; b < B; ++b) {
    double acc = 0.0;
    for (int ch = 0; ch < 4; ++ch) {
      const int64_t off = ((int64_t)b * 4 + ch) * hw;
      const float ab = a[b * 4 + ch], cb = c[b * 4 + ch];
      for (int64_t i0 = 0; i0 < hw; i0 += 64 * VL) {  // partial sums over 64 blocks, then in double
        const int64_t i1 = std::min<int64_t>(hw, i0 + 64 * VL);
        vf lsum = splat(0.0f);
        for (int64_t i = i0; i < i1; i += VL) {
          const int n = (int)std::min<int64_t>(VL, i1 - i);
          vf sv = sel(lanes() < n, v_sqrt(ab * ld_tail(y + off + i, n) + cb), 1.0f);
          st_tail(z + off + i, ld_tail(x + off + i, n) / sv, n);
          lsum += v_log(sv);
        }
        acc += hsumd(lsum);
      }
    }
    ld[b] = (float)(-acc);
  }
}

// dx = dz / s; du = -(dz z + dld) / (2 u); da = sum du y; dc = sum du  (u = a y + c, s = sqrt(u), z = x / s)
void sdn_bwd(const float* x, const float* y, const float* a, const float* c, const float* dz, const float* dld,
             float* dx, double* da, double* dc, int B, int H, int W, int nthreads) {
  const int64_t hw = (int64_t)H * W;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int b = 0; b < B; ++b) {
    const float g = dld[b];
    for (int ch = 0; ch < 4; ++ch) {
      const int64_t off = ((int64_t)b * 4 + ch) * hw;
      const float ab = a[b * 4 + ch], cb = c[b * 4 + ch];
      double sa = 0.0, sc = 0.0;
      for (int64_t i0 = 0; i0 < hw; i0 += 64 * VL) {
        const int64_t i1 = std::min<int64_t>(hw, i0 + 64 * VL);
        vf pa = splat(0.0f), pc = splat(0.0f);
        for (int64_t i = i0; i < i1; i += VL) {
          const int n = (int)std::min<int64_t>(VL, i1 - i);
          vi valid = lanes() < n;
          vf yv = ld_tail(y + off + i, n);
          vf u = ab * yv + cb;
          vf sv = sel(valid, v_sqrt(u), 1.0f);
          vf dzv = ld_tail(dz + off + i, n);
          vf zz = ld_tail(x + off + i, n) / sv;
          if (dx) st_tail(dx + off + i, dzv / sv, n);
          vf du = sel(valid, -(dzv * zz + g) / (2.0f * sel(valid, u, 1.0f)), 0.0f);
          pa += du * yv;
          pc += du;
        }
        sa += hsumd(pa);
        sc += hsumd(pc);
      }
      da[b * 4 + ch] = sa;
      dc[b * 4 + ch] = sc;
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------- C ABI
extern "C" {

int nf_abi_version() { return 5; }
int nf_vector_lanes() { return VL; }

// sq: optional (NULL) per-sample sum of squares of the output
int nf_eval(const float* x, float* z, float* ld, float* sq, int B, int H, int W, const float* clean, int nops,
            const int* types, const float* const* params, int inverse, int width, int nthreads) {
  if (width == 4) {
    eval_impl<4>(x, z, ld, sq, B, H, W, clean, nops, types, params, inverse != 0, nthreads);
    return 0;
  }
  if (width == 8) {
    eval_impl<8>(x, z, ld, sq, B, H, W, clean, nops, types, params, inverse != 0, nthreads);
    return 0;
  }
  return 1;
}

int nf_unc_train_fwd(const float* x, const float* prm, float* z, float* ld, double* stats, int B, int H, int W,
                     int width, float eps, int nthreads) {
  if (width == 4) {
    unc_train_fwd<4>(x, prm, z, ld, stats, B, H, W, eps, nthreads);
    return 0;
  }
  if (width == 8) {
    unc_train_fwd<8>(x, prm, z, ld, stats, B, H, W, eps, nthreads);
    return 0;
  }
  return 1;
}

int nf_unc_train_bwd(const float* x, const float* prm, const double* stats, const float* dz, const float* dld,
                     float* dx, float* dprm, int B, int H, int W, int width, float eps, int nthreads) {
  if (width == 4) {
    unc_train_bwd<4>(x, prm, stats, dz, dld, dx, dprm, B, H, W, eps, nthreads);
    return 0;
  }
  if (width == 8) {
    unc_train_bwd<8>(x, prm, stats, dz, dld, dx, dprm, B, H, W, eps, nthreads);
    return 0;
  }
  return 1;
}

void nf_sdn_fwd(const float* x, const float* y, const float* a, const float* c, float* z, float* ld, int B, int H,
                int W, int nthreads) {
  sdn_fwd(x, y, a, c, z, ld, B, H, W, nthreads);
}

void nf_sdn_bwd(const float* x, const float* y, const float* a, const float* c, const float* dz, const float* dld,
                float* dx, double* da, double* dc, int B, int H, int W, int nthreads) {
  sdn_bwd(x, y, a, c, dz, dld, dx, da, dc, B, H, W, nthreads);
}

}  // extern "C"
