// Winograd F(4x4, 3x3) transforms for 3x3 convolutions (stride 1, zero padding 1) on channels-last float32.
//
// Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016: a 4x4 output tile of a 3x3
// convolution is A^T [ (G g G^T) (.) (B^T d B) ] A, where d is the 6x6 input tile around it, (.) the elementwise
// product over the 36 positions and a sum over input channels; the sum over channels makes it 36 matrix products
// [tiles, Cin] x [Cin, Cout], done by the Python side with torch.bmm (MKL). Interpolation points 0, 1, -1, 2, -2, inf.
// The transforms (all of them adjoint-paired for the backward pass):
//
//   wg_in       X [B, H, W, C]        -> V [36, T, C]    V = B^T d B per tile (zero padding outside the image)
//   wg_out      M [36, T, Co] (+bias) -> Y [B, H, W, Co] Y = A^T m A (+ bias, optional ReLU), valid pixels only
//   wg_out_adj  dY [B, H, W, Co]      -> dM [36, T, Co]  adjoint of wg_out; with Y given, dY is masked by Y > 0
//   wg_in_adj   dV [36, T, C]         -> dX [B, H, W, C] adjoint of wg_in (overlapping tiles summed; or += dX)
//   wg_wt       W [Co, Ci, 3, 3]      -> U [36, Ci, Co]  U = G g G^T, g = W * scale (a per-C_out factor, optional)
//   wg_wt_adj   dU [36, Ci, Co]       -> dW [Co, Ci, 3, 3], dscale [Co]
//
// Tiles: th = ceil(H/4) rows x tw = ceil(W/4) columns per image, T = B*th*tw, tile t = (b*th + ty)*tw + tx, whose
// outputs are rows 4ty..4ty+3 and columns 4tx..4tx+3 and whose input window is rows 4ty-1..4ty+4 (same for
// columns). Channels are processed in vectors of VL (the register width, vec.h), scalars for a tail.
#include "vec.h"

