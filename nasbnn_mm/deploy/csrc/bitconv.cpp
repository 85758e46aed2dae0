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
// Packed activations: uint64 words, (N, Hp, Wp, G * Wg) with Hp = H + 2 pad, Wp = W + 2 pad, Wg =
// ceil(cpg / 64) words per group and pixel; channel c of group g is bit (c % 64) of word g * Wg + c / 64.
// The padding ring and the tail bits of a group's last word are 0 in both planes. Packing is one pass
// over x (NCHW or NHWC float32) with the threshold add fused in; it reports whether any x + b == 0.
//
// Packed weights: uint64 words, (G, OB, K*K, Wg, 8): OB = ceil(opg / 8) blocks of 8 output channels
// ("lanes") per group; word [g, ob, kpos, j, l] holds input channels j*64..j*64+63 of output channel
// g*opg + ob*8 + l at kernel position kpos = ky*K + kx. Lanes past opg and bits past cpg are 0. That is
// all a layer keeps: 1 bit per weight (plus padding to whole words and lanes) and alpha.
//
// Two exact kernel variants, chosen per register tile of output pixels (both read the zero-padded buffer):
//   * plain: every window of the tile lies inside the image and no x + b == 0 occurred anywhere:
//       acc = K*K*cpg - 2 * popcount(sum of s XOR w)           (tail bits: 0 XOR 0)
//   * masked: a window touches the padding, or some x + b == 0 exactly: terms are masked with the
//     nonzero plane, which is 0 on the padding ring and on exact zeros, so those contribute 0:
//       acc = popcount(nonzero bits in the window) - 2 * popcount((s XOR w) AND nonzero)
//     (on AVX-512 one vpternlogq replaces the XOR: the same instruction count, plus one broadcast and
//     one scalar popcount per pixel and step).
// Vectorization is over output channels: an activation word is broadcast and XORed with the words of
// 8 output channels (one zmm); a register tile of P output pixels x NB blocks of 8 channels accumulates
// 64-bit popcounts (AVX-512 VPOPCNTQ; AVX2: pshufb nibble table into byte counters, flushed with psadbw
// every 31 steps; scalar: __builtin_popcountll). All paths compute the same integers.
//
// Output: float32 (N, cout, Ho, Wo), channels_last (NHWC in memory; what the next layer's packing reads
// fastest) or contiguous NCHW. Ho = (H + 2 pad - K) / stride + 1.
//
// Threads: at::parallel_for over rows (group, channel tile, image, output row): weights of one tile
// stay in L1 across consecutive rows; packing runs over input rows.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

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

using u64 = uint64_t;

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

inline u64 low_mask(int64_t nbits) { return nbits >= 64 ? ~u64(0) : (u64(1) << nbits) - 1; }

// ---------------------------------------------------------------- geometry
struct Geom {
  int64_t N, C, H, W;     // input
  int64_t G, cpg, Wg;     // groups, input channels per group, words per group and pixel
  int64_t K, S, pad, kk;  // kernel, stride, padding, K*K
  int64_t Hp, Wp, Ho, Wo;
  int64_t cout, opg, OB;  // output channels, per group, 8-lane blocks per group
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
  g.G = groups; g.cpg = C / groups; g.Wg = (g.cpg + 63) / 64;
  g.K = kernel; g.S = stride; g.pad = kernel / 2; g.kk = kernel * kernel;
  g.Hp = H + 2 * g.pad; g.Wp = W + 2 * g.pad;
  g.Ho = (H + 2 * g.pad - kernel) / stride + 1;
  g.Wo = (W + 2 * g.pad - kernel) / stride + 1;
  g.cout = cout; g.opg = cout / groups; g.OB = (g.opg + 7) / 8;
  TORCH_CHECK(g.kk * g.cpg < (int64_t(1) << 24), "nasbnn bitconv: K*K*in_channels/groups = ", g.kk * g.cpg,
              " not allowed (allowed: < 2^24, where float32 holds every sum exactly)");
  return g;
}

// ---------------------------------------------------------------- activation packing
struct PackArgs {
  Geom g;
  const float* x;
  const float* b;
  bool channels_last;
  u64* s;             // sign plane
  u64* z;             // nonzero plane
  uint8_t* row_zero;  // per input row (n, h): some x + b == 0
};

inline int64_t packed_offset(const Geom& g, int64_t n, int64_t hp, int64_t wp) {
  return ((n * g.Hp + hp) * g.Wp + wp) * g.GW();
}

