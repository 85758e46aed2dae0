// Exact 1-bit convolution kernels for the deployed NAS-BNN binary convs (nasbnn_mm/deploy/bitconv.py).
//
// One binary conv:  s = sign(x + b) in {-1, 0, +1} (b: per-channel RSign threshold, float32 add),
// zero padding of s by k/2, acc[n, o, p] = sum over the group's input channels and the k x k window of
// s * w (w in {-1, +1}), out = float32(acc) * alpha[o] (one rounding; acc is an exact integer), then
// optionally  out = out * scale[o] + shift[o]  (two roundings, no FMA contraction: -ffp-contract=off).
//
// Bit encoding (1 = negative):
//   activations  sign plane  bit = (x + b < 0),   nonzero plane  bit = (x + b != 0)
//   weights      bit = (w < 0)
// For s, w in {-1, +1}: s * w = 1 - 2 * (s_bit XOR w_bit), so over n terms  sum = n - 2 * popcount(XOR).
// A zero s (an exact x + b == 0, or the zero padding) has nonzero bit 0 and is masked out (see below).
//
// Packed activations: uint32 words, (N, Hp, Wp, G * Wg) with Hp = H + 2 pad, Wp = W + 2 pad, Wg =
// ceil(cpg / 32) words per group and pixel; channel c of group g is bit (c % 32) of word g * Wg + c / 32.
// The padding ring and the tail bits of a group's last word are 0 in both planes. Packing reads x (NCHW
// or NHWC float32) once with the threshold add fused in: on AVX-512 / AVX2 a fast pass takes the sign
// plane from the float sign bits of x + b and only checks for special values (x + b == +-0 or NaN);
// without any, the nonzero plane is the constant all-valid pattern (0 on the ring). With one, a second,
// exact pass (compares) redoes both planes. It reports whether any x + b == 0. NaN counts as +1 (x + b
// < 0 is false, != 0 is true) on every path; the float reference gives NaN there.
//
// Packed weights: uint32 words, (G, OB, K*K, Wg, 16): OB = ceil(opg / 16) blocks of 16 output channels
// ("lanes") per group; word [g, ob, kpos, j, l] holds input channels j*32..j*32+31 of output channel
// g*opg + ob*16 + l at kernel position kpos = ky*K + kx. Lanes past opg and bits past cpg are 0. That is
// all a layer keeps: 1 bit per weight (plus padding to whole words and lanes) and alpha.
//
// Two exact kernel variants, chosen per register tile of output pixels (both read the zero-padded buffer):
//   * plain: every window of the tile lies inside the image and no x + b == 0 occurred anywhere:
//       acc = K*K*cpg - 2 * popcount(sum of s XOR w)           (tail bits: 0 XOR 0)
//   * masked: a window touches the padding, or some x + b == 0 exactly: terms are masked with the
//     nonzero plane, which is 0 on the padding ring and on exact zeros, so those contribute 0:
//       acc = popcount(nonzero bits in the window) - 2 * popcount((s XOR w) AND nonzero)
//     (on AVX-512 one vpternlogd replaces the XOR: the same instruction count, plus one broadcast and
//     one scalar popcount per pixel and step).
// Vectorization is over output channels: an activation word (32 input channels) is broadcast and XORed
// with the words of 16 output channels (one zmm); a register tile of 2 output pixels x NB <= 4 blocks of 16
// channels accumulates 32-bit popcounts (AVX-512 VPOPCNTD; AVX2: pshufb nibble table into byte
// counters, widened to 32 bits every 31 steps; scalar: __builtin_popcount). All paths compute the same
// integers. 32-bit words (not 64) keep the epilogue at one zmm of 16 float outputs and waste fewer bits
// on the Table-1 group widths (24, 48, 96 channels per group).
//
// Output: float32 (N, cout, Ho, Wo), channels_last (NHWC in memory; what the next layer's packing reads
// fastest) or contiguous NCHW. Ho = (H + 2 pad - K) / stride + 1.
//
// Threads: at::parallel_for over output rows (each thread: every channel tile over its rows, so a tile's
// weights stay in L1 across them); with fewer rows than 2 per thread over (channel tile, row) items;
// packing runs over input rows.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "glue.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <tuple>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NASBNN_X86 1
#else
#define NASBNN_X86 0
#endif