namespace {

// the 1-D transforms, generic over vf and float
template <class T>
inline void bt6(const T* d, T* v) {  // v = B^T d
  v[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
  v[1] = d[3] + d[4] - 4.0f * (d[1] + d[2]);
  v[2] = d[4] - d[3] + 4.0f * (d[1] - d[2]);
  v[3] = d[4] - d[2] + 2.0f * (d[3] - d[1]);
  v[4] = d[4] - d[2] + 2.0f * (d[1] - d[3]);
  v[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
}
template <class T>
inline void bt6_adj(const T* v, T* d) {  // d = B v
  d[0] = 4.0f * v[0];
  d[1] = 4.0f * (v[2] - v[1] + v[5]) + 2.0f * (v[4] - v[3]);
  d[2] = -5.0f * v[0] - 4.0f * (v[1] + v[2]) - v[3] - v[4];
  d[3] = v[1] - v[2] + 2.0f * (v[3] - v[4]) - 5.0f * v[5];
  d[4] = v[0] + v[1] + v[2] + v[3] + v[4];
  d[5] = v[5];
}
template <class T>
inline void at6(const T* m, T* y) {  // y = A^T m
  T s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  y[0] = m[0] + s12 + s34;
  y[1] = d12 + 2.0f * d34;
  y[2] = s12 + 4.0f * s34;
  y[3] = d12 + 8.0f * d34 + m[5];
}
template <class T>
inline void at6_adj(const T* y, T* m) {  // m = A y
  T s02 = y[0] + y[2], s13 = y[1] + y[3];
  m[0] = y[0];
  m[1] = s02 + s13;
  m[2] = s02 - s13;
  T p = y[0] + 4.0f * y[2], q = 2.0f * y[1] + 8.0f * y[3];
  m[3] = p + q;
  m[4] = p - q;
  m[5] = y[3];
}

template <class T>
inline void g3(const T* d, T* u) {  // u = G d (3 -> 6)
  const T s = d[0] + d[2], q = d[0] * (1.0f / 24.0f) + d[2] * (1.0f / 6.0f), r = d[1] * (1.0f / 12.0f);
  u[0] = d[0] * 0.25f;
  u[1] = (s + d[1]) * (-1.0f / 6.0f);
  u[2] = (s - d[1]) * (-1.0f / 6.0f);
  u[3] = q + r;
  u[4] = q - r;
  u[5] = d[2];
}
template <class T>
inline void g3_adj(const T* u, T* d) {  // d = G^T u (6 -> 3)
  const T a = u[1] + u[2], b = u[3] + u[4];
  d[0] = u[0] * 0.25f - a * (1.0f / 6.0f) + b * (1.0f / 24.0f);
  d[1] = (u[2] - u[1]) * (1.0f / 6.0f) + (u[3] - u[4]) * (1.0f / 12.0f);
  d[2] = (b - a) * (1.0f / 6.0f) + u[5];
}

struct Geo {
  int B, H, W, C, th, tw;
  long T;
};
inline Geo geo(int B, int H, int W, int C) {
  Geo g{B, H, W, C, (H + 3) / 4, (W + 3) / 4, 0};
  g.T = (long)B * g.th * g.tw;
  return g;
}

// one tile of wg_in for channels [c, c+n) (n = VL with T = vf, 1 with T = float)
template <class T>
inline void in_tile(const float* X, float* V, const Geo& g, long t, int b, int ty, int tx, int c) {
  T d[6][6], r[6][6];
  const int y0 = 4 * ty - 1, x0 = 4 * tx - 1;
  for (int i = 0; i < 6; ++i) {
    const int yy = y0 + i;
    for (int j = 0; j < 6; ++j) {
      const int xx = x0 + j;
      if (yy < 0 || yy >= g.H || xx < 0 || xx >= g.W) {
        d[i][j] = T{} + 0.0f;
      } else {
        const float* p = X + (((long)b * g.H + yy) * g.W + xx) * g.C + c;
        if constexpr (sizeof(T) == sizeof(float)) d[i][j] = *p; else d[i][j] = ldv(p);
      }
    }
  }
  T col[6], out[6];
  for (int j = 0; j < 6; ++j) {  // columns: B^T along rows of the tile
    for (int i = 0; i < 6; ++i) col[i] = d[i][j];
    bt6(col, out);
    for (int i = 0; i < 6; ++i) r[i][j] = out[i];
  }
  for (int i = 0; i < 6; ++i) {
    bt6(r[i], out);
    for (int j = 0; j < 6; ++j) {
      float* q = V + ((long)(i * 6 + j) * g.T + t) * g.C + c;
      if constexpr (sizeof(T) == sizeof(float)) *q = out[j]; else stv(q, out[j]);
    }
  }
}

template <class T>
inline void out_tile(const float* M, const float* bias, int relu, float* Y, const Geo& g, long t, int b, int ty,
                     int tx, int c) {
  T m[6][6], r[4][6], y[4];
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) {
      const float* p = M + ((long)(i * 6 + j) * g.T + t) * g.C + c;
      if constexpr (sizeof(T) == sizeof(float)) m[i][j] = *p; else m[i][j] = ldv(p);
    }
  T col[6], o4[4];
  for (int j = 0; j < 6; ++j) {
    for (int i = 0; i < 6; ++i) col[i] = m[i][j];
    at6(col, o4);
    for (int i = 0; i < 4; ++i) r[i][j] = o4[i];
  }
  T bv;
  if constexpr (sizeof(T) == sizeof(float)) bv = bias ? bias[c] : 0.0f; else bv = bias ? ldv(bias + c) : T{} + 0.0f;
  for (int i = 0; i < 4; ++i) {
    const int yy = 4 * ty + i;
    if (yy >= g.H) break;
    at6(r[i], y);
    for (int j = 0; j < 4; ++j) {
      const int xx = 4 * tx + j;
      if (xx >= g.W) break;
      T v = y[j] + bv;
      if (relu) {
        if constexpr (sizeof(T) == sizeof(float)) v = v < 0.0f ? 0.0f : v; else v = v < 0.0f ? T{} + 0.0f : v;
      }
      float* q = Y + (((long)b * g.H + yy) * g.W + xx) * g.C + c;
      if constexpr (sizeof(T) == sizeof(float)) *q = v; else stv(q, v);
    }
  }
}

template <class T>
inline void out_adj_tile(const float* dY, const float* Y, float* dM, const Geo& g, long t, int b, int ty, int tx,
                         int c) {
  T d[4][4], r[4][6];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      const int yy = 4 * ty + i, xx = 4 * tx + j;
      if (yy >= g.H || xx >= g.W) {
        d[i][j] = T{} + 0.0f;
        continue;
      }
      const long o = (((long)b * g.H + yy) * g.W + xx) * g.C + c;
      if constexpr (sizeof(T) == sizeof(float)) {
        d[i][j] = (Y && !(Y[o] > 0.0f)) ? 0.0f : dY[o];
      } else {
        T v = ldv(dY + o);
        if (Y) v = ldv(Y + o) > 0.0f ? v : T{} + 0.0f;
        d[i][j] = v;
      }
    }
  T six[6];
  for (int i = 0; i < 4; ++i) {
    at6_adj(d[i], six);
    for (int j = 0; j < 6; ++j) r[i][j] = six[j];
  }
  T col[4];
  for (int j = 0; j < 6; ++j) {
    for (int i = 0; i < 4; ++i) col[i] = r[i][j];
    at6_adj(col, six);
    for (int i = 0; i < 6; ++i) {
      float* q = dM + ((long)(i * 6 + j) * g.T + t) * g.C + c;
      if constexpr (sizeof(T) == sizeof(float)) *q = six[i]; else stv(q, six[i]);
    }
  }
}

template <class T>
inline void in_adj_tile(const float* dV, float* dX, const Geo& g, long t, int b, int ty, int tx, int c) {
  T v[6][6], r[6][6];
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) {
      const float* p = dV + ((long)(i * 6 + j) * g.T + t) * g.C + c;
      if constexpr (sizeof(T) == sizeof(float)) v[i][j] = *p; else v[i][j] = ldv(p);
    }
  T six[6];
  for (int i = 0; i < 6; ++i) {
    bt6_adj(v[i], six);
    for (int j = 0; j < 6; ++j) r[i][j] = six[j];
  }
  T col[6];
  const int y0 = 4 * ty - 1, x0 = 4 * tx - 1;
  for (int j = 0; j < 6; ++j) {
    const int xx = x0 + j;
    for (int i = 0; i < 6; ++i) col[i] = r[i][j];
    bt6_adj(col, six);
    if (xx < 0 || xx >= g.W) continue;
    for (int i = 0; i < 6; ++i) {
      const int yy = y0 + i;
      if (yy < 0 || yy >= g.H) continue;
      float* q = dX + (((long)b * g.H + yy) * g.W + xx) * g.C + c;
      if constexpr (sizeof(T) == sizeof(float)) *q += six[i]; else stv(q, ldv(q) + six[i]);
    }
  }
}