void pack_row_scalar(const PackArgs& a, int64_t n, int64_t h, std::vector<u64>& ts, std::vector<u64>& tz) {
  const Geom& g = a.g;
  u64 zero_bits = 0;
  if (a.channels_last) {
    for (int64_t w = 0; w < g.W; ++w) {
      const float* px = a.x + ((n * g.H + h) * g.W + w) * g.C;
      const int64_t o = packed_offset(g, n, h + g.pad, w + g.pad);
      for (int64_t gi = 0; gi < g.G; ++gi)
        for (int64_t j = 0; j < g.Wg; ++j) {
          const int64_t c0 = gi * g.cpg + j * 64, nb = std::min<int64_t>(64, g.cpg - j * 64);
          u64 s = 0, z = 0;
          for (int64_t t = 0; t < nb; ++t) {
            const float u = px[c0 + t] + a.b[c0 + t];
            s |= u64(u < 0.f) << t;
            z |= u64(u != 0.f) << t;
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
        const int64_t c0 = gi * g.cpg + j * 64, nb = std::min<int64_t>(64, g.cpg - j * 64);
        std::fill(ts.begin(), ts.end(), 0);
        std::fill(tz.begin(), tz.end(), 0);
        for (int64_t t = 0; t < nb; ++t) {
          const float* row = a.x + (n * g.C + c0 + t) * plane + h * g.W;
          const float bc = a.b[c0 + t];
          for (int64_t w = 0; w < g.W; ++w) {
            const float u = row[w] + bc;
            ts[w] |= u64(u < 0.f) << t;
            tz[w] |= u64(u != 0.f) << t;
          }
        }
        const u64 m = low_mask(nb);
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
  const u64* act;
  const u64* nz;
  const u64* wb;
  const float* alpha;
  const float* scale;  // optional (nullptr)
  const float* shift;  // optional (nullptr)
  float* out;
  bool out_cl;
  bool any_zero;               // some x + b == 0: every tile takes the masked variant
  int64_t ntiles, nb_base;     // channel tiles per group, 8-lane blocks per tile (the last may be smaller)
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
void store_scalar(const ConvCtx& c, int64_t n, int64_t oh, int64_t ow, int64_t gi, int64_t ob, const int64_t v[8]) {
  const Geom& g = c.g;
  const int64_t o0 = gi * g.opg + ob * 8, nl = std::min<int64_t>(8, g.opg - ob * 8);
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
  const u64* wblk = c.wb + (gi * g.OB + ob) * steps * 8;
  const int64_t base = packed_offset(g, n, oh * g.S, ow * g.S) + gi * g.Wg;
  int64_t pop[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t nzc = 0;
  for (int64_t t = 0; t < steps; ++t) {
    const u64 a = c.act[base + c.off[t]];
    const u64* w8 = wblk + t * 8;
    if (MASKED) {
      const u64 m = c.nz[base + c.off[t]];
      nzc += __builtin_popcountll(m);
      for (int l = 0; l < 8; ++l) pop[l] += __builtin_popcountll((a ^ w8[l]) & m);
    } else {
      for (int l = 0; l < 8; ++l) pop[l] += __builtin_popcountll(a ^ w8[l]);
    }
  }
  const int64_t total = MASKED ? nzc : g.kk * g.cpg;
  int64_t v[8];
  for (int l = 0; l < 8; ++l) v[l] = total - 2 * pop[l];
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

// The reduction of one tile: P pixels x NB blocks (2 ymm of 4 channels each); byte counters are flushed
// into 64-bit lanes (pop) every 31 steps
template <int NB, int P, bool MASKED>
__attribute__((always_inline)) inline void reduce_avx2(const ConvCtx& c, const int64_t (&base)[P], const u64* wblk,
                                                       int64_t bstride, int64_t steps, __m256i (&pop)[P][NB][2],
                                                       int64_t (&nzc)[P]) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2,
                                       3, 2, 3, 3, 4);
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  __m256i acc8[P][NB][2];
  for (int p = 0; p < P; ++p) {
    nzc[p] = 0;
    for (int b = 0; b < NB; ++b) acc8[p][b][0] = acc8[p][b][1] = pop[p][b][0] = pop[p][b][1] = zero;
  }
  int since_flush = 0;
  for (int64_t t = 0; t < steps; ++t) {
    __m256i wv[NB][2];
    for (int b = 0; b < NB; ++b) {
      wv[b][0] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wblk + b * bstride + t * 8));
      wv[b][1] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wblk + b * bstride + t * 8 + 4));
    }
    const int64_t o = c.off[t];
    for (int p = 0; p < P; ++p) {
      const __m256i a = _mm256_set1_epi64x(static_cast<long long>(c.act[base[p] + o]));
      if (MASKED) {
        const u64 mw = c.nz[base[p] + o];
        nzc[p] += __builtin_popcountll(mw);
        const __m256i m = _mm256_set1_epi64x(static_cast<long long>(mw));
        for (int b = 0; b < NB; ++b)
          for (int h = 0; h < 2; ++h)
            acc8[p][b][h] = _mm256_add_epi8(
                acc8[p][b][h], popcnt8_avx2(_mm256_and_si256(_mm256_xor_si256(a, wv[b][h]), m), lut, low4));
      } else {
        for (int b = 0; b < NB; ++b)
          for (int h = 0; h < 2; ++h)
            acc8[p][b][h] = _mm256_add_epi8(acc8[p][b][h], popcnt8_avx2(_mm256_xor_si256(a, wv[b][h]), lut, low4));
      }
    }
    if (++since_flush == 31 || t + 1 == steps) {  // a byte counter holds at most 31 * 8 = 248
      since_flush = 0;
      for (int p = 0; p < P; ++p)
        for (int b = 0; b < NB; ++b)
          for (int h = 0; h < 2; ++h) {
            pop[p][b][h] = _mm256_add_epi64(pop[p][b][h], _mm256_sad_epu8(acc8[p][b][h], zero));
            acc8[p][b][h] = zero;
          }
    }
  }
}

template <int NB, int P>
void tile_avx2(const ConvCtx& c, int64_t gi, int64_t ob0, int64_t n, int64_t oh) {
  const Geom& g = c.g;
  const int64_t steps = g.kk * g.Wg, ih = oh * g.S, bstride = steps * 8;
  const u64* wblk = c.wb + (gi * g.OB + ob0) * bstride;
  for (int64_t ow0 = 0; ow0 < g.Wo; ow0 += P) {
    int64_t base[P];
    for (int p = 0; p < P; ++p) base[p] = packed_offset(g, n, ih, std::min(ow0 + p, g.Wo - 1) * g.S) + gi * g.Wg;
    const bool masked = c.any_zero || !inside(g, oh, ow0, std::min(ow0 + P - 1, g.Wo - 1));
    __m256i pop[P][NB][2];
    int64_t nzc[P];
    if (masked)
      reduce_avx2<NB, P, true>(c, base, wblk, bstride, steps, pop, nzc);
    else
      reduce_avx2<NB, P, false>(c, base, wblk, bstride, steps, pop, nzc);
    for (int p = 0; p < P; ++p) {
      const int64_t ow = ow0 + p;
      if (ow >= g.Wo) break;
      const int64_t total = masked ? nzc[p] : g.kk * g.cpg;
      for (int b = 0; b < NB; ++b) {
        alignas(32) int64_t cnt[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(cnt), pop[p][b][0]);
        _mm256_store_si256(reinterpret_cast<__m256i*>(cnt + 4), pop[p][b][1]);
        int64_t v[8];
        for (int l = 0; l < 8; ++l) v[l] = total - 2 * cnt[l];
        store_scalar(c, n, oh, ow, gi, ob0 + b, v);
      }
    }
  }
}

void row_avx2(const ConvCtx& c, int64_t gi, int64_t b0, int64_t b1, int64_t n, int64_t oh) {
  for (int64_t ob = b0; ob < b1; ob += 2) {
    if (b1 - ob >= 2)
      tile_avx2<2, 2>(c, gi, ob, n, oh);
    else
      tile_avx2<1, 4>(c, gi, ob, n, oh);
  }
}

}  // namespace
#pragma GCC pop_options