namespace {

using u32 = uint32_t;

constexpr int64_t kBits = 32;   // input channels per word
constexpr int64_t kLanes = 16;  // output channels per weight block

enum Isa : int64_t { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

bool isa_supported(int64_t isa) {
#if NASBNN_X86
  __builtin_cpu_init();
  switch (isa) {
    case kScalar: return true;
    case kAvx2: return __builtin_cpu_supports("avx2");
    case kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512vpopcntdq");
    default: return false;
  }
#else
  return isa == kScalar;
#endif
}

int64_t best_isa() {
  for (int64_t i : {kAvx512, kAvx2})
    if (isa_supported(i)) return i;
  return kScalar;
}

void check_isa(int64_t isa) {
  TORCH_CHECK(isa >= kScalar && isa <= kAvx512, "nasbnn bitconv: isa ", isa,
              " not allowed (allowed: 0 scalar, 1 avx2, 2 avx512)");
  TORCH_CHECK(isa_supported(isa), "nasbnn bitconv: isa ", isa, " not supported by this CPU (best: ", best_isa(), ")");
}

inline u32 low_mask(int64_t nbits) { return nbits >= 32 ? ~u32(0) : (u32(1) << nbits) - 1; }

// ---------------------------------------------------------------- geometry
struct Geom {
  int64_t N, C, H, W;     // input
  int64_t G, cpg, Wg;     // groups, input channels per group, words per group and pixel
  int64_t K, S, pad, kk;  // kernel, stride, padding, K*K
  int64_t Hp, Wp, Ho, Wo;
  int64_t cout, opg, OB;  // output channels, per group, 16-lane blocks per group
  int64_t GW() const { return G * Wg; }
};

Geom make_geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t groups, int64_t kernel, int64_t stride,
               int64_t cout) {
  TORCH_CHECK(groups >= 1, "nasbnn bitconv: groups ", groups, " not allowed (allowed: >= 1)");
  TORCH_CHECK(C % groups == 0, "nasbnn bitconv: in_channels ", C, " not divisible by groups ", groups);
  TORCH_CHECK(cout >= 1 && cout % groups == 0, "nasbnn bitconv: out_channels ", cout, " not a positive multiple of groups ",
              groups);
  TORCH_CHECK(kernel >= 1 && kernel % 2 == 1, "nasbnn bitconv: kernel ", kernel, " not allowed (allowed: odd >= 1)");
  TORCH_CHECK(stride >= 1, "nasbnn bitconv: stride ", stride, " not allowed (allowed: >= 1)");
  TORCH_CHECK(N >= 1 && H >= 1 && W >= 1, "nasbnn bitconv: empty input (N, H, W) = (", N, ", ", H, ", ", W, ")");
  Geom g{};
  g.N = N; g.C = C; g.H = H; g.W = W;
  g.G = groups; g.cpg = C / groups; g.Wg = (g.cpg + kBits - 1) / kBits;
  g.K = kernel; g.S = stride; g.pad = kernel / 2; g.kk = kernel * kernel;
  g.Hp = H + 2 * g.pad; g.Wp = W + 2 * g.pad;
  g.Ho = (H + 2 * g.pad - kernel) / stride + 1;
  g.Wo = (W + 2 * g.pad - kernel) / stride + 1;
  g.cout = cout; g.opg = cout / groups; g.OB = (g.opg + kLanes - 1) / kLanes;
  TORCH_CHECK(g.kk * g.cpg < (int64_t(1) << 24), "nasbnn bitconv: K*K*in_channels/groups = ", g.kk * g.cpg,
              " not allowed (allowed: < 2^24, where float32 holds every sum exactly)");
  return g;
}

inline int64_t packed_offset(const Geom& g, int64_t n, int64_t hp, int64_t wp) {
  return ((n * g.Hp + hp) * g.Wp + wp) * g.GW();
}

// ---------------------------------------------------------------- activation packing
struct PackArgs {
  Geom g;
  const float* x;
  const float* b;     // the threshold (C values)
  bool channels_last;
  u32* s;             // sign plane
  u32* z;             // nonzero plane
  uint8_t* row_zero;  // per input row (n, h): some x + b == 0
};

void pack_row_scalar(const PackArgs& a, int64_t n, int64_t h, std::vector<u32>& ts, std::vector<u32>& tz) {
  const Geom& g = a.g;
  u32 zero_bits = 0;
  if (a.channels_last) {
    for (int64_t w = 0; w < g.W; ++w) {
      const float* px = a.x + ((n * g.H + h) * g.W + w) * g.C;
      const int64_t o = packed_offset(g, n, h + g.pad, w + g.pad);
      for (int64_t gi = 0; gi < g.G; ++gi)
        for (int64_t j = 0; j < g.Wg; ++j) {
          const int64_t c0 = gi * g.cpg + j * kBits, nb = std::min<int64_t>(kBits, g.cpg - j * kBits);
          u32 s = 0, z = 0;
          for (int64_t t = 0; t < nb; ++t) {
            const float u = px[c0 + t] + a.b[c0 + t];
            s |= u32(u < 0.f) << t;
            z |= u32(u != 0.f) << t;
          }
          a.s[o + gi * g.Wg + j] = s;
          a.z[o + gi * g.Wg + j] = z;
          zero_bits |= z ^ low_mask(nb);
        }
    }
  } else {
    ts.resize(g.W);
    tz.resize(g.W);
    const int64_t plane = g.H * g.W;
    const int64_t o = packed_offset(g, n, h + g.pad, g.pad);
    for (int64_t gi = 0; gi < g.G; ++gi)
      for (int64_t j = 0; j < g.Wg; ++j) {
        const int64_t c0 = gi * g.cpg + j * kBits, nb = std::min<int64_t>(kBits, g.cpg - j * kBits);
        std::fill(ts.begin(), ts.end(), 0);
        std::fill(tz.begin(), tz.end(), 0);
        for (int64_t t = 0; t < nb; ++t) {
          const float* row = a.x + (n * g.C + c0 + t) * plane + h * g.W;
          const float bc = a.b[c0 + t];
          for (int64_t w = 0; w < g.W; ++w) {
            const float u = row[w] + bc;
            ts[w] |= u32(u < 0.f) << t;
            tz[w] |= u32(u != 0.f) << t;
          }
        }
        const u32 m = low_mask(nb);
        for (int64_t w = 0; w < g.W; ++w) {
          a.s[o + w * g.GW() + gi * g.Wg + j] = ts[w];
          a.z[o + w * g.GW() + gi * g.Wg + j] = tz[w];
          zero_bits |= tz[w] ^ m;
        }
      }
  }
  a.row_zero[n * g.H + h] = zero_bits != 0;
}

// ---------------------------------------------------------------- conv context and shared epilogue
struct ConvCtx {
  Geom g;
  const u32* act;
  const u32* nz;
  const u32* wb;
  const float* alpha;
  const float* scale;  // optional (nullptr)
  const float* shift;  // optional (nullptr)
  float* out;
  bool out_cl;
  bool any_zero;               // some x + b == 0: every tile takes the masked variant
  int64_t ntiles, nb_base;     // channel tiles per group, 16-lane blocks per tile (the last may be smaller)
  std::vector<int64_t> off;    // per reduction step t = (ky * K + kx) * Wg + j: its word offset from the window's
                               // top-left pixel (word 0 of the group) in the packed activations
};

// whether the windows of output pixels [ow0, ow1] of row oh all lie inside the image (no padding read)
inline bool inside(const Geom& g, int64_t oh, int64_t ow0, int64_t ow1) {
  const int64_t ih = oh * g.S;
  return ih >= g.pad && ih + g.K - 1 < g.pad + g.H && ow0 * g.S >= g.pad && ow1 * g.S + g.K - 1 < g.pad + g.W;
}

inline int64_t out_index(const ConvCtx& c, int64_t n, int64_t oh, int64_t ow, int64_t o) {
  const Geom& g = c.g;
  return c.out_cl ? ((n * g.Ho + oh) * g.Wo + ow) * g.cout + o : ((n * g.cout + o) * g.Ho + oh) * g.Wo + ow;
}

// out = float(v) * alpha (then * scale, + shift) for the valid lanes of block ob
void store_scalar(const ConvCtx& c, int64_t n, int64_t oh, int64_t ow, int64_t gi, int64_t ob, const int32_t v[16]) {
  const Geom& g = c.g;
  const int64_t o0 = gi * g.opg + ob * kLanes, nl = std::min<int64_t>(kLanes, g.opg - ob * kLanes);
  for (int64_t l = 0; l < nl; ++l) {
    const int64_t o = o0 + l;
    float y = static_cast<float>(v[l]) * c.alpha[o];
    if (c.scale) y = y * c.scale[o];
    if (c.shift) y = y + c.shift[o];
    c.out[out_index(c, n, oh, ow, o)] = y;
  }
}

// ---------------------------------------------------------------- scalar kernel (portable)
template <bool MASKED>
void pixel_scalar(const ConvCtx& c, int64_t gi, int64_t ob, int64_t n, int64_t oh, int64_t ow) {
  const Geom& g = c.g;
  const int64_t steps = g.kk * g.Wg;
  const u32* wblk = c.wb + (gi * g.OB + ob) * steps * kLanes;
  const int64_t base = packed_offset(g, n, oh * g.S, ow * g.S) + gi * g.Wg;
  int32_t pop[16] = {0};
  int32_t nzc = 0;
  for (int64_t t = 0; t < steps; ++t) {
    const u32 a = c.act[base + c.off[t]];
    const u32* w16 = wblk + t * kLanes;
    if (MASKED) {
      const u32 m = c.nz[base + c.off[t]];
      nzc += __builtin_popcount(m);
      for (int l = 0; l < 16; ++l) pop[l] += __builtin_popcount((a ^ w16[l]) & m);
    } else {
      for (int l = 0; l < 16; ++l) pop[l] += __builtin_popcount(a ^ w16[l]);
    }
  }
  const int32_t total = MASKED ? nzc : static_cast<int32_t>(g.kk * g.cpg);
  int32_t v[16];
  for (int l = 0; l < 16; ++l) v[l] = total - 2 * pop[l];
  store_scalar(c, n, oh, ow, gi, ob, v);
}

void row_scalar(const ConvCtx& c, int64_t gi, int64_t b0, int64_t b1, int64_t n, int64_t oh) {
  for (int64_t ob = b0; ob < b1; ++ob)
    for (int64_t ow = 0; ow < c.g.Wo; ++ow) {
      if (c.any_zero || !inside(c.g, oh, ow, ow))
        pixel_scalar<true>(c, gi, ob, n, oh, ow);
      else
        pixel_scalar<false>(c, gi, ob, n, oh, ow);
    }
}

}  // namespace

// ======================================================================== AVX2
#if NASBNN_X86
#pragma GCC push_options
#pragma GCC target("avx2")
namespace {

inline __m256i popcnt8_avx2(__m256i v, __m256i lut, __m256i low4) {
  const __m256i lo = _mm256_and_si256(v, low4);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

inline __m256i popcnt_lut() {
  return _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
}

// byte counters -> 32-bit lane sums (u8 pairs -> i16 -> i32)
inline __m256i widen8to32(__m256i acc8) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(acc8, _mm256_set1_epi8(1)), _mm256_set1_epi16(1));
}

// The reduction of one tile: P pixels x 1 block (2 ymm of 8 channels); byte counters are widened into
// 32-bit lanes (pop) every 31 steps
template <int P, bool MASKED>
__attribute__((always_inline)) inline void reduce_avx2(const ConvCtx& c, const int64_t (&base)[P], const u32* wblk,
                                                       int64_t steps, __m256i (&pop)[P][2], int32_t (&nzc)[P]) {
  const __m256i lut = popcnt_lut(), low4 = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
  __m256i acc8[P][2];
  for (int p = 0; p < P; ++p) {
    nzc[p] = 0;
    acc8[p][0] = acc8[p][1] = pop[p][0] = pop[p][1] = zero;
  }
  int since_flush = 0;
  for (int64_t t = 0; t < steps; ++t) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wblk + t * kLanes));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wblk + t * kLanes + 8));
    const int64_t o = c.off[t];
    for (int p = 0; p < P; ++p) {
      const __m256i a = _mm256_set1_epi32(static_cast<int>(c.act[base[p] + o]));
      __m256i x0 = _mm256_xor_si256(a, w0), x1 = _mm256_xor_si256(a, w1);
      if (MASKED) {
        const u32 mw = c.nz[base[p] + o];
        nzc[p] += __builtin_popcount(mw);
        const __m256i m = _mm256_set1_epi32(static_cast<int>(mw));
        x0 = _mm256_and_si256(x0, m);
        x1 = _mm256_and_si256(x1, m);
      }
      acc8[p][0] = _mm256_add_epi8(acc8[p][0], popcnt8_avx2(x0, lut, low4));
      acc8[p][1] = _mm256_add_epi8(acc8[p][1], popcnt8_avx2(x1, lut, low4));
    }
    if (++since_flush == 31 || t + 1 == steps) {  // a byte counter holds at most 31 * 8 = 248
      since_flush = 0;
      for (int p = 0; p < P; ++p)
        for (int h = 0; h < 2; ++h) {
          pop[p][h] = _mm256_add_epi32(pop[p][h], widen8to32(acc8[p][h]));
          acc8[p][h] = zero;
        }
    }
  }
}