// every channel block of C (vectors of VL, then scalars)
template <class F>
inline void channels(int C, F&& f) {
  int c = 0;
  for (; c + VL <= C; c += VL) f(c, true);
  for (; c < C; ++c) f(c, false);
}

// f(t, b, ty, tx, c, vec) for every tile and channel block; tile rows in parallel (their writes do not overlap)
template <class F>
inline void every_tile(const Geo& g, int nthreads, F&& f) {
  const long rows = (long)g.B * g.th;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (long br = 0; br < rows; ++br) {
    const int b = (int)(br / g.th), ty = (int)(br % g.th);
    for (int tx = 0; tx < g.tw; ++tx) {
      const long t = br * g.tw + tx;
      channels(g.C, [&](int c, bool vec) { f(t, b, ty, tx, c, vec); });
    }
  }
}

}  // namespace

extern "C" {

int wg_abi_version() { return 4; }

void wg_in(const float* X, float* V, int B, int H, int W, int C, int nthreads) {
  const Geo g = geo(B, H, W, C);
  every_tile(g, nthreads, [&](long t, int b, int ty, int tx, int c, bool vec) {
    if (vec) in_tile<vf>(X, V, g, t, b, ty, tx, c); else in_tile<float>(X, V, g, t, b, ty, tx, c);
  });
}

void wg_out(const float* M, const float* bias, int relu, float* Y, int B, int H, int W, int C, int nthreads) {
  const Geo g = geo(B, H, W, C);
  every_tile(g, nthreads, [&](long t, int b, int ty, int tx, int c, bool vec) {
    if (vec) out_tile<vf>(M, bias, relu, Y, g, t, b, ty, tx, c);
    else out_tile<float>(M, bias, relu, Y, g, t, b, ty, tx, c);
  });
}

void wg_out_adj(const float* dY, const float* Y, float* dM, int B, int H, int W, int C, int nthreads) {
  const Geo g = geo(B, H, W, C);
  every_tile(g, nthreads, [&](long t, int b, int ty, int tx, int c, bool vec) {
    if (vec) out_adj_tile<vf>(dY, Y, dM, g, t, b, ty, tx, c);
    else out_adj_tile<float>(dY, Y, dM, g, t, b, ty, tx, c);
  });
}

// dX is overwritten (accumulate = 0) or added to (accumulate = 1). Tile rows ty and ty+1 overlap (input rows 4ty+3, 4ty+4), ty and ty+2 do not: the even tile
// rows run in parallel, then the odd ones; within a tile row the tiles run in order (they overlap in columns).
void wg_in_adj(const float* dV, float* dX, int B, int H, int W, int C, int accumulate, int nthreads) {
  const Geo g = geo(B, H, W, C);
  if (!accumulate) std::memset(dX, 0, sizeof(float) * (size_t)B * H * W * C);
  const long half = (long)B * ((g.th + 1) / 2);
  for (int parity = 0; parity < 2; ++parity) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (long k = 0; k < half; ++k) {
      const int b = (int)(k / ((g.th + 1) / 2)), ty = 2 * (int)(k % ((g.th + 1) / 2)) + parity;
      if (ty >= g.th) continue;
      for (int tx = 0; tx < g.tw; ++tx) {
        const long t = ((long)b * g.th + ty) * g.tw + tx;
        channels(C, [&](int c, bool vec) {
          if (vec) in_adj_tile<vf>(dV, dX, g, t, b, ty, tx, c); else in_adj_tile<float>(dV, dX, g, t, b, ty, tx, c);
        });
      }
    }
  }
}