// ======================================================================== AVX-512 (F, BW, DQ, VL, VPOPCNTDQ)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vpopcntdq,popcnt")
namespace {

void pack_row_avx512(const PackArgs& a, int64_t n, int64_t h) {
  const Geom& g = a.g;
  const __m512 zero = _mm512_setzero_ps();
  u64 zero_bits = 0;
  if (a.channels_last) {
    // per pixel: the C sign / nonzero bits as one bit string (16 channels per compare), then each
    // group's words cut out of it (a shift across two words where a group starts mid-word)
    const int64_t cw = (g.C + 63) / 64;
    std::vector<u64> sb(cw + 1), zb(cw + 1);
    const __mmask16 tail = g.C % 16 ? __mmask16((1u << (g.C % 16)) - 1) : __mmask16(0xFFFF);
    for (int64_t w = 0; w < g.W; ++w) {
      const float* px = a.x + ((n * g.H + h) * g.W + w) * g.C;
      const int64_t o = packed_offset(g, n, h + g.pad, w + g.pad);
      for (int64_t i = 0; i < cw; ++i) sb[i] = zb[i] = 0;
      for (int64_t c0 = 0; c0 < g.C; c0 += 16) {
        const __mmask16 m = c0 + 16 <= g.C ? __mmask16(0xFFFF) : tail;
        const __m512 u = _mm512_add_ps(_mm512_maskz_loadu_ps(m, px + c0), _mm512_maskz_loadu_ps(m, a.b + c0));
        const u64 lt = _mm512_mask_cmp_ps_mask(m, u, zero, _CMP_LT_OQ);
        const u64 ne = _mm512_mask_cmp_ps_mask(m, u, zero, _CMP_NEQ_UQ);
        sb[c0 >> 6] |= lt << (c0 & 63);
        zb[c0 >> 6] |= ne << (c0 & 63);
        zero_bits |= ne ^ u64(m);
      }
      if (g.G == 1) {
        for (int64_t j = 0; j < cw; ++j) {
          a.s[o + j] = sb[j];
          a.z[o + j] = zb[j];
        }
        continue;
      }
      for (int64_t gi = 0; gi < g.G; ++gi)
        for (int64_t j = 0; j < g.Wg; ++j) {
          const int64_t p = gi * g.cpg + j * 64, q = p >> 6, r = p & 63;
          const u64 vm = low_mask(std::min<int64_t>(64, g.cpg - j * 64));
          const u64 sv = r ? (sb[q] >> r) | (sb[q + 1] << (64 - r)) : sb[q];
          const u64 zv = r ? (zb[q] >> r) | (zb[q + 1] << (64 - r)) : zb[q];
          a.s[o + gi * g.Wg + j] = sv & vm;
          a.z[o + gi * g.Wg + j] = zv & vm;
        }
    }
  } else {
    const int64_t plane = g.H * g.W, GW = g.GW();
    const int64_t o = packed_offset(g, n, h + g.pad, g.pad);
    alignas(64) u64 bs[16], bz[16];
    for (int64_t gi = 0; gi < g.G; ++gi)
      for (int64_t j = 0; j < g.Wg; ++j) {
        const int64_t c0 = gi * g.cpg + j * 64, nb = std::min<int64_t>(64, g.cpg - j * 64);
        const u64 vm = low_mask(nb);
        for (int64_t w0 = 0; w0 < g.W; w0 += 16) {
          const int64_t r = g.W - w0;
          const __mmask16 m = r >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << r) - 1);
          __m512i s_lo = _mm512_setzero_si512(), s_hi = s_lo, z_lo = s_lo, z_hi = s_lo;
          for (int64_t t = 0; t < nb; ++t) {
            const float* row = a.x + (n * g.C + c0 + t) * plane + h * g.W + w0;
            const __m512 u = _mm512_add_ps(_mm512_maskz_loadu_ps(m, row), _mm512_set1_ps(a.b[c0 + t]));
            const __mmask16 lt = _mm512_mask_cmp_ps_mask(m, u, zero, _CMP_LT_OQ);
            const __mmask16 ne = _mm512_mask_cmp_ps_mask(m, u, zero, _CMP_NEQ_UQ);
            const __m512i bit = _mm512_set1_epi64(static_cast<long long>(u64(1) << t));
            s_lo = _mm512_mask_or_epi64(s_lo, __mmask8(lt), s_lo, bit);
            s_hi = _mm512_mask_or_epi64(s_hi, __mmask8(lt >> 8), s_hi, bit);
            z_lo = _mm512_mask_or_epi64(z_lo, __mmask8(ne), z_lo, bit);
            z_hi = _mm512_mask_or_epi64(z_hi, __mmask8(ne >> 8), z_hi, bit);
          }
          _mm512_store_si512(bs, s_lo);
          _mm512_store_si512(bs + 8, s_hi);
          _mm512_store_si512(bz, z_lo);
          _mm512_store_si512(bz + 8, z_hi);
          const int64_t q1 = std::min<int64_t>(16, r);
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

// The reduction of one tile: P output pixels x NB blocks of 8 output channels, 64-bit popcount
// accumulators in zmm registers
template <int NB, int P, bool MASKED>
__attribute__((always_inline)) inline void reduce_avx512(const u64* const (&ap)[P], const u64* const (&zp)[P],
                                                         const u64* wblk, int64_t bstride, const int64_t* off,
                                                         int64_t steps, __m512i (&acc)[P][NB], int64_t (&nzc)[P]) {
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    nzc[p] = 0;
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) acc[p][b] = _mm512_setzero_si512();
  }
  for (int64_t t = 0; t < steps; ++t) {
    __m512i wv[NB];
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) wv[b] = _mm512_loadu_si512(wblk + b * bstride + t * 8);
    const int64_t o = off[t];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      const __m512i a = _mm512_set1_epi64(static_cast<long long>(ap[p][o]));
      if (MASKED) {
        const u64 mw = zp[p][o];
        nzc[p] += _mm_popcnt_u64(mw);
        const __m512i m = _mm512_set1_epi64(static_cast<long long>(mw));
#pragma GCC unroll 4
        for (int b = 0; b < NB; ++b)  // (a XOR w) AND m in one vpternlogq
          acc[p][b] = _mm512_add_epi64(acc[p][b], _mm512_popcnt_epi64(_mm512_ternarylogic_epi64(a, wv[b], m, 0x28)));
      } else {
#pragma GCC unroll 4
        for (int b = 0; b < NB; ++b)
          acc[p][b] = _mm512_add_epi64(acc[p][b], _mm512_popcnt_epi64(_mm512_xor_si512(a, wv[b])));
      }
    }
  }
}