template <int P>
void tile_avx2(const ConvCtx& c, int64_t gi, int64_t ob, int64_t n, int64_t oh) {
  const Geom& g = c.g;
  const int64_t steps = g.kk * g.Wg, ih = oh * g.S;
  const u32* wblk = c.wb + (gi * g.OB + ob) * steps * kLanes;
  const int64_t o0 = gi * g.opg + ob * kLanes;
  const bool plain = c.out_cl && !c.scale && !c.shift && g.opg - ob * kLanes >= kLanes;
  for (int64_t ow0 = 0; ow0 < g.Wo; ow0 += P) {
    int64_t base[P];
    for (int p = 0; p < P; ++p) base[p] = packed_offset(g, n, ih, std::min(ow0 + p, g.Wo - 1) * g.S) + gi * g.Wg;
    const bool masked = c.any_zero || !inside(g, oh, ow0, std::min(ow0 + P - 1, g.Wo - 1));
    __m256i pop[P][2];
    int32_t nzc[P];
    if (masked)
      reduce_avx2<P, true>(c, base, wblk, steps, pop, nzc);
    else
      reduce_avx2<P, false>(c, base, wblk, steps, pop, nzc);
    for (int p = 0; p < P; ++p) {
      const int64_t ow = ow0 + p;
      if (ow >= g.Wo) break;
      const __m256i total = _mm256_set1_epi32(masked ? nzc[p] : static_cast<int32_t>(g.kk * g.cpg));
      if (plain) {  // NHWC, alpha only, a whole block: two ymm of 8 outputs
        float* const op = c.out + ((n * g.Ho + oh) * g.Wo + ow) * g.cout + o0;
        for (int h = 0; h < 2; ++h) {
          const __m256i v = _mm256_sub_epi32(total, _mm256_slli_epi32(pop[p][h], 1));
          _mm256_storeu_ps(op + 8 * h, _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(c.alpha + o0 + 8 * h)));
        }
        continue;
      }
      alignas(32) int32_t v[16];
      for (int h = 0; h < 2; ++h)
        _mm256_store_si256(reinterpret_cast<__m256i*>(v + 8 * h),
                           _mm256_sub_epi32(total, _mm256_slli_epi32(pop[p][h], 1)));
      store_scalar(c, n, oh, ow, gi, ob, v);
    }
  }
}

// The fast pass of packing on AVX2 (see pack_signs_avx512): sign plane from the float sign bits
// (movemask), special values (x + b == 0 or NaN: an unordered-or-equal compare with 0) only detected
void pack_signs_avx2(const PackArgs& a, int64_t n, int64_t h) {
  const Geom g = a.g;
  const float* const bp = a.b;
  const __m256 zero = _mm256_setzero_ps();
  __m256 spec = zero;
  bool spec_tail = false;
  if (a.channels_last) {
    const float* const xrow = a.x + (n * g.H + h) * g.W * g.C;
    u32* const srow = a.s + packed_offset(g, n, h + g.pad, g.pad);
    for (int64_t w = 0; w < g.W; ++w) {
      const float* const px = xrow + w * g.C;
      u32* const ds = srow + w * g.GW();
      for (int64_t gi = 0; gi < g.G; ++gi)
        for (int64_t j = 0; j < g.Wg; ++j) {
          const int64_t c0 = gi * g.cpg + j * kBits, nb = std::min<int64_t>(kBits, g.cpg - j * kBits);
          u32 word = 0;
          int64_t t = 0;
          for (; t + 8 <= nb; t += 8) {
            const __m256 u = _mm256_add_ps(_mm256_loadu_ps(px + c0 + t), _mm256_loadu_ps(bp + c0 + t));
            word |= u32(_mm256_movemask_ps(u)) << t;
            spec = _mm256_or_ps(spec, _mm256_cmp_ps(u, zero, _CMP_EQ_UQ));
          }
          for (; t < nb; ++t) {
            const float u = px[c0 + t] + bp[c0 + t];
            word |= u32(u < 0.f) << t;
            spec_tail |= !(u != 0.f) || u != u;
          }
          ds[gi * g.Wg + j] = word;
        }
    }
  } else {  // NCHW: 8 pixels of one channel per step, the sign bit shifted into place
    const int64_t plane = g.H * g.W, GW = g.GW();
    u32* const d0 = a.s + packed_offset(g, n, h + g.pad, g.pad);
    alignas(32) u32 bs[8];
    for (int64_t gi = 0; gi < g.G; ++gi)
      for (int64_t j = 0; j < g.Wg; ++j) {
        const int64_t c0 = gi * g.cpg + j * kBits, nb = std::min<int64_t>(kBits, g.cpg - j * kBits);
        int64_t w0 = 0;
        for (; w0 + 8 <= g.W; w0 += 8) {
          __m256i sv = _mm256_setzero_si256();
          for (int64_t t = 0; t < nb; ++t) {
            const float* row = a.x + (n * g.C + c0 + t) * plane + h * g.W + w0;
            const __m256 u = _mm256_add_ps(_mm256_loadu_ps(row), _mm256_set1_ps(bp[c0 + t]));
            const __m256i bit = _mm256_srlv_epi32(_mm256_castps_si256(u), _mm256_set1_epi32(static_cast<int>(31 - t)));
            sv = _mm256_or_si256(sv, _mm256_and_si256(bit, _mm256_set1_epi32(static_cast<int>(u32(1) << t))));
            spec = _mm256_or_ps(spec, _mm256_cmp_ps(u, zero, _CMP_EQ_UQ));
          }
          _mm256_store_si256(reinterpret_cast<__m256i*>(bs), sv);
          for (int64_t q = 0; q < 8; ++q) d0[(w0 + q) * GW + gi * g.Wg + j] = bs[q];
        }
        for (; w0 < g.W; ++w0) {  // the row's last pixels
          u32 word = 0;
          for (int64_t t = 0; t < nb; ++t) {
            const float u = a.x[(n * g.C + c0 + t) * plane + h * g.W + w0] + bp[c0 + t];
            word |= u32(u < 0.f) << t;
            spec_tail |= !(u != 0.f) || u != u;
          }
          d0[w0 * GW + gi * g.Wg + j] = word;
        }
      }
  }
  a.row_zero[n * g.H + h] = spec_tail || _mm256_movemask_ps(spec) != 0;
}

void row_avx2(const ConvCtx& c, int64_t gi, int64_t b0, int64_t b1, int64_t n, int64_t oh) {
  for (int64_t ob = b0; ob < b1; ++ob) tile_avx2<4>(c, gi, ob, n, oh);
}

double peak_avx2(int64_t iters) {  // the inner loop of tile_avx2<4> on L1-resident data
  alignas(64) u32 buf[1024];
  std::mt19937 rng(1);
  for (auto& v : buf) v = rng();
  const __m256i lut = popcnt_lut(), low4 = _mm256_set1_epi8(0x0f);
  __m256i acc32[8];
  for (auto& v : acc32) v = _mm256_setzero_si256();
  for (int64_t it = 0; it < iters; ++it) {
    __m256i acc8[8];
    for (auto& v : acc8) v = _mm256_setzero_si256();
    for (int t = 0; t < 31; ++t) {
      const u32* w = buf + (t * 16 & 1023);
      const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
      const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 8));
      for (int p = 0; p < 4; ++p) {
        const __m256i a = _mm256_set1_epi32(static_cast<int>(buf[(t * 7 + p + it) & 1023]));
        acc8[2 * p] = _mm256_add_epi8(acc8[2 * p], popcnt8_avx2(_mm256_xor_si256(a, w0), lut, low4));
        acc8[2 * p + 1] = _mm256_add_epi8(acc8[2 * p + 1], popcnt8_avx2(_mm256_xor_si256(a, w1), lut, low4));
      }
    }
    for (int i = 0; i < 8; ++i) acc32[i] = _mm256_add_epi32(acc32[i], widen8to32(acc8[i]));
    asm volatile("" : : : "memory");
  }
  alignas(32) int32_t t[8];
  __m256i s = acc32[0];
  for (int i = 1; i < 8; ++i) s = _mm256_add_epi32(s, acc32[i]);
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), s);
  volatile int32_t sink = t[0] + t[7];
  (void)sink;
  return double(iters) * 31 * 8 * 256;
}

}  // namespace
#pragma GCC pop_options

