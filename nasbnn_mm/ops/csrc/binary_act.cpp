// One-pass CPU kernels for the ReActNet-style activations of nasbnn_mm/ops/binarize.py.
//
// Why: on CPU, a binary network's training step spends a large share of its time in
// element-wise passes over activations. Written with ATen ops, RSign and RPReLU take 2 passes
// forward and 4-7 passes backward (plus per-channel reductions); each kernel here reads its
// inputs and writes its outputs once, with the per-channel sums accumulated on the way (per
// thread in double; within a contiguous plane first in 16 float partial sums). The arithmetic
// per element is that of the Python reference path (binarize.py), so element-wise results are
// bitwise equal; the sums differ only by rounding.
//
// Layouts: float32, contiguous (N, C, *) or channels_last (N, C, H, W), as the Python side
// checks (ops/native.py: supports). The outputs take the activation's layout; an incoming
// gradient in the other layout is converted first (`like`).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <vector>

namespace {

// (outer, C, inner) with channel stride `inner`, or rows of C channels (channels_last).
struct Geometry {
  int64_t C;
  int64_t rows;   // channels_last: N*H*W rows of C values
  int64_t planes; // contiguous: N*C planes of `inner` values
  int64_t inner;
  bool channels_last;
};

Geometry geometry(const at::Tensor& t) {
  TORCH_CHECK(t.dim() >= 2, "nasbnn binary_act: expected (N, C, ...), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat, "nasbnn binary_act: expected float32");
  Geometry g{};
  g.C = t.size(1);
  if (t.is_contiguous()) {
    g.channels_last = false;
    g.inner = t.numel() / std::max<int64_t>(1, t.size(0) * g.C);
    g.planes = t.size(0) * g.C;
  } else {
    TORCH_CHECK(t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast),
                "nasbnn binary_act: expected a contiguous or channels_last tensor");
    g.channels_last = true;
    g.rows = t.numel() / std::max<int64_t>(1, g.C);
  }
  return g;
}

at::Tensor like(const at::Tensor& ref, const at::Tensor& t) {
  // `t` in the layout of `ref` (a gradient may arrive contiguous for a channels_last activation)
  auto fmt = ref.is_contiguous() ? at::MemoryFormat::Contiguous : at::MemoryFormat::ChannelsLast;
  return t.is_contiguous(fmt) ? t : t.contiguous(fmt);
}

// Per-thread per-channel double accumulators, summed into float32 (C,) tensors at the end.
struct ChannelSums {
  int64_t C, k;
  std::vector<double> buf;
  ChannelSums(int64_t C_, int64_t k_) : C(C_), k(k_), buf(static_cast<size_t>(at::get_num_threads() * C_ * k_), 0.0) {}
  double* slot(int j) { return buf.data() + (static_cast<int64_t>(at::get_thread_num()) * k + j) * C; }
  at::Tensor result(int j) const {
    auto out = at::empty({C}, at::kFloat);
    float* o = out.data_ptr<float>();
    const int64_t T = static_cast<int64_t>(buf.size()) / (C * k);
    for (int64_t c = 0; c < C; ++c) {
      double s = 0.0;
      for (int64_t t = 0; t < T; ++t) s += buf[(t * k + j) * C + c];
      o[c] = static_cast<float>(s);
    }
    return out;
  }
};

constexpr int64_t kGrain = 1 << 14;  // elements per parallel task, roughly
constexpr int64_t kLanes = 16;       // independent partial sums: lets the compiler vectorize reductions

// Runs plane(offset, n, channel) for each (n, c) plane of a contiguous tensor, or
// row(offset, C) for each row of C channels of a channels_last one, in parallel.
template <class PlaneFn, class RowFn>
void for_each_block(const Geometry& g, PlaneFn plane, RowFn row) {
  if (!g.channels_last) {
    const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, g.inner));
    at::parallel_for(0, g.planes, grain, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) plane(p * g.inner, g.inner, p % g.C);
    });
  } else {
    const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, g.C));
    at::parallel_for(0, g.rows, grain, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) row(r * g.C, g.C);
    });
  }
}

inline float sign_of(float u) { return static_cast<float>((u > 0.f) - (u < 0.f)); }
inline float approx_sign_grad(float g, float u) { return std::max(2.f - 2.f * std::fabs(u), 0.f) * g; }
inline float prelu(float v, float a) { return v > 0.f ? v : a * v; }

// Sum of f(i) for i in [0, n) with kLanes float partial sums (vectorizable), returned in double.
template <class F>
inline double lane_sum(int64_t n, F f) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += f(i + j);
  double total = 0.0;
  for (; i < n; ++i) total += f(i);
  for (int64_t j = 0; j < kLanes; ++j) total += acc[j];
  return total;
}

