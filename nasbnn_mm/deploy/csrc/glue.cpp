// The element-wise glue of a deployed NAS-BNN layer (see glue.h): folded BN, shortcut, RPReLU, in place
// on a channels_last float32 tensor, one pass. Three paths with the same arithmetic (scalar, AVX2 + FMA,
// AVX-512), chosen by the caller; vectorized over channels (NHWC: a pixel's channels are contiguous).
#include "glue.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NASBNN_GLUE_X86 1
#else
#define NASBNN_GLUE_X86 0
#endif

namespace nasbnn_glue {
namespace {

// ---------------------------------------------------------------- scalar (the definition)
inline float bn_scalar(float v, float w, float b, int64_t mode) {
  if (mode == 1) return std::fma(v, w, b);
  if (mode == 2) return v * w + b;  // two roundings (-ffp-contract=off)
  return v;
}

// channels [k, k + n) of one pixel, residual values r[0, n) (or nullptr)
void segment_scalar(const GlueArgs& g, float* py, const float* r, int64_t k, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    const int64_t ch = k + c;
    float v = py[ch];
    if (g.bn_mode) v = bn_scalar(v, g.bn_w[ch], g.bn_b[ch], g.bn_mode);
    if (r) v = v + r[c];
    if (g.b1) {
      const float t = v + g.b1[ch];
      v = (t > 0.f ? t : g.a[ch] * t) + g.b2[ch];
    }
    py[ch] = v;
  }
}

// the 2x2 average (ceil mode, padding not counted) of the residual at output pixel (n, oh, ow): the sum
// from 0 in row-major window order, then / count (F.avg_pool2d's order)
struct Window {
  int64_t ih0, ih1, iw0, iw1;
  float count;
};

inline Window window(const GlueArgs& g, int64_t oh, int64_t ow) {
  Window w{};
  w.ih0 = oh * g.res_stride;
  w.ih1 = std::min(w.ih0 + g.res_stride, g.Hr);
  w.iw0 = ow * g.res_stride;
  w.iw1 = std::min(w.iw0 + g.res_stride, g.Wr);
  w.count = static_cast<float>((w.ih1 - w.ih0) * (w.iw1 - w.iw0));
  return w;
}

inline const float* res_px(const GlueArgs& g, int64_t n, int64_t ih, int64_t iw) {
  return g.res + ((n * g.Hr + ih) * g.Wr + iw) * g.Cr;
}

void pool_scalar(const GlueArgs& g, int64_t n, const Window& w, float* out) {
  for (int64_t c = 0; c < g.Cr; ++c) out[c] = 0.f;
  for (int64_t ih = w.ih0; ih < w.ih1; ++ih)
    for (int64_t iw = w.iw0; iw < w.iw1; ++iw) {
      const float* p = res_px(g, n, ih, iw);
      for (int64_t c = 0; c < g.Cr; ++c) out[c] = out[c] + p[c];
    }
  for (int64_t c = 0; c < g.Cr; ++c) out[c] = out[c] / w.count;
}

// The loop over output rows [r0, r1) with the path's SEGMENT and POOL functions (expanded once per
// instruction-set path, so that they inline): per pixel, the pooled or direct residual, then the channels in
// segments of Cr (output channel k + c reads residual channel c: the tiling of the shortcut).
#define NASBNN_GLUE_ROWS(SEGMENT, POOL)                                         \
  for (int64_t r = r0; r < r1; ++r) {                                          \
    const int64_t n = r / g.H, oh = r % g.H;                                   \
    float* row = g.y + r * g.W * g.C;                                          \
    for (int64_t ow = 0; ow < g.W; ++ow) {                                     \
      float* py = row + ow * g.C;                                              \
      if (!g.res) {                                                            \
        SEGMENT(g, py, nullptr, 0, g.C);                                       \
        continue;                                                              \
      }                                                                        \
      const float* rp;                                                         \
      if (g.res_stride == 1) {                                                 \
        rp = res_px(g, n, oh, ow);                                             \
      } else {                                                                 \
        POOL(g, n, window(g, oh, ow), pooled);                                 \
        rp = pooled;                                                           \
      }                                                                        \
      for (int64_t k = 0; k < g.C; k += g.Cr) SEGMENT(g, py, rp, k, std::min(g.Cr, g.C - k)); \
    }                                                                          \
  }

void rows_scalar(const GlueArgs& g, int64_t r0, int64_t r1, float* pooled) { NASBNN_GLUE_ROWS(segment_scalar, pool_scalar) }

}  // namespace
}  // namespace nasbnn_glue