// ======================================================================== AVX-512 (F, BW, DQ, VL, VPOPCNTDQ)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vpopcntdq,popcnt")
namespace {

inline __mmask16 first_bits16(int64_t n) {  // mask of the first clamp(n, 0, 16) lanes
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// sign / nonzero bits of the 16 channels [c0, c0 + 16) of one pixel (lanes past m: 0)
inline void signs16(const float* px, const float* b, int64_t c0, __mmask16 m, u32& lt, u32& ne) {
  const __m512 u = _mm512_add_ps(_mm512_maskz_loadu_ps(m, px + c0), _mm512_maskz_loadu_ps(m, b + c0));
  lt = _mm512_mask_cmp_ps_mask(m, u, _mm512_setzero_ps(), _CMP_LT_OQ);
  ne = _mm512_mask_cmp_ps_mask(m, u, _mm512_setzero_ps(), _CMP_NEQ_UQ);
}

// Exact packing of both planes with compares (x + b < 0, x + b != 0): the path after a special value
void pack_row_exact_avx512(const PackArgs& a, int64_t n, int64_t h) {
  const Geom& g = a.g;
  u32 zero_bits = 0;
  if (a.channels_last) {
    // each 32-channel word of a group from two 16-channel compares whose masks are stored as the word's
    // two 16-bit halves (little endian); the masks of a word's valid channels are the same at every pixel
    __mmask16 m0[64], m1[64];
    const int64_t wg = std::min<int64_t>(g.Wg, 64);
    for (int64_t j = 0; j < wg; ++j) {
      m0[j] = first_bits16(g.cpg - j * kBits);
      m1[j] = first_bits16(g.cpg - j * kBits - 16);
    }
    __mmask16 zeros = 0;  // valid lanes where x + b == 0
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t w = 0; w < g.W; ++w) {
      const float* px = a.x + ((n * g.H + h) * g.W + w) * g.C;
      const int64_t o = packed_offset(g, n, h + g.pad, w + g.pad);
      __mmask16* ds = reinterpret_cast<__mmask16*>(a.s + o);
      __mmask16* dz = reinterpret_cast<__mmask16*>(a.z + o);
      for (int64_t gi = 0; gi < g.G; ++gi)
        for (int64_t j = 0; j < g.Wg; ++j) {
          const int64_t c0 = gi * g.cpg + j * kBits, k = 2 * (gi * g.Wg + j);
          const __mmask16 ma = j < 64 ? m0[j] : first_bits16(g.cpg - j * kBits);
          const __mmask16 mb = j < 64 ? m1[j] : first_bits16(g.cpg - j * kBits - 16);
          const __m512 ua = _mm512_add_ps(_mm512_maskz_loadu_ps(ma, px + c0), _mm512_maskz_loadu_ps(ma, a.b + c0));
          const __m512 ub =
              _mm512_add_ps(_mm512_maskz_loadu_ps(mb, px + c0 + 16), _mm512_maskz_loadu_ps(mb, a.b + c0 + 16));
          const __mmask16 nea = _mm512_mask_cmp_ps_mask(ma, ua, zero, _CMP_NEQ_UQ);
          const __mmask16 neb = _mm512_mask_cmp_ps_mask(mb, ub, zero, _CMP_NEQ_UQ);
          _store_mask16(ds + k, _mm512_mask_cmp_ps_mask(ma, ua, zero, _CMP_LT_OQ));
          _store_mask16(ds + k + 1, _mm512_mask_cmp_ps_mask(mb, ub, zero, _CMP_LT_OQ));
          _store_mask16(dz + k, nea);
          _store_mask16(dz + k + 1, neb);
          zeros = _kor_mask16(zeros, _kor_mask16(_kandn_mask16(nea, ma), _kandn_mask16(neb, mb)));
        }
    }
    zero_bits = _cvtmask16_u32(zeros);
  } else {  // NCHW: 16 pixels of one channel per compare, 32 channels into 16 words (one zmm)
    const int64_t plane = g.H * g.W, GW = g.GW();
    const int64_t o = packed_offset(g, n, h + g.pad, g.pad);
    alignas(64) u32 bs[16], bz[16];
    for (int64_t gi = 0; gi < g.G; ++gi)
      for (int64_t j = 0; j < g.Wg; ++j) {
        const int64_t c0 = gi * g.cpg + j * kBits, nb = std::min<int64_t>(kBits, g.cpg - j * kBits);
        const u32 vm = low_mask(nb);
        for (int64_t w0 = 0; w0 < g.W; w0 += 16) {
          const __mmask16 m = first_bits16(g.W - w0);
          __m512i sv = _mm512_setzero_si512(), zv = sv;
          for (int64_t t = 0; t < nb; ++t) {
            const float* row = a.x + (n * g.C + c0 + t) * plane + h * g.W + w0;
            const __m512 u = _mm512_add_ps(_mm512_maskz_loadu_ps(m, row), _mm512_set1_ps(a.b[c0 + t]));
            const __m512i bit = _mm512_set1_epi32(static_cast<int>(u32(1) << t));
            sv = _mm512_mask_or_epi32(sv, _mm512_mask_cmp_ps_mask(m, u, _mm512_setzero_ps(), _CMP_LT_OQ), sv, bit);
            zv = _mm512_mask_or_epi32(zv, _mm512_mask_cmp_ps_mask(m, u, _mm512_setzero_ps(), _CMP_NEQ_UQ), zv, bit);
          }
          _mm512_store_si512(bs, sv);
          _mm512_store_si512(bz, zv);
          const int64_t q1 = std::min<int64_t>(16, g.W - w0);
          for (int64_t q = 0; q < q1; ++q) {
            a.s[o + (w0 + q) * GW + gi * g.Wg + j] = bs[q];
            a.z[o + (w0 + q) * GW + gi * g.Wg + j] = bz[q];
            zero_bits |= bz[q] ^ vm;
          }
        }
      }
  }
  a.row_zero[n * g.H + h] = zero_bits != 0;
}

// special: x + b == 0 (either sign) or NaN. With u's bits shifted left by one (sign dropped) as t,
// special <=> t - 1 >= 0xFF000000 (unsigned; t = 0 wraps to 0xFFFFFFFF; infinities stay below)
inline __m512i special_max(__m512i acc, __mmask16 m, __m512 u) {
  const __m512i t = _mm512_add_epi32(_mm512_castps_si512(u), _mm512_castps_si512(u));
  return _mm512_mask_max_epu32(acc, m, acc, _mm512_sub_epi32(t, _mm512_set1_epi32(1)));
}

inline bool any_special(__m512i acc) {
  return _mm512_cmpge_epu32_mask(acc, _mm512_set1_epi32(static_cast<int>(0xFF000000u))) != 0;
}

// The fast pass: the sign plane only, s = the float sign bit of x + b (equal to x + b < 0 except at -0
// and NaN, which the special check catches: then pack_row_exact_avx512 redoes the row). Sets row_zero
// to "special seen"; the caller fills the nonzero plane with the all-valid pattern when none was.
void pack_signs_avx512(const PackArgs& a, int64_t n, int64_t h) {
  const Geom g = a.g;  // locals: the mask-register stores below would otherwise make the compiler reload them
  const float* const bp = a.b;
  __m512i spec = _mm512_setzero_si512(), spec2 = spec;
  // special: x + b == 0 (either sign) or NaN. With the bits shifted left by one (sign dropped) as t:
  // special <=> t - 1 >= 0xFF000000 unsigned (t = 0 wraps to 0xFFFFFFFF; +-inf stay below); max-tracked
  const __m512i ione = _mm512_set1_epi32(1);
  if (a.channels_last) {
    const float* const xrow = a.x + (n * g.H + h) * g.W * g.C;
    u32* const srow = a.s + packed_offset(g, n, h + g.pad, g.pad);
    const int64_t GW = g.GW();
    if (g.cpg % kBits == 0) {  // whole words only: the pixel's C channels are GW consecutive words
      for (int64_t w = 0; w < g.W; ++w) {
        const float* const px = xrow + w * g.C;
        u32* const ds = srow + w * GW;
        for (int64_t q = 0; q < GW; ++q) {
          const __m512 ua = _mm512_add_ps(_mm512_loadu_ps(px + 32 * q), _mm512_loadu_ps(bp + 32 * q));
          const __m512 ub = _mm512_add_ps(_mm512_loadu_ps(px + 32 * q + 16), _mm512_loadu_ps(bp + 32 * q + 16));
          const __m512i ia = _mm512_castps_si512(ua), ib = _mm512_castps_si512(ub);
          _store_mask32(reinterpret_cast<__mmask32*>(ds + q),
                        _mm512_kunpackw(_mm512_movepi32_mask(ib), _mm512_movepi32_mask(ia)));
          spec = _mm512_max_epu32(spec, _mm512_sub_epi32(_mm512_add_epi32(ia, ia), ione));
          spec2 = _mm512_max_epu32(spec2, _mm512_sub_epi32(_mm512_add_epi32(ib, ib), ione));
        }
      }
    } else if (g.cpg % 16 == 0) {  // whole 16-channel halves: each stored as one 16-bit half of a word
      const int64_t halves = g.cpg / 16, odd = halves % 2;
      for (int64_t w = 0; w < g.W; ++w) {
        const float* px = xrow + w * g.C;
        const float* bq = bp;
        __mmask16* dh = reinterpret_cast<__mmask16*>(srow + w * GW);
        for (int64_t gi = 0; gi < g.G; ++gi, dh += 2 * g.Wg) {
          for (int64_t i = 0; i < halves; ++i, px += 16, bq += 16) {
            const __m512i ia = _mm512_castps_si512(_mm512_add_ps(_mm512_loadu_ps(px), _mm512_loadu_ps(bq)));
            _store_mask16(dh + i, _mm512_movepi32_mask(ia));
            spec = _mm512_max_epu32(spec, _mm512_sub_epi32(_mm512_add_epi32(ia, ia), ione));
          }
          if (odd) dh[halves] = 0;
        }
      }
    } else {  // a partial word ends each group (e.g. 24 channels): masked loads for the partial 16-channel half,
              // lanes past the group get 0 + 1 (sign bit 0, not special)
      __mmask16 m0[64], m1[64];
      const int64_t wg = std::min<int64_t>(g.Wg, 64);
      for (int64_t j = 0; j < wg; ++j) {
        m0[j] = first_bits16(g.cpg - j * kBits);
        m1[j] = first_bits16(g.cpg - j * kBits - 16);
      }
      const __m512 one = _mm512_set1_ps(1.f);
      for (int64_t w = 0; w < g.W; ++w) {
        const float* const px = xrow + w * g.C;
        u32* const ds = srow + w * GW;
        for (int64_t gi = 0; gi < g.G; ++gi)
          for (int64_t j = 0; j < g.Wg; ++j) {
            const int64_t c0 = gi * g.cpg + j * kBits;
            const int64_t nb = g.cpg - j * kBits;  // channels in this word (>= 32: a whole word)
            __m512 ua, ub;
            if (nb >= 16) {  // 16-channel halves: whole ones unmasked, a partial one masked, an empty one skipped
              ua = _mm512_add_ps(_mm512_loadu_ps(px + c0), _mm512_loadu_ps(bp + c0));
            } else {
              const __mmask16 ma = j < 64 ? m0[j] : first_bits16(nb);
              ua = _mm512_add_ps(_mm512_maskz_loadu_ps(ma, px + c0), _mm512_mask_loadu_ps(one, ma, bp + c0));
            }
            if (nb >= 32) {
              ub = _mm512_add_ps(_mm512_loadu_ps(px + c0 + 16), _mm512_loadu_ps(bp + c0 + 16));
            } else if (nb > 16) {
              const __mmask16 mb = j < 64 ? m1[j] : first_bits16(nb - 16);
              ub = _mm512_add_ps(_mm512_maskz_loadu_ps(mb, px + c0 + 16), _mm512_mask_loadu_ps(one, mb, bp + c0 + 16));
            } else {
              ub = one;
            }
            const __m512i ia = _mm512_castps_si512(ua), ib = _mm512_castps_si512(ub);
            _store_mask32(reinterpret_cast<__mmask32*>(ds + gi * g.Wg + j),
                          _mm512_kunpackw(_mm512_movepi32_mask(ib), _mm512_movepi32_mask(ia)));
            spec = _mm512_max_epu32(spec, _mm512_sub_epi32(_mm512_add_epi32(ia, ia), ione));
            spec2 = _mm512_max_epu32(spec2, _mm512_sub_epi32(_mm512_add_epi32(ib, ib), ione));
          }
      }
    }
  } else {  // NCHW: 16 pixels of one channel per step; the sign bit shifted into place, no mask registers
    const int64_t plane = g.H * g.W, GW = g.GW();
    u32* const d0 = a.s + packed_offset(g, n, h + g.pad, g.pad);
    alignas(64) u32 bs[16];
    for (int64_t gi = 0; gi < g.G; ++gi)
      for (int64_t j = 0; j < g.Wg; ++j) {
        const int64_t c0 = gi * g.cpg + j * kBits, nb = std::min<int64_t>(kBits, g.cpg - j * kBits);
        for (int64_t w0 = 0; w0 < g.W; w0 += 16) {
          const __mmask16 m = first_bits16(g.W - w0);
          __m512i sv = _mm512_setzero_si512();
          for (int64_t t = 0; t < nb; ++t) {
            const float* row = a.x + (n * g.C + c0 + t) * plane + h * g.W + w0;
            const __m512 u = _mm512_add_ps(_mm512_maskz_loadu_ps(m, row), _mm512_set1_ps(a.b[c0 + t]));
            const __m512i bit = _mm512_srlv_epi32(_mm512_castps_si512(u), _mm512_set1_epi32(static_cast<int>(31 - t)));
            sv = _mm512_ternarylogic_epi32(sv, bit, _mm512_set1_epi32(static_cast<int>(u32(1) << t)), 0xF8);  // A | (B & C)
            spec = special_max(spec, m, u);
          }
          _mm512_store_si512(bs, sv);
          const int64_t q1 = std::min<int64_t>(16, g.W - w0);
          for (int64_t q = 0; q < q1; ++q) d0[(w0 + q) * GW + gi * g.Wg + j] = bs[q];
        }
      }
  }
  a.row_zero[n * g.H + h] = any_special(_mm512_max_epu32(spec, spec2));
}

// The reduction of one tile: P output pixels x NB blocks of 16 output channels, 32-bit popcount
// accumulators in zmm registers
template <int NB, int P, bool MASKED>
__attribute__((always_inline)) inline void reduce_avx512(const u32* const (&ap)[P], const u32* const (&zp)[P],
                                                         const u32* wblk, int64_t bstride, const int64_t* off,
                                                         int64_t steps, __m512i (&acc)[P][NB], int32_t (&nzc)[P]) {
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    nzc[p] = 0;
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) acc[p][b] = _mm512_setzero_si512();
  }
  for (int64_t t = 0; t < steps; ++t) {
    __m512i wv[NB];
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) wv[b] = _mm512_loadu_si512(wblk + b * bstride + t * kLanes);
    const int64_t o = off[t];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      const __m512i a = _mm512_set1_epi32(static_cast<int>(ap[p][o]));
      if (MASKED) {
        const u32 mw = zp[p][o];
        nzc[p] += _mm_popcnt_u32(mw);
        const __m512i m = _mm512_set1_epi32(static_cast<int>(mw));
#pragma GCC unroll 4
        for (int b = 0; b < NB; ++b)  // (a XOR w) AND m in one vpternlogd
          acc[p][b] = _mm512_add_epi32(acc[p][b], _mm512_popcnt_epi32(_mm512_ternarylogic_epi32(a, wv[b], m, 0x28)));
      } else {
#pragma GCC unroll 4
        for (int b = 0; b < NB; ++b)
          acc[p][b] = _mm512_add_epi32(acc[p][b], _mm512_popcnt_epi32(_mm512_xor_si512(a, wv[b])));
      }
    }
  }
}

