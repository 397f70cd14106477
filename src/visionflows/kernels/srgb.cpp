// Fused CPU kernel of the sRGB Noise Flow in evaluation mode (float32, NCHW, 3 channels, coupling width WD).
//
// The Python side (visionflows/noise/srgb/fused.py) folds every layer into packed parameters (BatchNorm / ActNorm
// into the convolutions, the edge ring and gain of the last convolution into a bias map, the ISO/camera tables and
// the scale embedding into per-sample values) and orders the ops for the direction; this file only computes.
// One sample at a time runs through every op in zero-padded planes ((H+2) x P, P = Wr + 2, Wr = W rounded up to
// VL) that stay in the core's cache, samples in parallel. Ops (noise -> latent is "forward"):
//
//   SCALE   x *= f                                       params: f
//   AFFINE  x_c = (x_c + pre_bc) * mul_bc + post_bc      per sample: pre[3] mul[3] post[3]   (CL2)
//   SDL     x_c = x_c / s or x_c * s, s = sqrt(a_bc clamp(y, 0, 1) + b_bc)            per sample: a[3] b[3]
//   MIX     x = M x per pixel                            params: M[3][3] (W or W^-1)
//   CAC     h = net([x0, y0, y1, y2]) = [t(2), r(2)], l = lam tanh(r) e_b,
//           forward x_{1,2} = x_{1,2} exp(l) + t, inverse x_{1,2} = (x_{1,2} - t) exp(-l); logdet +-= sum l
//   SPC     checkerboard m = (h + w + parity) even: h = net([x (1 - m), y, 1 - m]) = [t(3), r(3)],
//           l = lam tanh(r) e_b; where m: forward x = x exp(l) + t, inverse x = (x - t) exp(-l); logdet +-= sum m l
//   net     conv3x3(CI -> WD, bias) -> relu -> 1x1 (WD -> WD, bias) -> relu -> conv3x3(WD -> CO) + bias map [CO][H][Wr]
//
// Packed net parameters (float): w1[WD][CI][9] b1[WD] w2[WD][WD] b2[WD] w3[CO][WD][9] lam[1] bm[CO][H][Wr].
// Each op is 4 ints: {kind, offset into params, offset into a sample's per-sample row, parity (SPC)}.
#include "vec.h"