// weight transform U = G g G^T of g = W * scale: W [Co, Ci, 3, 3] (PyTorch's layout), scale [Co] per output
// channel (nullptr: 1) -> U [36, Ci, Co]. G [Ci, 3, 3, Co] is scratch for g with C_out last (a blocked transpose
// first, so that the transform reads and writes whole vectors of output channels).
void wg_wt(const float* W, const float* scale, float* G, float* U, int Ci, int Co, int nthreads) {
  const int K = Ci * 9;
#pragma omp parallel num_threads(nthreads)
  {
#pragma omp for schedule(static)
    for (int k0 = 0; k0 < K; k0 += VL)  // G[k][co] = W[co][k] * scale[co], VL x VL blocks
      for (int c0 = 0; c0 < Co; c0 += VL)
        for (int co = c0; co < c0 + VL && co < Co; ++co) {
          const float sc = scale ? scale[co] : 1.0f;
          for (int k = k0; k < k0 + VL && k < K; ++k) G[(long)k * Co + co] = W[(long)co * K + k] * sc;
        }
#pragma omp for schedule(static)
    for (int ci = 0; ci < Ci; ++ci) {
      channels(Co, [&](int c, bool vec) {
        auto run = [&](auto zero) {
          using T = decltype(zero);
          T w[3][3], r[6][3], col[3], six[6];
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) {
              const float* p = G + ((long)ci * 9 + i * 3 + j) * Co + c;
              if constexpr (sizeof(T) == sizeof(float)) w[i][j] = *p; else w[i][j] = ldv(p);
            }
          for (int j = 0; j < 3; ++j) {
            for (int i = 0; i < 3; ++i) col[i] = w[i][j];
            g3(col, six);
            for (int a = 0; a < 6; ++a) r[a][j] = six[a];
          }
          for (int a = 0; a < 6; ++a) {
            g3(r[a], six);
            for (int b = 0; b < 6; ++b) {
              float* q = U + ((long)(a * 6 + b) * Ci + ci) * Co + c;
              if constexpr (sizeof(T) == sizeof(float)) *q = six[b]; else stv(q, six[b]);
            }
          }
        };
        if (vec) run(vf{}); else run(0.0f);
      });
    }
  }
}