#if NASBNN_GLUE_X86
// ---------------------------------------------------------------- AVX2 + FMA
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace nasbnn_glue {
namespace {

// 8 channels [ch, ch + 8) (residual r8), or fewer with MASKED (lanes of m)
template <bool MASKED>
__attribute__((always_inline)) inline void lanes8(const GlueArgs& g, float* py, const float* r8, int64_t ch,
                                                  __m256i m) {
  auto ld = [&](const float* p) { return MASKED ? _mm256_maskload_ps(p, m) : _mm256_loadu_ps(p); };
  __m256 v = ld(py + ch);
  if (g.bn_mode == 1)
    v = _mm256_fmadd_ps(v, ld(g.bn_w + ch), ld(g.bn_b + ch));
  else if (g.bn_mode == 2)
    v = _mm256_add_ps(_mm256_mul_ps(v, ld(g.bn_w + ch)), ld(g.bn_b + ch));
  if (r8) v = _mm256_add_ps(v, ld(r8));
  if (g.b1) {
    const __m256 t = _mm256_add_ps(v, ld(g.b1 + ch));
    const __m256 neg = _mm256_mul_ps(t, ld(g.a + ch));
    v = _mm256_add_ps(_mm256_blendv_ps(neg, t, _mm256_cmp_ps(t, _mm256_setzero_ps(), _CMP_GT_OQ)), ld(g.b2 + ch));
  }
  if (MASKED)
    _mm256_maskstore_ps(py + ch, m, v);
  else
    _mm256_storeu_ps(py + ch, v);
}

void segment_avx2(const GlueArgs& g, float* py, const float* r, int64_t k, int64_t n) {
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) lanes8<false>(g, py, r ? r + c : nullptr, k + c, _mm256_setzero_si256());
  if (c < n) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - c)),
                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    lanes8<true>(g, py, r ? r + c : nullptr, k + c, m);
  }
}

void pool_avx2(const GlueArgs& g, int64_t n, const Window& w, float* out) {
  int64_t c = 0;
  const __m256 cnt = _mm256_set1_ps(w.count);
  for (; c + 8 <= g.Cr; c += 8) {
    __m256 s = _mm256_setzero_ps();
    for (int64_t ih = w.ih0; ih < w.ih1; ++ih)
      for (int64_t iw = w.iw0; iw < w.iw1; ++iw) s = _mm256_add_ps(s, _mm256_loadu_ps(res_px(g, n, ih, iw) + c));
    _mm256_storeu_ps(out + c, _mm256_div_ps(s, cnt));
  }
  for (; c < g.Cr; ++c) {
    float s = 0.f;
    for (int64_t ih = w.ih0; ih < w.ih1; ++ih)
      for (int64_t iw = w.iw0; iw < w.iw1; ++iw) s = s + res_px(g, n, ih, iw)[c];
    out[c] = s / w.count;
  }
}

void rows_avx2(const GlueArgs& g, int64_t r0, int64_t r1, float* pooled) { NASBNN_GLUE_ROWS(segment_avx2, pool_avx2) }

}  // namespace
}  // namespace nasbnn_glue
#pragma GCC pop_options