// One output row of one channel tile (NB blocks of 16 channels): register tiles of 2 pixels (the last
// one alone), each followed by its epilogue.
template <int NB>
struct RowAvx512 {
  const ConvCtx& c;
  const Geom& g;
  int64_t gi, ob0, n, oh, steps, bstride, row0, px_words, pstride, cstride;
  const u32* wblk;
  const int64_t* off;
  float* orow;
  const float *al, *sc, *sh;  // alpha / scale / shift of the tile's first channel (sc, sh may be null)
  bool plain;                 // NHWC output without scale / shift
  __mmask16 mk[NB];
  int nl[NB];

  RowAvx512(const ConvCtx& c_, int64_t gi_, int64_t ob0_, int64_t n_, int64_t oh_)
      : c(c_), g(c_.g), gi(gi_), ob0(ob0_), n(n_), oh(oh_) {
    steps = g.kk * g.Wg;
    bstride = steps * kLanes;
    wblk = c.wb + (gi * g.OB + ob0) * bstride;
    off = c.off.data();
    row0 = packed_offset(g, n, oh * g.S, 0) + gi * g.Wg;
    px_words = g.S * g.GW();
    for (int b = 0; b < NB; ++b) {
      nl[b] = static_cast<int>(std::min<int64_t>(kLanes, g.opg - (ob0 + b) * kLanes));
      mk[b] = first_bits16(nl[b]);
    }
    const int64_t o_first = gi * g.opg + ob0 * kLanes;
    al = c.alpha + o_first;
    sc = c.scale ? c.scale + o_first : nullptr;
    sh = c.shift ? c.shift + o_first : nullptr;
    orow = c.out + (c.out_cl ? ((n * g.Ho + oh) * g.Wo) * g.cout + o_first
                             : ((n * g.cout + o_first) * g.Ho + oh) * g.Wo);
    pstride = c.out_cl ? g.cout : 1;
    cstride = c.out_cl ? 1 : g.Ho * g.Wo;
    plain = c.out_cl && !sc && !sh;
  }