// One output row of one channel tile (NB blocks): P pixels at a time, then the epilogue
template <int NB, int P>
void tile_avx512(const ConvCtx& c, int64_t gi, int64_t ob0, int64_t n, int64_t oh) {
  const Geom& g = c.g;
  const int64_t steps = g.kk * g.Wg, ih = oh * g.S, bstride = steps * 8, Wo = g.Wo;
  const u64* const wblk = c.wb + (gi * g.OB + ob0) * bstride;
  const int64_t* const off = c.off.data();
  const int64_t row0 = packed_offset(g, n, ih, 0) + gi * g.Wg, px_words = g.S * g.GW();
  // epilogue state, hoisted out of the pixel loop (locals: the output stores cannot alias them)
  const bool has_scale = c.scale != nullptr, has_shift = c.shift != nullptr, cl = c.out_cl;
  __m256 av[NB], sv[NB], hv[NB];
  __mmask8 mk[NB];
  int nl[NB];
  for (int b = 0; b < NB; ++b) {
    const int64_t o0 = gi * g.opg + (ob0 + b) * 8;
    nl[b] = static_cast<int>(std::min<int64_t>(8, g.opg - (ob0 + b) * 8));
    mk[b] = nl[b] >= 8 ? __mmask8(0xFF) : __mmask8((1u << nl[b]) - 1);
    av[b] = _mm256_maskz_loadu_ps(mk[b], c.alpha + o0);
    sv[b] = has_scale ? _mm256_maskz_loadu_ps(mk[b], c.scale + o0) : _mm256_set1_ps(1.f);
    hv[b] = has_shift ? _mm256_maskz_loadu_ps(mk[b], c.shift + o0) : _mm256_setzero_ps();
  }
  const int64_t o_first = gi * g.opg + ob0 * 8;
  float* const orow = c.out + (cl ? ((n * g.Ho + oh) * Wo) * g.cout + o_first : ((n * g.cout + o_first) * g.Ho + oh) * Wo);
  const int64_t pstride = cl ? g.cout : 1, cstride = cl ? 1 : g.Ho * Wo;
  const __m512i kbase = _mm512_set1_epi64(g.kk * g.cpg);
  for (int64_t ow0 = 0; ow0 < Wo; ow0 += P) {
    const u64* ap[P];
    const u64* zp[P];
    for (int p = 0; p < P; ++p) {  // pixels past the row end repeat the last one (computed, not stored)
      const int64_t b = row0 + std::min(ow0 + p, Wo - 1) * px_words;
      ap[p] = c.act + b;
      zp[p] = c.nz + b;
    }
    const bool masked = c.any_zero || !inside(g, oh, ow0, std::min(ow0 + P - 1, Wo - 1));
    __m512i acc[P][NB];
    int64_t nzc[P];
    if (masked)
      reduce_avx512<NB, P, true>(ap, zp, wblk, bstride, off, steps, acc, nzc);
    else
      reduce_avx512<NB, P, false>(ap, zp, wblk, bstride, off, steps, acc, nzc);
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      const int64_t ow = ow0 + p;
      if (ow >= Wo) break;
      float* const op = orow + ow * pstride;
      const __m512i total = masked ? _mm512_set1_epi64(nzc[p]) : kbase;
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) {
        const __m512i v = _mm512_sub_epi64(total, _mm512_slli_epi64(acc[p][b], 1));
        __m256 y = _mm256_mul_ps(_mm512_cvtepi64_ps(v), av[b]);
        if (has_scale) y = _mm256_mul_ps(y, sv[b]);
        if (has_shift) y = _mm256_add_ps(y, hv[b]);
        if (cl) {
          _mm256_mask_storeu_ps(op + 8 * b, mk[b], y);
        } else {
          alignas(32) float tmp[8];
          _mm256_store_ps(tmp, y);
          for (int l = 0; l < nl[b]; ++l) op[(8 * b + l) * cstride] = tmp[l];
        }
      }
    }
  }
}