// ---------------------------------------------------------------- AVX-512
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,fma")
namespace nasbnn_glue {
namespace {

inline __mmask16 lanes16(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

// 16 channels [ch, ch + 16) (residual r16), or the lanes of m with MASKED (masked loads and stores are
// slow on some CPUs: only for the last < 8 channels of a segment)
template <bool MASKED>
__attribute__((always_inline)) inline void lanes16v(const GlueArgs& g, float* py, const float* r16, int64_t ch,
                                                    __mmask16 m) {
  auto ld = [&](const float* p) { return MASKED ? _mm512_maskz_loadu_ps(m, p) : _mm512_loadu_ps(p); };
  __m512 v = ld(py + ch);
  if (g.bn_mode == 1)
    v = _mm512_fmadd_ps(v, ld(g.bn_w + ch), ld(g.bn_b + ch));
  else if (g.bn_mode == 2)
    v = _mm512_add_ps(_mm512_mul_ps(v, ld(g.bn_w + ch)), ld(g.bn_b + ch));
  if (r16) v = _mm512_add_ps(v, ld(r16));
  if (g.b1) {
    const __m512 t = _mm512_add_ps(v, ld(g.b1 + ch));
    const __m512 neg = _mm512_mul_ps(t, ld(g.a + ch));
    const __mmask16 pos = _mm512_cmp_ps_mask(t, _mm512_setzero_ps(), _CMP_GT_OQ);
    v = _mm512_add_ps(_mm512_mask_blend_ps(pos, neg, t), ld(g.b2 + ch));
  }
  if (MASKED)
    _mm512_mask_storeu_ps(py + ch, m, v);
  else
    _mm512_storeu_ps(py + ch, v);
}

// 8 channels with 256-bit registers (same operations)
__attribute__((always_inline)) inline void lanes8v(const GlueArgs& g, float* py, const float* r8, int64_t ch) {
  __m256 v = _mm256_loadu_ps(py + ch);
  if (g.bn_mode == 1)
    v = _mm256_fmadd_ps(v, _mm256_loadu_ps(g.bn_w + ch), _mm256_loadu_ps(g.bn_b + ch));
  else if (g.bn_mode == 2)
    v = _mm256_add_ps(_mm256_mul_ps(v, _mm256_loadu_ps(g.bn_w + ch)), _mm256_loadu_ps(g.bn_b + ch));
  if (r8) v = _mm256_add_ps(v, _mm256_loadu_ps(r8));
  if (g.b1) {
    const __m256 t = _mm256_add_ps(v, _mm256_loadu_ps(g.b1 + ch));
    const __m256 neg = _mm256_mul_ps(t, _mm256_loadu_ps(g.a + ch));
    const __mmask8 pos = _mm256_cmp_ps_mask(t, _mm256_setzero_ps(), _CMP_GT_OQ);
    v = _mm256_add_ps(_mm256_mask_blend_ps(pos, neg, t), _mm256_loadu_ps(g.b2 + ch));
  }
  _mm256_storeu_ps(py + ch, v);
}

void segment_avx512(const GlueArgs& g, float* py, const float* r, int64_t k, int64_t n) {
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) lanes16v<false>(g, py, r ? r + c : nullptr, k + c, 0);
  if (c + 8 <= n) {
    lanes8v(g, py, r ? r + c : nullptr, k + c);
    c += 8;
  }
  if (c < n) lanes16v<true>(g, py, r ? r + c : nullptr, k + c, lanes16(n - c));
}

void pool_avx512(const GlueArgs& g, int64_t n, const Window& w, float* out) {
  const __m512 cnt = _mm512_set1_ps(w.count);
  for (int64_t c = 0; c < g.Cr; c += 16) {
    const __mmask16 m = lanes16(g.Cr - c);
    __m512 s = _mm512_setzero_ps();
    for (int64_t ih = w.ih0; ih < w.ih1; ++ih)
      for (int64_t iw = w.iw0; iw < w.iw1; ++iw)
        s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, res_px(g, n, ih, iw) + c));
    _mm512_mask_storeu_ps(out + c, m, _mm512_div_ps(s, cnt));
  }
}

void rows_avx512(const GlueArgs& g, int64_t r0, int64_t r1, float* pooled) {
  NASBNN_GLUE_ROWS(segment_avx512, pool_avx512)
}

}  // namespace
}  // namespace nasbnn_glue
#pragma GCC pop_options
#endif  // NASBNN_GLUE_X86

namespace nasbnn_glue {

bool glue_isa_supported(int64_t isa) {
#if NASBNN_GLUE_X86
  __builtin_cpu_init();
  switch (isa) {
    case 0: return true;
    case 1: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case 2:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("fma");
    default: return false;
  }
#else
  return isa == 0;
#endif
}

void glue_rows(const GlueArgs& g, int64_t r0, int64_t r1) {
  thread_local std::vector<float> pooled;
  if (g.res && g.res_stride != 1 && static_cast<int64_t>(pooled.size()) < g.Cr) pooled.resize(g.Cr);
#if NASBNN_GLUE_X86
  if (g.isa == 2) return rows_avx512(g, r0, r1, pooled.data());
  if (g.isa == 1) return rows_avx2(g, r0, r1, pooled.data());
#endif
  rows_scalar(g, r0, r1, pooled.data());
}

}  // namespace nasbnn_glue

// ---------------------------------------------------------------- op
namespace {

using nasbnn_glue::GlueArgs;

const float* opt_vec(const std::optional<at::Tensor>& t, int64_t n, const char* name, at::Tensor& keep) {
  if (!t.has_value()) return nullptr;
  TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->dim() == 1 && t->size(0) == n,
              "nasbnn glue: ", name, " must be a float32 CPU tensor of shape (", n, ",), got ", t->scalar_type(), " ",
              t->sizes());
  keep = t->contiguous();
  return keep.data_ptr<float>();
}

bool nhwc(const at::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 4 &&
         t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

}  // namespace