  template <int P>
  __attribute__((always_inline)) inline void tile(int64_t ow0) {
    const u32* ap[P];
    const u32* zp[P];
    for (int p = 0; p < P; ++p) {
      const int64_t b = row0 + (ow0 + p) * px_words;
      ap[p] = c.act + b;
      zp[p] = c.nz + b;
    }
    const bool masked = c.any_zero || !inside(g, oh, ow0, ow0 + P - 1);
    __m512i acc[P][NB];
    int32_t nzc[P];
    if (masked)
      reduce_avx512<NB, P, true>(ap, zp, wblk, bstride, off, steps, acc, nzc);
    else
      reduce_avx512<NB, P, false>(ap, zp, wblk, bstride, off, steps, acc, nzc);
    const __m512i kbase = _mm512_set1_epi32(static_cast<int>(g.kk * g.cpg));
    if (plain) {  // NHWC output, alpha only: the common case, no per-block branches
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        float* const op = orow + (ow0 + p) * pstride;
        const __m512i total = masked ? _mm512_set1_epi32(nzc[p]) : kbase;
#pragma GCC unroll 4
        for (int b = 0; b < NB; ++b) {
          const __m512i v = _mm512_sub_epi32(total, _mm512_add_epi32(acc[p][b], acc[p][b]));
          _mm512_mask_storeu_ps(op + kLanes * b, mk[b],
                                _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_maskz_loadu_ps(mk[b], al + kLanes * b)));
        }
      }
      return;
    }
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      float* const op = orow + (ow0 + p) * pstride;
      const __m512i total = masked ? _mm512_set1_epi32(nzc[p]) : kbase;
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) {
        const __m512i v = _mm512_sub_epi32(total, _mm512_add_epi32(acc[p][b], acc[p][b]));
        __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_maskz_loadu_ps(mk[b], al + kLanes * b));
        if (sc) y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(mk[b], sc + kLanes * b));
        if (sh) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mk[b], sh + kLanes * b));
        if (cstride == 1) {  // channels contiguous (NHWC, or a 1x1 output map)
          _mm512_mask_storeu_ps(op + kLanes * b, mk[b], y);
        } else {
          alignas(64) float tmp[16];
          _mm512_store_ps(tmp, y);
          for (int l = 0; l < nl[b]; ++l) op[(kLanes * b + l) * cstride] = tmp[l];
        }
      }
    }
  }

  void run() {  // pairs of pixels (a wider register tile measured no faster: loads are not the bottleneck)
    int64_t ow = 0;
    for (; ow + 2 <= g.Wo; ow += 2) tile<2>(ow);
    if (ow < g.Wo) tile<1>(ow);
  }
};

void row_avx512(const ConvCtx& c, int64_t gi, int64_t b0, int64_t b1, int64_t n, int64_t oh) {
  switch (b1 - b0) {
    case 1: RowAvx512<1>(c, gi, b0, n, oh).run(); break;
    case 2: RowAvx512<2>(c, gi, b0, n, oh).run(); break;
    case 3: RowAvx512<3>(c, gi, b0, n, oh).run(); break;
    default: RowAvx512<4>(c, gi, b0, n, oh).run(); break;
  }
}

// The inner loop of tile_avx512<4, 4> on L1-resident data: returns the binary ops done (bits XNOR-popcounted).
double peak_avx512(int64_t iters) {
  alignas(64) u32 buf[1024];
  std::mt19937 rng(1);
  for (auto& v : buf) v = rng();
  __m512i acc[16];
  for (auto& v : acc) v = _mm512_setzero_si512();
  for (int64_t it = 0; it < iters; ++it) {
    for (int t = 0; t < 64; t += 4) {  // 16 steps per sweep over 4 KiB of "weights"
      const u32* w = buf + t * 16;
      __m512i wv[4];
      for (int b = 0; b < 4; ++b) wv[b] = _mm512_load_si512(w + b * 16);
      for (int p = 0; p < 4; ++p) {
        const __m512i a = _mm512_set1_epi32(static_cast<int>(buf[(t * 5 + p * 3 + it) & 1023]));
        for (int b = 0; b < 4; ++b)
          acc[p * 4 + b] = _mm512_add_epi32(acc[p * 4 + b], _mm512_popcnt_epi32(_mm512_xor_si512(a, wv[b])));
      }
    }
    asm volatile("" : : : "memory");
  }
  __m512i s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_epi32(s, acc[i]);
  volatile int sink = _mm512_reduce_add_epi32(s);
  (void)sink;
  return double(iters) * 16 * 16 * 512;
}

}  // namespace
#pragma GCC pop_options
#endif  // NASBNN_X86

namespace {

double peak_scalar(int64_t iters) {
  u32 buf[1024];
  std::mt19937 rng(1);
  for (auto& v : buf) v = rng();
  int32_t acc[16] = {0};
  for (int64_t it = 0; it < iters; ++it) {
    for (int t = 0; t < 64; ++t) {
      const u32 a = buf[(t * 5 + it) & 1023];
      const u32* w = buf + t * 16;
      for (int l = 0; l < 16; ++l) acc[l] += __builtin_popcount(a ^ w[l]);
    }
    asm volatile("" : : : "memory");
  }
  volatile int32_t sink = acc[0] + acc[15];
  (void)sink;
  return double(iters) * 64 * 16 * 32;
}

// ---------------------------------------------------------------- checks
void check_float_vec(const std::optional<at::Tensor>& t, int64_t n, const char* name) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->dim() == 1 && t->size(0) == n,
              "nasbnn bitconv: ", name, " must be a float32 CPU tensor of shape (", n, ",), got ", t->scalar_type(), " ",
              t->sizes());
}

const float* vec_ptr(const std::optional<at::Tensor>& t, at::Tensor& keep) {
  if (!t.has_value()) return nullptr;
  keep = t->contiguous();
  return keep.data_ptr<float>();
}

// ---------------------------------------------------------------- ops
// -> (sign plane, nonzero plane, any zero): int32 (N, Hp, Wp, G * Wg) each
Geom input_geom(const at::Tensor& x, int64_t groups, int64_t kernel, int64_t stride, int64_t cout, bool& cl) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4,
              "nasbnn bitconv: x must be a float32 CPU tensor (N, C, H, W), got ", x.scalar_type(), " ", x.sizes());
  cl = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(x.is_contiguous() || cl, "nasbnn bitconv: x must be contiguous (NCHW) or channels_last (NHWC)");
  return make_geom(x.size(0), x.size(1), x.size(2), x.size(3), groups, kernel, stride, cout);
}

// Packs x into the planes s and z (N * Hp * Wp * G * Wg words each); returns whether some x + b == 0.
// Without full_z, a 1x1 conv's nonzero plane is left unwritten unless a zero occurred (then it is exact).
bool pack_into(const at::Tensor& x, bool cl, const std::optional<at::Tensor>& threshold, const Geom& g, int64_t isa,
               u32* s_out, u32* z_out, bool full_z) {
  check_float_vec(threshold, g.C, "threshold");
  std::vector<float> bpad(g.C, 0.f);
  if (threshold.has_value()) {
    const at::Tensor bc = threshold->contiguous();
    std::memcpy(bpad.data(), bc.data_ptr<float>(), sizeof(float) * g.C);
  }
  std::vector<uint8_t> row_zero(g.N * g.H, 0);
  PackArgs a{g, x.data_ptr<float>(), bpad.data(), cl, s_out, z_out, row_zero.data()};
  const int64_t GW = g.GW();
  const bool fast = isa == kAvx512 || isa == kAvx2;  // sign-only pass, nonzero plane filled unless a special value
  std::vector<u32> pattern(GW);  // the nonzero plane of an inside pixel without zeros: all valid bits
  for (int64_t gi = 0; gi < g.G; ++gi)
    for (int64_t j = 0; j < g.Wg; ++j) pattern[gi * g.Wg + j] = low_mask(g.cpg - j * kBits);
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.W * g.C));
  at::parallel_for(0, g.N * g.Hp, grain, [&](int64_t b, int64_t e) {
    std::vector<u32> ts, tz;
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / g.Hp, hp = r % g.Hp;
      u32* rs = a.s + r * g.Wp * GW;
      u32* rz = a.z + r * g.Wp * GW;
      if (hp < g.pad || hp >= g.pad + g.H) {  // a padding row
        std::memset(rs, 0, sizeof(u32) * g.Wp * GW);
        std::memset(rz, 0, sizeof(u32) * g.Wp * GW);
        continue;
      }
      if (g.pad > 0) {  // the padding columns
        std::memset(rs, 0, sizeof(u32) * g.pad * GW);
        std::memset(rz, 0, sizeof(u32) * g.pad * GW);
        std::memset(rs + (g.pad + g.W) * GW, 0, sizeof(u32) * g.pad * GW);
        std::memset(rz + (g.pad + g.W) * GW, 0, sizeof(u32) * g.pad * GW);
      }
#if NASBNN_X86
      if (fast) {
        if (isa == kAvx512)
          pack_signs_avx512(a, n, hp - g.pad);
        else
          pack_signs_avx2(a, n, hp - g.pad);
        if (g.pad > 0 || full_z) {  // (a 1x1 conv has no border tiles: without a zero it never reads this plane)
          u32* dz = rz + g.pad * GW;
          for (int64_t w = 0; w < g.W; ++w, dz += GW)
            for (int64_t i = 0; i < GW; ++i) dz[i] = pattern[i];
        }
        continue;
      }
#endif
      pack_row_scalar(a, n, hp - g.pad, ts, tz);
    }
  });
  bool any_zero = false;
  for (auto v : row_zero) any_zero |= v != 0;