void row_avx512(const ConvCtx& c, int64_t gi, int64_t b0, int64_t b1, int64_t n, int64_t oh) {
  switch (b1 - b0) {
    case 1: tile_avx512<1, 8>(c, gi, b0, n, oh); break;
    case 2: tile_avx512<2, 6>(c, gi, b0, n, oh); break;
    case 3: tile_avx512<3, 4>(c, gi, b0, n, oh); break;
    default: tile_avx512<4, 4>(c, gi, b0, n, oh); break;
  }
}

// The inner loop of tile_avx512<4, 4> on L1-resident data: returns the binary ops done (bits XNOR-popcounted).
double peak_avx512(int64_t iters) {
  alignas(64) u64 buf[512];
  std::mt19937_64 rng(1);
  for (auto& v : buf) v = rng();
  __m512i acc[16];
  for (auto& v : acc) v = _mm512_setzero_si512();
  for (int64_t it = 0; it < iters; ++it) {
    for (int t = 0; t < 64; t += 4) {  // 16 steps per sweep over 4 KiB of "weights"
      const u64* w = buf + t * 8;
      __m512i wv[4];
      for (int b = 0; b < 4; ++b) wv[b] = _mm512_load_si512(w + b * 8);
      for (int p = 0; p < 4; ++p) {
        const __m512i a = _mm512_set1_epi64(static_cast<long long>(buf[(t * 5 + p * 3 + it) & 511]));
        for (int b = 0; b < 4; ++b)
          acc[p * 4 + b] = _mm512_add_epi64(acc[p * 4 + b], _mm512_popcnt_epi64(_mm512_xor_si512(a, wv[b])));
      }
    }
    asm volatile("" : : : "memory");
  }
  __m512i s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_epi64(s, acc[i]);
  volatile long long sink = _mm512_reduce_add_epi64(s);
  (void)sink;
  return double(iters) * 16 * 16 * 512;
}

}  // namespace
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2")
namespace {
double peak_avx2(int64_t iters) {
  alignas(64) u64 buf[512];
  std::mt19937_64 rng(1);
  for (auto& v : buf) v = rng();
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2,
                                       3, 2, 3, 3, 4);
  const __m256i low4 = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
  __m256i acc64[8];
  for (auto& v : acc64) v = zero;
  for (int64_t it = 0; it < iters; ++it) {
    __m256i acc8[8];
    for (auto& v : acc8) v = zero;
    for (int t = 0; t < 31; ++t) {  // tile_avx2<2, 2>: 2 pixels x 2 blocks x 2 ymm
      const u64* w = buf + (t * 16 & 511);
      __m256i wv[4];
      for (int b = 0; b < 4; ++b) wv[b] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + b * 4));
      for (int p = 0; p < 2; ++p) {
        const __m256i a = _mm256_set1_epi64x(static_cast<long long>(buf[(t * 7 + p + it) & 511]));
        for (int b = 0; b < 4; ++b)
          acc8[p * 4 + b] = _mm256_add_epi8(acc8[p * 4 + b], popcnt8_avx2(_mm256_xor_si256(a, wv[b]), lut, low4));
      }
    }
    for (int i = 0; i < 8; ++i) acc64[i] = _mm256_add_epi64(acc64[i], _mm256_sad_epu8(acc8[i], zero));
    asm volatile("" : : : "memory");
  }
  alignas(32) long long t[4];
  __m256i s = acc64[0];
  for (int i = 1; i < 8; ++i) s = _mm256_add_epi64(s, acc64[i]);
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), s);
  volatile long long sink = t[0] + t[1] + t[2] + t[3];
  (void)sink;
  return double(iters) * 31 * 8 * 256;
}
}  // namespace
#pragma GCC pop_options
#endif  // NASBNN_X86