// ---------------------------------------------------------------- span kernels (restrict: no aliasing)
void rsign_fwd_plane(const float* __restrict__ x, float b, float* __restrict__ s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) s[i] = sign_of(x[i] + b);
}

void rsign_fwd_row(const float* __restrict__ x, const float* __restrict__ b, float* __restrict__ s, int64_t n) {
  for (int64_t c = 0; c < n; ++c) s[c] = sign_of(x[c] + b[c]);
}

void rsign_bwd_plane(const float* __restrict__ g, const float* __restrict__ x, float b, float* __restrict__ out,
                     int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = approx_sign_grad(g[i], x[i] + b);
}

void rsign_bwd_row(const float* __restrict__ g, const float* __restrict__ x, const float* __restrict__ b,
                   float* __restrict__ out, int64_t n) {
  for (int64_t c = 0; c < n; ++c) out[c] = approx_sign_grad(g[c], x[c] + b[c]);
}

void rprelu_fwd_plane(const float* __restrict__ x, float* __restrict__ y, int64_t n, float b1, float a,
                      float b2) {
  for (int64_t i = 0; i < n; ++i) y[i] = prelu(x[i] + b1, a) + b2;
}

void rprelu_fwd_row(const float* __restrict__ x, float* __restrict__ y, int64_t n, const float* __restrict__ b1,
                    const float* __restrict__ a, const float* __restrict__ b2) {
  for (int64_t c = 0; c < n; ++c) y[c] = prelu(x[c] + b1[c], a[c]) + b2[c];
}

// z = x + b1 is recomputed (the same float add as forward, so the same z)
void rprelu_bwd_row(const float* __restrict__ g, const float* __restrict__ x, float* __restrict__ out, int64_t n,
                    const float* __restrict__ b1, const float* __restrict__ a) {
  for (int64_t c = 0; c < n; ++c) {
    const float ag = a[c] * g[c];
    out[c] = x[c] + b1[c] > 0.f ? g[c] : ag;
  }
}

void rprelu_bwd_span(const float* __restrict__ g, const float* __restrict__ x, float* __restrict__ out,
                     int64_t n, float b1, float a) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] + b1 > 0.f ? g[i] : a * g[i];
}

void add_row(const float* __restrict__ v, double* __restrict__ acc, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += v[c];
}

// the three per-channel sums of one row (it is in L1 by now: separate simple loops vectorize)
void rprelu_bwd_row_sums(const float* __restrict__ g, const float* __restrict__ x, const float* __restrict__ b1,
                         const float* __restrict__ gz, int64_t n, double* __restrict__ s_gz,
                         double* __restrict__ s_ga, double* __restrict__ s_g) {
  if (s_gz) add_row(gz, s_gz, n);
  if (s_ga)
    for (int64_t c = 0; c < n; ++c) {
      const float z = x[c] + b1[c];
      const float gz_ = g[c] * z;
      s_ga[c] += z > 0.f ? 0.f : gz_;
    }
  if (s_g) add_row(g, s_g, n);
}

// ---------------------------------------------------------------- RSign: s = sign(x + b)
// Only s is written: backward recomputes u = x + b (the same float add, so the same u) from the
// input, which stays alive anyway, instead of a saved u (one allocation and one pass fewer).
at::Tensor rsign_forward(const at::Tensor& x, const at::Tensor& b) {
  const auto g = geometry(x);
  auto s = at::empty_like(x);
  const at::Tensor bc = b.contiguous();
  const float* xp = x.data_ptr<float>();
  const float* bp = bc.data_ptr<float>();
  float* sp = s.data_ptr<float>();
  for_each_block(g,
      [&](int64_t o, int64_t n, int64_t c) { rsign_fwd_plane(xp + o, bp[c], sp + o, n); },
      [&](int64_t o, int64_t n) { rsign_fwd_row(xp + o, bp, sp + o, n); });
  return s;
}

// ApproxSign: gx = grad * max(0, 2 - 2|x + b|); gb = per-channel sum of gx.
std::tuple<at::Tensor, at::Tensor> rsign_backward(const at::Tensor& grad_in, const at::Tensor& x,
                                                  const at::Tensor& b, bool need_b) {
  const auto g = geometry(x);
  const auto grad = like(x, grad_in);
  auto gx = at::empty_like(x);
  const at::Tensor bc = b.contiguous();
  const float* gp = grad.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const float* bp = bc.data_ptr<float>();
  float* op = gx.data_ptr<float>();
  ChannelSums sums(g.C, 1);
  for_each_block(g,
      [&](int64_t o, int64_t n, int64_t c) {
        rsign_bwd_plane(gp + o, xp + o, bp[c], op + o, n);
        if (need_b) sums.slot(0)[c] += lane_sum(n, [&](int64_t i) { return op[o + i]; });
      },
      [&](int64_t o, int64_t n) {
        rsign_bwd_row(gp + o, xp + o, bp, op + o, n);
        if (need_b) add_row(op + o, sums.slot(0), n);
      });
  return {gx, need_b ? sums.result(0) : at::Tensor()};
}