// its adjoint: dU [36, Ci, Co] -> dW [Co, Ci, 3, 3] (the gradient of W, i.e. scale * dg) and, when dscale is
// given, dscale [Co] = sum over (Ci, 3, 3) of dg * W, with dg the gradient of g = W * scale; dG [Ci, 3, 3, Co] is
// scratch for dg with C_out last
void wg_wt_adj(const float* dU, const float* W, const float* scale, float* dG, float* dW, float* dscale, int Ci,
               int Co, int nthreads) {
  const int K = Ci * 9;
#pragma omp parallel num_threads(nthreads)
  {
#pragma omp for schedule(static)
    for (int ci = 0; ci < Ci; ++ci) {
      channels(Co, [&](int c, bool vec) {
        auto run = [&](auto zero) {
          using T = decltype(zero);
          T u[6][6], r[6][3], col[6], three[3];
          for (int p = 0; p < 36; ++p) {
            const float* q = dU + ((long)p * Ci + ci) * Co + c;
            if constexpr (sizeof(T) == sizeof(float)) u[p / 6][p % 6] = *q; else u[p / 6][p % 6] = ldv(q);
          }
          for (int a = 0; a < 6; ++a) {
            g3_adj(u[a], three);
            for (int j = 0; j < 3; ++j) r[a][j] = three[j];
          }
          for (int j = 0; j < 3; ++j) {
            for (int a = 0; a < 6; ++a) col[a] = r[a][j];
            g3_adj(col, three);
            for (int i = 0; i < 3; ++i) {
              float* q = dG + ((long)ci * 9 + i * 3 + j) * Co + c;
              if constexpr (sizeof(T) == sizeof(float)) *q = three[i]; else stv(q, three[i]);
            }
          }
        };
        if (vec) run(vf{}); else run(0.0f);
      });
    }
    // dW[co][k] = scale[co] * dG[k][co] (VL x VL blocks of output channels), dscale[co] = <dG[:, co], W[co]>
#pragma omp for schedule(static)
    for (int c0 = 0; c0 < Co; c0 += VL) {
      const int c1 = c0 + VL < Co ? c0 + VL : Co;
      double total[VL] = {};
      float sc[VL];
      for (int co = c0; co < c1; ++co) sc[co - c0] = scale ? scale[co] : 1.0f;
      for (int k0 = 0; k0 < K; k0 += VL) {
        const int k1 = k0 + VL < K ? k0 + VL : K;
        float part[VL] = {};  // one running sum per output channel (independent: no latency chain)
        for (int k = k0; k < k1; ++k)
          for (int co = c0; co < c1; ++co) {
            const float g = dG[(long)k * Co + co];
            part[co - c0] += g * W[(long)co * K + k];
            dW[(long)co * K + k] = g * sc[co - c0];
          }
        for (int co = c0; co < c1; ++co) total[co - c0] += part[co - c0];
      }
      if (dscale)
        for (int co = c0; co < c1; ++co) dscale[co] = (float)total[co - c0];
    }
  }
}

}  // extern "C"