namespace {

double peak_scalar(int64_t iters) {
  u64 buf[512];
  std::mt19937_64 rng(1);
  for (auto& v : buf) v = rng();
  int64_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t it = 0; it < iters; ++it) {
    for (int t = 0; t < 64; ++t) {
      const u64 a = buf[(t * 5 + it) & 511];
      const u64* w = buf + t * 8;
      for (int l = 0; l < 8; ++l) acc[l] += __builtin_popcountll(a ^ w[l]);
    }
    asm volatile("" : : : "memory");
  }
  volatile int64_t sink = acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] + acc[6] + acc[7];
  (void)sink;
  return double(iters) * 64 * 8 * 64;
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
// -> (sign plane, nonzero plane, any zero): int64 (N, Hp, Wp, G * Wg) each
std::tuple<at::Tensor, at::Tensor, bool> pack_activations(const at::Tensor& x, const std::optional<at::Tensor>& threshold,
                                                          int64_t groups, int64_t kernel, int64_t isa) {
  check_isa(isa);
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4,
              "nasbnn bitconv: x must be a float32 CPU tensor (N, C, H, W), got ", x.scalar_type(), " ", x.sizes());
  const bool cl = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(x.is_contiguous() || cl, "nasbnn bitconv: x must be contiguous (NCHW) or channels_last (NHWC)");
  const Geom g = make_geom(x.size(0), x.size(1), x.size(2), x.size(3), groups, kernel, 1, groups);
  check_float_vec(threshold, g.C, "threshold");
  at::Tensor bk = threshold.has_value() ? threshold->contiguous() : at::zeros({g.C}, x.options());
  auto opts = x.options().dtype(at::kLong);
  at::Tensor s = at::empty({g.N, g.Hp, g.Wp, g.GW()}, opts);
  at::Tensor z = at::empty({g.N, g.Hp, g.Wp, g.GW()}, opts);
  std::vector<uint8_t> row_zero(g.N * g.H, 0);
  PackArgs a{g, x.data_ptr<float>(), bk.data_ptr<float>(), cl, reinterpret_cast<u64*>(s.data_ptr<int64_t>()),
             reinterpret_cast<u64*>(z.data_ptr<int64_t>()), row_zero.data()};
  if (g.pad > 0) {  // the padding ring only: the image area is written below
    const int64_t GW = g.GW();
    at::parallel_for(0, g.N * g.Hp, 64, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t hp = r % g.Hp;
        u64* rs = a.s + r * g.Wp * GW;
        u64* rz = a.z + r * g.Wp * GW;
        if (hp < g.pad || hp >= g.pad + g.H) {
          std::memset(rs, 0, sizeof(u64) * g.Wp * GW);
          std::memset(rz, 0, sizeof(u64) * g.Wp * GW);
        } else {
          std::memset(rs, 0, sizeof(u64) * g.pad * GW);
          std::memset(rz, 0, sizeof(u64) * g.pad * GW);
          std::memset(rs + (g.pad + g.W) * GW, 0, sizeof(u64) * g.pad * GW);
          std::memset(rz + (g.pad + g.W) * GW, 0, sizeof(u64) * g.pad * GW);
        }
      }
    });
  }
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.W * g.C));
  at::parallel_for(0, g.N * g.H, grain, [&](int64_t b, int64_t e) {
    std::vector<u64> ts, tz;
    for (int64_t r = b; r < e; ++r) {
#if NASBNN_X86
      if (isa == kAvx512) {
        pack_row_avx512(a, r / g.H, r % g.H);
        continue;
      }
#endif
      pack_row_scalar(a, r / g.H, r % g.H, ts, tz);
    }
  });
  bool any_zero = false;
  for (auto v : row_zero) any_zero |= v != 0;
  return {s, z, any_zero};
}