#if NASBNN_X86
  if (fast && any_zero) {  // a zero (or NaN) somewhere: both planes exactly, with compares
    std::fill(row_zero.begin(), row_zero.end(), 0);
    at::parallel_for(0, g.N * g.H, grain, [&](int64_t b, int64_t e) {
      std::vector<u32> ts, tz;
      for (int64_t r = b; r < e; ++r) {
        if (isa == kAvx512)
          pack_row_exact_avx512(a, r / g.H, r % g.H);
        else
          pack_row_scalar(a, r / g.H, r % g.H, ts, tz);
      }
    });
    any_zero = false;
    for (auto v : row_zero) any_zero |= v != 0;
  }
#endif
  return any_zero;
}

// -> (sign plane, nonzero plane, any zero): int32 (N, Hp, Wp, G * Wg) each
std::tuple<at::Tensor, at::Tensor, bool> pack_activations(const at::Tensor& x, const std::optional<at::Tensor>& threshold,
                                                          int64_t groups, int64_t kernel, int64_t isa) {
  check_isa(isa);
  bool cl;
  const Geom g = input_geom(x, groups, kernel, 1, groups, cl);
  auto opts = x.options().dtype(at::kInt);
  at::Tensor s = at::empty({g.N, g.Hp, g.Wp, g.GW()}, opts);
  at::Tensor z = at::empty({g.N, g.Hp, g.Wp, g.GW()}, opts);
  const bool any_zero = pack_into(x, cl, threshold, g, isa, reinterpret_cast<u32*>(s.data_ptr<int32_t>()),
                                  reinterpret_cast<u32*>(z.data_ptr<int32_t>()), true);
  return {s, z, any_zero};
}

// weights: bool / uint8 (cout, cpg, K, K), nonzero = negative weight -> words int32 (G, OB, K*K, Wg, 16)
at::Tensor pack_weights(const at::Tensor& negative, int64_t groups) {
  TORCH_CHECK(negative.device().is_cpu() && (negative.scalar_type() == at::kBool || negative.scalar_type() == at::kByte) &&
                  negative.dim() == 4 && negative.size(2) == negative.size(3),
              "nasbnn bitconv: negative must be a bool/uint8 CPU tensor (out, in/groups, k, k), got ",
              negative.scalar_type(), " ", negative.sizes());
  const int64_t cout = negative.size(0), cpg = negative.size(1), K = negative.size(2);
  TORCH_CHECK(groups >= 1 && cout % groups == 0, "nasbnn bitconv: out_channels ", cout, " not divisible by groups ",
              groups);
  const Geom g = make_geom(1, cpg * groups, 1, 1, groups, K, 1, cout);
  const at::Tensor nb = negative.to(at::kByte).contiguous();
  const uint8_t* src = nb.data_ptr<uint8_t>();
  at::Tensor words = at::zeros({g.G, g.OB, g.kk, g.Wg, kLanes}, nb.options().dtype(at::kInt));
  u32* wp = reinterpret_cast<u32*>(words.data_ptr<int32_t>());
  for (int64_t o = 0; o < cout; ++o) {
    const int64_t gi = o / g.opg, ob = (o % g.opg) / kLanes, l = (o % g.opg) % kLanes;
    for (int64_t c = 0; c < cpg; ++c)
      for (int64_t kp = 0; kp < g.kk; ++kp)
        if (src[(o * cpg + c) * g.kk + kp])
          wp[(((gi * g.OB + ob) * g.kk + kp) * g.Wg + c / kBits) * kLanes + l] |= u32(1) << (c % kBits);
  }
  return words;
}

void check_conv_args(const Geom& g, const at::Tensor& wbits, const at::Tensor& alpha, const std::optional<at::Tensor>& scale,
                     const std::optional<at::Tensor>& shift) {
  TORCH_CHECK(wbits.device().is_cpu() && wbits.scalar_type() == at::kInt && wbits.is_contiguous() &&
                  wbits.numel() == g.G * g.OB * g.kk * g.Wg * kLanes,
              "nasbnn bitconv: wbits must be contiguous int32 with ", g.G * g.OB * g.kk * g.Wg * kLanes, " words, got ",
              wbits.scalar_type(), " ", wbits.sizes());
  check_float_vec(scale, g.cout, "scale");
  check_float_vec(shift, g.cout, "shift");
  TORCH_CHECK(g.Ho >= 1 && g.Wo >= 1, "nasbnn bitconv: empty output");
}

void check_alpha(const at::Tensor& alpha) {
  TORCH_CHECK(alpha.device().is_cpu() && alpha.scalar_type() == at::kFloat && alpha.dim() == 1,
              "nasbnn bitconv: alpha must be a float32 CPU tensor (out_channels,), got ", alpha.scalar_type(), " ",
              alpha.sizes());
}

// The conv of packed activations into `out` (allocated here when undefined). With `glue` (whose y is out,
// channels_last), the glue of glue.h runs on each block of output rows right after the conv wrote it
// (still in cache), in the same parallel region.
at::Tensor conv_impl(const Geom& g, const u32* s, const u32* z, bool any_zero, const at::Tensor& wbits,
                     const at::Tensor& alpha, const std::optional<at::Tensor>& scale,
                     const std::optional<at::Tensor>& shift, bool out_channels_last, int64_t isa,
                     at::Tensor out = at::Tensor(), const nasbnn_glue::GlueArgs* glue = nullptr) {
  at::Tensor alpha_c = alpha.contiguous(), scale_k, shift_k;
  auto opts = alpha.options();
  if (!out.defined())
    out = out_channels_last ? at::empty({g.N, g.cout, g.Ho, g.Wo}, opts, at::MemoryFormat::ChannelsLast)
                            : at::empty({g.N, g.cout, g.Ho, g.Wo}, opts);
  ConvCtx c;
  c.g = g;
  c.act = s;
  c.nz = z;
  c.wb = reinterpret_cast<const u32*>(wbits.data_ptr<int32_t>());
  c.alpha = alpha_c.data_ptr<float>();
  c.scale = vec_ptr(scale, scale_k);
  c.shift = vec_ptr(shift, shift_k);
  c.out = out.data_ptr<float>();
  c.out_cl = out_channels_last;
  c.any_zero = any_zero;
  c.ntiles = (g.OB + 3) / 4;
  c.nb_base = (g.OB + c.ntiles - 1) / c.ntiles;
  c.off.resize(g.kk * g.Wg);  // step t = (ky * K + kx) * Wg + j, the order of the weight words
  for (int64_t ky = 0; ky < g.K; ++ky)
    for (int64_t kx = 0; kx < g.K; ++kx)
      for (int64_t j = 0; j < g.Wg; ++j) c.off[(ky * g.K + kx) * g.Wg + j] = (ky * g.Wp + kx) * g.GW() + j;
  auto run_row = [&](int64_t gi, int64_t tile, int64_t r) {
    const int64_t n = r / g.Ho, oh = r % g.Ho;
    const int64_t b0 = tile * c.nb_base, b1 = std::min(g.OB, b0 + c.nb_base);
#if NASBNN_X86
    if (isa == kAvx512) return row_avx512(c, gi, b0, b1, n, oh);
    if (isa == kAvx2) return row_avx2(c, gi, b0, b1, n, oh);
#endif
    row_scalar(c, gi, b0, b1, n, oh);
  };
  const int64_t rows = g.N * g.Ho, tiles = g.G * c.ntiles;
  const int64_t cost = std::max<int64_t>(1, g.Wo * tiles * c.nb_base * kLanes * g.kk * g.Wg);  // per row
  if (rows >= 2 * at::get_num_threads()) {
    // threads take whole output rows (no two threads write parts of the same output pixels: splitting
    // the channels made the hardware prefetchers bounce the output lines between the cores); within
    // a thread's rows each channel tile runs over all of them, so its weights stay in L1. With glue, over
    // blocks of rows of ~32 KiB of output, each glued as soon as all its channel tiles are written.
    const int64_t block = glue ? std::max<int64_t>(1, 32768 / std::max<int64_t>(1, g.Wo * g.cout * 4)) : rows;
    at::parallel_for(0, rows, std::max<int64_t>(1, 65536 / cost), [&](int64_t r0, int64_t r1) {
      for (int64_t b0 = r0; b0 < r1; b0 += block) {
        const int64_t b1 = std::min(r1, b0 + block);
        for (int64_t t = 0; t < tiles; ++t)
          for (int64_t r = b0; r < b1; ++r) run_row(t / c.ntiles, t % c.ntiles, r);
        if (glue) nasbnn_glue::glue_rows(*glue, b0, b1);
      }
    });
  } else {  // too few rows to share: (channel tile, row) items, then the glue over the rows
    at::parallel_for(0, tiles * rows, std::max<int64_t>(1, 65536 / (cost / tiles + 1)), [&](int64_t b, int64_t e) {
      for (int64_t it = b; it < e; ++it) run_row((it / rows) / c.ntiles, (it / rows) % c.ntiles, it % rows);
    });
    if (glue) nasbnn_glue::glue_parallel(*glue);
  }
  return out;
}