namespace nasbnn_glue {

// Fills args from tensors (checked); `keep` holds contiguous copies of the vectors while args is used.
GlueArgs make_glue_args(const at::Tensor& y, const std::optional<at::Tensor>& bn_w, const std::optional<at::Tensor>& bn_b,
                        int64_t bn_mode, const std::optional<at::Tensor>& res, int64_t res_stride,
                        const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& a,
                        const std::optional<at::Tensor>& b2, int64_t isa, std::vector<at::Tensor>& keep) {
  TORCH_CHECK(nhwc(y), "nasbnn glue: y must be a float32 channels_last CPU tensor (N, C, H, W), got ", y.scalar_type(),
              " ", y.sizes());
  TORCH_CHECK(bn_mode >= 0 && bn_mode <= 2, "nasbnn glue: bn_mode ", bn_mode, " not allowed (allowed: 0, 1, 2)");
  TORCH_CHECK((bn_mode == 0) == (!bn_w.has_value() && !bn_b.has_value()) && bn_w.has_value() == bn_b.has_value(),
              "nasbnn glue: bn_w and bn_b go together, with bn_mode 1 or 2");
  TORCH_CHECK(b1.has_value() == a.has_value() && a.has_value() == b2.has_value(),
              "nasbnn glue: the RPReLU vectors b1, a, b2 go together");
  TORCH_CHECK(glue_isa_supported(isa), "nasbnn glue: isa ", isa, " not supported by this CPU");
  keep.assign(5, at::Tensor());
  GlueArgs g;
  g.y = y.data_ptr<float>();
  g.N = y.size(0); g.C = y.size(1); g.H = y.size(2); g.W = y.size(3);
  g.bn_mode = bn_mode;
  g.bn_w = opt_vec(bn_w, g.C, "bn_w", keep[0]);
  g.bn_b = opt_vec(bn_b, g.C, "bn_b", keep[1]);
  g.b1 = opt_vec(b1, g.C, "b1", keep[2]);
  g.a = opt_vec(a, g.C, "a", keep[3]);
  g.b2 = opt_vec(b2, g.C, "b2", keep[4]);
  g.isa = isa;
  if (res.has_value()) {
    const at::Tensor& r = *res;
    TORCH_CHECK(nhwc(r), "nasbnn glue: res must be a float32 channels_last CPU tensor, got ", r.scalar_type(), " ",
                r.sizes());
    TORCH_CHECK(res_stride == 1 || res_stride == 2, "nasbnn glue: res_stride ", res_stride,
                " not allowed (allowed: 1, 2)");
    TORCH_CHECK(r.size(0) == g.N && (r.size(2) + res_stride - 1) / res_stride == g.H &&
                    (r.size(3) + res_stride - 1) / res_stride == g.W && r.size(1) >= 1,
                "nasbnn glue: res ", r.sizes(), " does not fit y ", y.sizes(), " at stride ", res_stride);
    TORCH_CHECK(!(r.data_ptr<float>() < g.y + y.numel() && g.y < r.data_ptr<float>() + r.numel()),
                "nasbnn glue: res must not overlap y");
    g.res = r.data_ptr<float>();
    g.Cr = r.size(1); g.Hr = r.size(2); g.Wr = r.size(3);
    g.res_stride = res_stride;
  }
  return g;
}

void glue_parallel(const GlueArgs& g) {
  const int64_t rows = g.N * g.H;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.W * g.C));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) { glue_rows(g, r0, r1); });
}

}  // namespace nasbnn_glue

namespace {

at::Tensor glue_op(at::Tensor y, const std::optional<at::Tensor>& bn_w, const std::optional<at::Tensor>& bn_b,
                   int64_t bn_mode, const std::optional<at::Tensor>& res, int64_t res_stride,
                   const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& a,
                   const std::optional<at::Tensor>& b2, int64_t isa) {
  std::vector<at::Tensor> keep;
  const GlueArgs g = nasbnn_glue::make_glue_args(y, bn_w, bn_b, bn_mode, res, res_stride, b1, a, b2, isa, keep);
  nasbnn_glue::glue_parallel(g);
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(nasbnn_bitconv, m) {
  m.def("glue_isa_supported(int isa) -> bool", [](int64_t isa) { return nasbnn_glue::glue_isa_supported(isa); });
  m.def("glue(Tensor(a!) y, Tensor? bn_w, Tensor? bn_b, int bn_mode, Tensor? res, int res_stride, Tensor? b1, "
        "Tensor? a, Tensor? b2, int isa) -> Tensor(a!)",
        &glue_op);
}