// weights: bool / uint8 (cout, cpg, K, K), nonzero = negative weight -> words int64 (G, OB, K*K, Wg, 8)
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
  at::Tensor words = at::zeros({g.G, g.OB, g.kk, g.Wg, 8}, nb.options().dtype(at::kLong));
  u64* wp = reinterpret_cast<u64*>(words.data_ptr<int64_t>());
  for (int64_t o = 0; o < cout; ++o) {
    const int64_t gi = o / g.opg, ob = (o % g.opg) / 8, l = (o % g.opg) % 8;
    for (int64_t c = 0; c < cpg; ++c)
      for (int64_t kp = 0; kp < g.kk; ++kp)
        if (src[(o * cpg + c) * g.kk + kp]) wp[(((gi * g.OB + ob) * g.kk + kp) * g.Wg + c / 64) * 8 + l] |= u64(1) << (c % 64);
  }
  return words;
}

at::Tensor conv_packed(const at::Tensor& s, const at::Tensor& z, bool any_zero, int64_t in_channels, const at::Tensor& wbits,
                       const at::Tensor& alpha, const std::optional<at::Tensor>& scale,
                       const std::optional<at::Tensor>& shift, int64_t groups, int64_t kernel, int64_t stride,
                       bool out_channels_last, int64_t isa) {
  check_isa(isa);
  TORCH_CHECK(s.scalar_type() == at::kLong && s.dim() == 4 && s.is_contiguous() && z.sizes() == s.sizes() &&
                  z.scalar_type() == at::kLong && z.is_contiguous(),
              "nasbnn bitconv: packed activations must be two contiguous int64 (N, Hp, Wp, words) tensors");
  TORCH_CHECK(alpha.device().is_cpu() && alpha.scalar_type() == at::kFloat && alpha.dim() == 1,
              "nasbnn bitconv: alpha must be a float32 CPU tensor (out_channels,), got ", alpha.scalar_type(), " ",
              alpha.sizes());
  const int64_t pad = kernel / 2;
  const Geom g = make_geom(s.size(0), in_channels, s.size(1) - 2 * pad, s.size(2) - 2 * pad, groups, kernel, stride,
                           alpha.size(0));
  TORCH_CHECK(s.size(3) == g.GW(), "nasbnn bitconv: packed activations have ", s.size(3), " words per pixel, expected ",
              g.GW(), " for in_channels ", in_channels, " groups ", groups);
  TORCH_CHECK(wbits.device().is_cpu() && wbits.scalar_type() == at::kLong && wbits.is_contiguous() &&
                  wbits.numel() == g.G * g.OB * g.kk * g.Wg * 8,
              "nasbnn bitconv: wbits must be contiguous int64 with ", g.G * g.OB * g.kk * g.Wg * 8, " words, got ",
              wbits.scalar_type(), " ", wbits.sizes());
  check_float_vec(scale, g.cout, "scale");
  check_float_vec(shift, g.cout, "shift");
  TORCH_CHECK(g.Ho >= 1 && g.Wo >= 1, "nasbnn bitconv: empty output");
  at::Tensor alpha_c = alpha.contiguous(), scale_k, shift_k;
  auto opts = alpha.options();
  at::Tensor out = out_channels_last
                       ? at::empty({g.N, g.cout, g.Ho, g.Wo}, opts, at::MemoryFormat::ChannelsLast)
                       : at::empty({g.N, g.cout, g.Ho, g.Wo}, opts);
  ConvCtx c;
  c.g = g;
  c.act = reinterpret_cast<const u64*>(s.data_ptr<int64_t>());
  c.nz = reinterpret_cast<const u64*>(z.data_ptr<int64_t>());
  c.wb = reinterpret_cast<const u64*>(wbits.data_ptr<int64_t>());
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
  // items: (group, tile, image, output row); consecutive items share a tile's weights
  const int64_t rows = g.N * g.Ho, items = g.G * c.ntiles * rows;
  const int64_t cost = std::max<int64_t>(1, g.Wo * c.nb_base * 8 * g.kk * g.Wg);
  const int64_t grain = std::max<int64_t>(1, 8192 / cost);
  at::parallel_for(0, items, grain, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      const int64_t r = it % rows, gt = it / rows, gi = gt / c.ntiles, tile = gt % c.ntiles;
      const int64_t n = r / g.Ho, oh = r % g.Ho;
      const int64_t b0 = tile * c.nb_base, b1 = std::min(g.OB, b0 + c.nb_base);
#if NASBNN_X86
      if (isa == kAvx512) {
        row_avx512(c, gi, b0, b1, n, oh);
        continue;
      }
      if (isa == kAvx2) {
        row_avx2(c, gi, b0, b1, n, oh);
        continue;
      }
#endif
      row_scalar(c, gi, b0, b1, n, oh);
    }
  });
  return out;
}

at::Tensor conv(const at::Tensor& x, const std::optional<at::Tensor>& threshold, const at::Tensor& wbits,
                const at::Tensor& alpha, const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& shift,
                int64_t groups, int64_t kernel, int64_t stride, bool out_channels_last, int64_t isa) {
  auto [s, z, any_zero] = pack_activations(x, threshold, groups, kernel, isa);
  return conv_packed(s, z, any_zero, x.size(1), wbits, alpha, scale, shift, groups, kernel, stride, out_channels_last,
                     isa);
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
  m.def("rsign_int8(Tensor x, Tensor? threshold, bool unsigned_out) -> Tensor", &rsign_int8);
  m.def("popcount_peak(int isa, int iters) -> (float, float)", &popcount_peak);
}