at::Tensor conv_packed(const at::Tensor& s, const at::Tensor& z, bool any_zero, int64_t in_channels, const at::Tensor& wbits,
                       const at::Tensor& alpha, const std::optional<at::Tensor>& scale,
                       const std::optional<at::Tensor>& shift, int64_t groups, int64_t kernel, int64_t stride,
                       bool out_channels_last, int64_t isa) {
  check_isa(isa);
  TORCH_CHECK(s.scalar_type() == at::kInt && s.dim() == 4 && s.is_contiguous() && z.sizes() == s.sizes() &&
                  z.scalar_type() == at::kInt && z.is_contiguous(),
              "nasbnn bitconv: packed activations must be two contiguous int32 (N, Hp, Wp, words) tensors");
  check_alpha(alpha);
  const int64_t pad = kernel / 2;
  const Geom g = make_geom(s.size(0), in_channels, s.size(1) - 2 * pad, s.size(2) - 2 * pad, groups, kernel, stride,
                           alpha.size(0));
  TORCH_CHECK(s.size(3) == g.GW(), "nasbnn bitconv: packed activations have ", s.size(3), " words per pixel, expected ",
              g.GW(), " for in_channels ", in_channels, " groups ", groups);
  check_conv_args(g, wbits, alpha, scale, shift);
  return conv_impl(g, reinterpret_cast<const u32*>(s.data_ptr<int32_t>()), reinterpret_cast<const u32*>(z.data_ptr<int32_t>()),
                   any_zero, wbits, alpha, scale, shift, out_channels_last, isa);
}

// pack + conv; the packed planes live in a per-thread workspace that is reused across calls (no
// allocation, and usually still in cache)
at::Tensor conv(const at::Tensor& x, const std::optional<at::Tensor>& threshold, const at::Tensor& wbits,
                const at::Tensor& alpha, const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& shift,
                int64_t groups, int64_t kernel, int64_t stride, bool out_channels_last, int64_t isa) {
  check_isa(isa);
  check_alpha(alpha);
  bool cl;
  const Geom g = input_geom(x, groups, kernel, stride, alpha.size(0), cl);
  check_conv_args(g, wbits, alpha, scale, shift);
  thread_local std::vector<u32> workspace;
  const size_t plane = static_cast<size_t>(g.N * g.Hp * g.Wp * g.GW());
  if (workspace.size() < 2 * plane) workspace.resize(2 * plane);
  u32* s = workspace.data();
  u32* z = s + plane;
  const bool any_zero = pack_into(x, cl, threshold, g, isa, s, z, false);
  return conv_impl(g, s, z, any_zero, wbits, alpha, scale, shift, out_channels_last, isa);
}

// pack + conv + glue (glue.h) of a deployed layer: out = glue(float32(acc) * alpha), channels_last
at::Tensor conv_glue(const at::Tensor& x, const std::optional<at::Tensor>& threshold, const at::Tensor& wbits,
                     const at::Tensor& alpha, int64_t groups, int64_t kernel, int64_t stride, int64_t isa,
                     const std::optional<at::Tensor>& bn_w, const std::optional<at::Tensor>& bn_b, int64_t bn_mode,
                     const std::optional<at::Tensor>& res, int64_t res_stride, const std::optional<at::Tensor>& b1,
                     const std::optional<at::Tensor>& a, const std::optional<at::Tensor>& b2, int64_t glue_isa) {
  check_isa(isa);
  check_alpha(alpha);
  bool cl;
  const Geom g = input_geom(x, groups, kernel, stride, alpha.size(0), cl);
  check_conv_args(g, wbits, alpha, std::nullopt, std::nullopt);
  at::Tensor out = at::empty({g.N, g.cout, g.Ho, g.Wo}, alpha.options(), at::MemoryFormat::ChannelsLast);
  std::vector<at::Tensor> keep;
  const nasbnn_glue::GlueArgs ga =
      nasbnn_glue::make_glue_args(out, bn_w, bn_b, bn_mode, res, res_stride, b1, a, b2, glue_isa, keep);
  thread_local std::vector<u32> workspace;
  const size_t plane = static_cast<size_t>(g.N * g.Hp * g.Wp * g.GW());
  if (workspace.size() < 2 * plane) workspace.resize(2 * plane);
  u32* s = workspace.data();
  u32* z = s + plane;
  const bool any_zero = pack_into(x, cl, threshold, g, isa, s, z, false);
  return conv_impl(g, s, z, any_zero, wbits, alpha, std::nullopt, std::nullopt, true, isa, out, &ga);
}

// sign(x + b) (+ 1 when unsigned) as int8 / uint8 in channels_last: the input of the int8 backends
at::Tensor rsign_int8(const at::Tensor& x, const std::optional<at::Tensor>& threshold, bool unsigned_out) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4,
              "nasbnn bitconv: x must be a float32 CPU tensor (N, C, H, W), got ", x.scalar_type(), " ", x.sizes());
  const bool cl = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(x.is_contiguous() || cl, "nasbnn bitconv: x must be contiguous (NCHW) or channels_last (NHWC)");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  check_float_vec(threshold, C, "threshold");
  at::Tensor bk = threshold.has_value() ? threshold->contiguous() : at::zeros({C}, x.options());
  at::Tensor out = at::empty({N, C, H, W}, x.options().dtype(unsigned_out ? at::kByte : at::kChar),
                             at::MemoryFormat::ChannelsLast);
  const float* xp = x.data_ptr<float>();
  const float* bp = bk.data_ptr<float>();
  int8_t* op = reinterpret_cast<int8_t*>(out.data_ptr());
  const int8_t off = unsigned_out ? 1 : 0;
  at::parallel_for(0, N * H, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, W * C)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / H, h = r % H;
      int8_t* dst = op + r * W * C;
      if (cl) {
        const float* src = xp + r * W * C;
        for (int64_t w = 0; w < W; ++w)
          for (int64_t ch = 0; ch < C; ++ch) {
            const float u = src[w * C + ch] + bp[ch];
            dst[w * C + ch] = static_cast<int8_t>((u > 0.f) - (u < 0.f) + off);
          }
      } else {
        for (int64_t ch = 0; ch < C; ++ch) {
          const float* src = xp + ((n * C + ch) * H + h) * W;
          for (int64_t w = 0; w < W; ++w) {
            const float u = src[w] + bp[ch];
            dst[w * C + ch] = static_cast<int8_t>((u > 0.f) - (u < 0.f) + off);
          }
        }
      }
    }
  });
  return out;
}

// Peak XNOR-popcount throughput of one ISA's inner loop on L1-resident data, all intra-op threads
// running it at once -> (seconds, binary ops) where one binary op = one bit XORed and popcounted.
std::tuple<double, double> popcount_peak(int64_t isa, int64_t iters) {
  check_isa(isa);
  const int64_t T = at::get_num_threads();
  std::vector<double> ops(T, 0.0);
  const auto t0 = std::chrono::steady_clock::now();
  at::parallel_for(0, T, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
#if NASBNN_X86
      if (isa == kAvx512) { ops[i] = peak_avx512(iters); continue; }
      if (isa == kAvx2) { ops[i] = peak_avx2(iters); continue; }
#endif
      ops[i] = peak_scalar(iters);
    }
  });
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double total = 0;
  for (double v : ops) total += v;
  return {dt, total};
}

}  // namespace

TORCH_LIBRARY(nasbnn_bitconv, m) {
  m.def("isa_supported(int isa) -> bool", [](int64_t isa) { return isa_supported(isa); });
  m.def("best_isa() -> int", &best_isa);
  m.def("pack_weights(Tensor negative, int groups) -> Tensor", &pack_weights);
  m.def("pack_activations(Tensor x, Tensor? threshold, int groups, int kernel, int isa) -> (Tensor, Tensor, bool)",
        &pack_activations);
  m.def("conv_packed(Tensor s, Tensor z, bool any_zero, int in_channels, Tensor wbits, Tensor alpha, "
        "Tensor? scale, Tensor? shift, int groups, int kernel, int stride, bool out_channels_last, int isa) -> Tensor",
        &conv_packed);
  m.def("conv(Tensor x, Tensor? threshold, Tensor wbits, Tensor alpha, Tensor? scale, Tensor? shift, "
        "int groups, int kernel, int stride, bool out_channels_last, int isa) -> Tensor",
        &conv);
  m.def("conv_glue(Tensor x, Tensor? threshold, Tensor wbits, Tensor alpha, int groups, int kernel, int stride, "
        "int isa, Tensor? bn_w, Tensor? bn_b, int bn_mode, Tensor? res, int res_stride, Tensor? b1, Tensor? a, "
        "Tensor? b2, int glue_isa) -> Tensor",
        &conv_glue);
  m.def("rsign_int8(Tensor x, Tensor? threshold, bool unsigned_out) -> Tensor", &rsign_int8);
  m.def("popcount_peak(int isa, int iters) -> (float, float)", &popcount_peak);
}