namespace {

enum Kind { SCALE = 0, AFFINE = 1, SDL = 2, MIX = 3, CAC = 4, SPC = 5 };

struct Geo {
  int H, W, nb, Wr, P;
  long S;
  Geo(int h, int w) : H(h), W(w), nb((w + VL - 1) / VL), Wr(nb * VL), P(nb * VL + 2), S((long)(h + 2) * P) {}
  long at(int r, int x) const { return (long)(r + 1) * P + x + 1; }  // valid pixel (r, x) of a padded plane
};

// lanes of the block at column x0 that lie inside the image
inline vi valid(const Geo& g, int x0) { return lanes() < (g.W - x0); }

// acc[o] = b[o] + sum_i sum_k w[o][i][k] in_i(r + ky - 1, x0 + kx - 1 + lane) over CI padded planes
template <int CI, int CO>
inline void conv3(const float* const* in, const float* w, const float* b, const Geo& g, int r, int x0, vf* acc) {
  for (int o = 0; o < CO; ++o) acc[o] = splat(b ? b[o] : 0.0f);
  for (int i = 0; i < CI; ++i)
    for (int ky = 0; ky < 3; ++ky) {
      const float* p = in[i] + (long)(r + ky) * g.P + x0;
      const vf v0 = ldv(p), v1 = ldv(p + 1), v2 = ldv(p + 2);
      for (int o = 0; o < CO; ++o) {
        const float* wk = w + ((long)o * CI + i) * 9 + ky * 3;
        acc[o] += wk[0] * v0 + wk[1] * v1 + wk[2] * v2;
      }
    }
}

// H2 = relu(w2 relu(conv3x3(in; w1) + b1) + b2), tails zero (they are the next convolution's padding)
template <int CI, int WD>
void hidden(const float* const* in, const float* net, float* const* H2, const Geo& g) {
  const float* w1 = net;
  const float* b1 = w1 + WD * CI * 9;
  const float* w2 = b1 + WD;
  const float* b2 = w2 + WD * WD;
  for (int r = 0; r < g.H; ++r)
    for (int x0 = 0; x0 < g.Wr; x0 += VL) {
      vf a1[WD];
      conv3<CI, WD>(in, w1, b1, g, r, x0, a1);
      for (int i = 0; i < WD; ++i) a1[i] = relu(a1[i]);
      const vi ok = valid(g, x0);
      for (int o = 0; o < WD; ++o) {
        vf s = splat(b2[o]);
        for (int i = 0; i < WD; ++i) s += w2[o * WD + i] * a1[i];
        stv(H2[o] + g.at(r, x0), sel(ok, relu(s), 0.0f));
      }
    }
}

struct Planes {  // one sample's padded planes: x[3], y[3], masked x[3] and 1 - m (SPC), hidden[WD]
  float *x[3], *y[3], *xm[3], *keep, *h[16];
};

// The affine step of a coupling whose net reads the CI planes `in`: h = net(in) = [t(K), r(K)], l = lam tanh(r) e, and
// channels first..first+K-1 of x become x exp(l) + t (inverse: (x - t) exp(-l)) where the mask holds: the valid
// pixels (CAC) or those of one checkerboard colour (CHECKER: SPC, colour `parity`). Returns the log-det of the direction run.
template <int WD, int CI, int K, bool CHECKER>
double coupling(Planes& pl, const float* const* in, int first, const float* net, float e, int parity, bool inverse,
                const Geo& g) {
  hidden<CI, WD>(in, net, pl.h, g);
  const float* w3 = net + WD * CI * 9 + WD + WD * WD + WD;
  const float lam = w3[2 * K * WD * 9];
  const float* bm = w3 + 2 * K * WD * 9 + 1;
  const float le = lam * e;
  double ld = 0.0;
  for (int r = 0; r < g.H; ++r)
    for (int x0 = 0; x0 < g.Wr; x0 += VL) {
      vf h[2 * K];
      conv3<WD, 2 * K>(pl.h, w3, nullptr, g, r, x0, h);
      vi act = valid(g, x0);
      if constexpr (CHECKER) act = act & (((lanes() + (r + x0 + parity)) & 1) == 0);
      vf lsum = splat(0.0f);
      for (int c = 0; c < K; ++c) {
        const vf t = h[c] + ldv(bm + ((long)c * g.H + r) * g.Wr + x0);
        const vf l = sel(act, le * v_tanh(h[c + K] + ldv(bm + ((long)(c + K) * g.H + r) * g.Wr + x0)), 0.0f);
        float* p = pl.x[first + c] + g.at(r, x0);
        const vf v = ldv(p);  // zero on the tail lanes, which stay zero
        stv(p, sel(act, inverse ? (v - t) * v_exp(-l) : v * v_exp(l) + t, v));
        lsum += l;
      }
      ld += hsumd(lsum);
    }
  return inverse ? -ld : ld;
}

template <int WD>
double cac(Planes& pl, const float* net, float e, bool inverse, const Geo& g) {
  const float* in[4] = {pl.x[0], pl.y[0], pl.y[1], pl.y[2]};
  return coupling<WD, 4, 2, false>(pl, in, 1, net, e, 0, inverse, g);
}

template <int WD>
double spc(Planes& pl, const float* net, float e, int parity, bool inverse, const Geo& g) {
  for (int r = 0; r < g.H; ++r)  // the net's input: the other colour of x, and 1 - m (zero outside the image)
    for (int x0 = 0; x0 < g.Wr; x0 += VL) {
      const vi ok = valid(g, x0);
      const vi m = ((lanes() + (r + x0 + parity)) & 1) == 0;
      const long o = g.at(r, x0);
      for (int c = 0; c < 3; ++c) stv(pl.xm[c] + o, sel(m, splat(0.0f), ldv(pl.x[c] + o)));
      stv(pl.keep + o, sel(ok & ~m, splat(1.0f), 0.0f));
    }
  const float* in[7] = {pl.xm[0], pl.xm[1], pl.xm[2], pl.y[0], pl.y[1], pl.y[2], pl.keep};
  return coupling<WD, 7, 3, true>(pl, in, 0, net, e, parity, inverse, g);
}

void elementwise(Planes& pl, const int* op, const float* params, const float* ps, bool inverse, const Geo& g) {
  const int kind = op[0];
  const float* p = params + op[1];
  const float* s = ps + op[2];
  for (int r = 0; r < g.H; ++r)
    for (int x0 = 0; x0 < g.Wr; x0 += VL) {
      const vi ok = valid(g, x0);
      const long o = g.at(r, x0);
      vf v[3];
      for (int c = 0; c < 3; ++c) v[c] = ldv(pl.x[c] + o);
      if (kind == SCALE) {
        for (int c = 0; c < 3; ++c) v[c] = v[c] * p[0];
      } else if (kind == AFFINE) {
        for (int c = 0; c < 3; ++c) v[c] = (v[c] + s[c]) * s[3 + c] + s[6 + c];
      } else if (kind == SDL) {
        for (int c = 0; c < 3; ++c) {
          vf y = ldv(pl.y[c] + o);
          y = sel(y < 0.0f, splat(0.0f), sel(y > 1.0f, splat(1.0f), y));
          const vf sd = v_sqrt(s[c] * y + s[3 + c]);
          v[c] = inverse ? v[c] * sd : v[c] / sd;
        }
      } else {  // MIX
        const vf a = v[0], b = v[1], c = v[2];
        for (int k = 0; k < 3; ++k) v[k] = p[3 * k] * a + p[3 * k + 1] * b + p[3 * k + 2] * c;
      }
      for (int c = 0; c < 3; ++c) stv(pl.x[c] + o, sel(ok, v[c], 0.0f));
    }
}

template <int WD>
void eval_impl(const float* x, float* z, double* ld, int B, int H, int W, const float* clean, int nops, const int* ops,
               const float* params, const float* ps, int ps_stride, bool inverse, int nthreads) {
  const Geo g(H, W);
  const int nplanes = 3 + 3 + 3 + 1 + WD;
  const int nt = nthreads < B ? nthreads : B;  // one sample per thread at a time: no scratch for idle threads
#pragma omp parallel num_threads(nt)
  {
    std::vector<float> buf((size_t)nplanes * g.S, 0.0f);  // borders stay zero: only valid rows/columns are written
    Planes pl;
    float* q = buf.data();
    for (int c = 0; c < 3; ++c, q += g.S) pl.x[c] = q;
    for (int c = 0; c < 3; ++c, q += g.S) pl.y[c] = q;
    for (int c = 0; c < 3; ++c, q += g.S) pl.xm[c] = q;
    pl.keep = q;
    q += g.S;
    for (int c = 0; c < WD; ++c, q += g.S) pl.h[c] = q;
#pragma omp for schedule(dynamic)
    for (int b = 0; b < B; ++b) {
      for (int c = 0; c < 3; ++c) {
        const long u = ((long)b * 3 + c) * H * W;
        for (int r = 0; r < H; ++r)
          for (int x0 = 0; x0 < g.Wr; x0 += VL) {
            const int n = W - x0 < VL ? W - x0 : VL;
            stv(pl.x[c] + g.at(r, x0), ld_tail(x + u + (long)r * W + x0, n));
            stv(pl.y[c] + g.at(r, x0), ld_tail(clean + u + (long)r * W + x0, n));
          }
      }
      const float* row = ps + (long)b * ps_stride;
      double total = 0.0;
      for (int k = 0; k < nops; ++k) {
        const int* op = ops + 4 * k;
        if (op[0] == CAC) total += cac<WD>(pl, params + op[1], row[op[2]], inverse, g);
        else if (op[0] == SPC) total += spc<WD>(pl, params + op[1], row[op[2]], op[3], inverse, g);
        else elementwise(pl, op, params, row, inverse, g);
      }
      ld[b] = total;
      for (int c = 0; c < 3; ++c) {
        const long u = ((long)b * 3 + c) * H * W;
        for (int r = 0; r < H; ++r)
          for (int x0 = 0; x0 < g.Wr; x0 += VL) {
            const int n = W - x0 < VL ? W - x0 : VL;
            st_tail(z + u + (long)r * W + x0, ldv(pl.x[c] + g.at(r, x0)), n);
          }
      }
    }
  }
}

}  // namespace

extern "C" {

int srgb_abi_version() { return 1; }

// pixels per vector block (bias-map rows are padded to a multiple of it)
int srgb_vector_lanes() { return VL; }

// Every op of ops (in execution order) on each sample: x [B, 3, H, W] -> z (may alias x), ld [B] (double) the sum of
// the couplings' log-determinants in the direction run; clean [B, 3, H, W]; ps [B, ps_stride] the per-sample values.
// Returns 0, or -1 for an unsupported width.
int srgb_eval(const float* x, float* z, double* ld, int B, int H, int W, const float* clean, int nops, const int* ops,
              const float* params, const float* ps, int ps_stride, int wd, int inverse, int nthreads) {
  switch (wd) {
    case 4: eval_impl<4>(x, z, ld, B, H, W, clean, nops, ops, params, ps, ps_stride, inverse != 0, nthreads); break;
    case 8: eval_impl<8>(x, z, ld, B, H, W, clean, nops, ops, params, ps, ps_stride, inverse != 0, nthreads); break;
    case 16: eval_impl<16>(x, z, ld, B, H, W, clean, nops, ops, params, ps, ps_stride, inverse != 0, nthreads); break;
    default: return -1;
  }
  return 0;
}

}  // extern "C"