// ---------------------------------------------------------------- RPReLU: y = prelu(x + b1, a) + b2
// In the authors' order: the input bias b1 is added to x (the BN output plus the shortcut), then
// PReLU, then b2. Only y is written: backward recomputes z = x + b1 from x (one allocation and
// one pass fewer than keeping z). b1 = None: z = x.
at::Tensor rprelu_forward(const at::Tensor& x, const std::optional<at::Tensor>& b1, const at::Tensor& a,
                          const at::Tensor& b2) {
  const auto g = geometry(x);
  auto y = at::empty_like(x);
  const at::Tensor b1c = b1.has_value() ? b1->contiguous() : at::zeros({g.C}, x.options());
  const at::Tensor ac = a.contiguous(), b2c = b2.contiguous();
  const float* xp = x.data_ptr<float>();
  const float* b1p = b1c.data_ptr<float>();
  const float* ap = ac.data_ptr<float>();
  const float* b2p = b2c.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  for_each_block(g,
      [&](int64_t o, int64_t n, int64_t c) { rprelu_fwd_plane(xp + o, yp + o, n, b1p[c], ap[c], b2p[c]); },
      [&](int64_t o, int64_t n) { rprelu_fwd_row(xp + o, yp + o, n, b1p, ap, b2p); });
  return y;
}

// With z = x + b1: gz = grad (z > 0) or a * grad; gb2 = sum grad; gb1 = sum gz; ga = sum over z <= 0 of
// grad * z.
std::vector<at::Tensor> rprelu_backward(const at::Tensor& grad_in, const at::Tensor& x,
                                        const std::optional<at::Tensor>& b1, const at::Tensor& a, bool need_x,
                                        bool need_b1, bool need_a, bool need_b2) {
  const auto g = geometry(x);
  const auto grad = like(x, grad_in);
  // gz is also the buffer that gb1 is summed from, so it is computed whenever either is needed
  const bool need_gz = need_x || need_b1;
  auto gz = need_gz ? at::empty_like(x) : at::Tensor();
  const at::Tensor ac = a.contiguous();
  const at::Tensor b1c = b1.has_value() ? b1->contiguous() : at::zeros({g.C}, x.options());
  const float* gp = grad.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const float* ap = ac.data_ptr<float>();
  const float* b1p = b1c.data_ptr<float>();
  float* op = need_gz ? gz.data_ptr<float>() : nullptr;
  ChannelSums sums(g.C, 3);  // 0: gb1, 1: ga, 2: gb2
  for_each_block(g,
      [&](int64_t o, int64_t n, int64_t c) {
        const float* gq = gp + o;
        const float* xq = xp + o;
        const float bc = b1p[c];
        if (op) rprelu_bwd_span(gq, xq, op + o, n, bc, ap[c]);
        if (need_b1) sums.slot(0)[c] += lane_sum(n, [&](int64_t i) { return op[o + i]; });
        if (need_a)
          sums.slot(1)[c] += lane_sum(n, [&](int64_t i) {
            const float z = xq[i] + bc;
            return z > 0.f ? 0.f : gq[i] * z;
          });
        if (need_b2) sums.slot(2)[c] += lane_sum(n, [&](int64_t i) { return gq[i]; });
      },
      [&](int64_t o, int64_t n) {
        if (op) rprelu_bwd_row(gp + o, xp + o, op + o, n, b1p, ap);
        rprelu_bwd_row_sums(gp + o, xp + o, b1p, op ? op + o : nullptr, n, need_b1 ? sums.slot(0) : nullptr,
                            need_a ? sums.slot(1) : nullptr, need_b2 ? sums.slot(2) : nullptr);
      });
  return {need_x ? gz : at::Tensor(), need_b1 ? sums.result(0) : at::Tensor(),
          need_a ? sums.result(1) : at::Tensor(), need_b2 ? sums.result(2) : at::Tensor()};
}

}  // namespace

TORCH_LIBRARY(nasbnn_binary_act, m) {
  m.def("rsign_forward(Tensor x, Tensor b) -> Tensor", &rsign_forward);
  m.def("rsign_backward(Tensor grad, Tensor x, Tensor b, bool need_b) -> (Tensor, Tensor)", &rsign_backward);
  m.def("rprelu_forward(Tensor x, Tensor? b1, Tensor a, Tensor b2) -> Tensor", &rprelu_forward);
  m.def("rprelu_backward(Tensor grad, Tensor x, Tensor? b1, Tensor a, bool need_x, bool need_b1, bool need_a,"
        " bool need_b2) -> Tensor[]", &rprelu_backward);
}
