// The element-wise "glue" of a deployed NAS-BNN layer after one binary conv (nasbnn_mm/deploy/glue.py):
//
//   v = y                                   the conv output float32(acc) * alpha (or the stem conv's)
//   v = fma(v, w[c], b[c])                  folded BN, bn_mode 1 (one rounding: PyTorch's inference BN here)
//   v = v * w[c] + b[c]                     folded BN, bn_mode 2 (two roundings)
//   v = v + r                               shortcut, r = res[n, oh, ow, c mod Cr] at stride 1, or the 2x2
//                                           average (0 + r00 + r01 + r10 + r11) / count at stride 2 (ceil
//                                           mode, padding not counted): F.avg_pool2d's order of operations
//   v = prelu(v + b1[c], a[c]) + b2[c]      RPReLU (v > 0 ? v : a * v)
//
// in place on y, float32 channels_last (NHWC in memory). Every operation is one IEEE operation in the
// order above (no contraction: -ffp-contract=off), on every instruction-set path, so the results equal
// the deployed model's ATen ops bitwise (the runtime checks bn_mode against F.batch_norm once).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace nasbnn_glue {

struct GlueArgs {
  float* y = nullptr;  // (N, H, W, C)
  int64_t N = 0, C = 0, H = 0, W = 0;
  const float* bn_w = nullptr;  // BN scale / shift (C,), with bn_mode != 0
  const float* bn_b = nullptr;
  int64_t bn_mode = 0;         // 0: no BN, 1: fma, 2: multiply then add
  const float* res = nullptr;  // shortcut input (N, Hr, Wr, Cr), or nullptr
  int64_t Cr = 0, Hr = 0, Wr = 0, res_stride = 1;
  const float* b1 = nullptr;  // RPReLU (C,) each, or all nullptr
  const float* a = nullptr;
  const float* b2 = nullptr;
  int64_t isa = 0;  // 0 scalar, 1 avx2 (+ fma), 2 avx512
};

// The glue of output rows [r0, r1) (row r = image r / H, row r % H); thread-safe for disjoint rows.
void glue_rows(const GlueArgs& g, int64_t r0, int64_t r1);

// Whether the glue has its own path for `isa` (0 scalar, 1 avx2 + fma, 2 avx512) on this CPU.
bool glue_isa_supported(int64_t isa);

// GlueArgs for y (float32 channels_last) from optional tensors, checked; `keep` holds the contiguous
// vectors the pointers refer to while the args are in use.
GlueArgs make_glue_args(const at::Tensor& y, const std::optional<at::Tensor>& bn_w, const std::optional<at::Tensor>& bn_b,
                        int64_t bn_mode, const std::optional<at::Tensor>& res, int64_t res_stride,
                        const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& a,
                        const std::optional<at::Tensor>& b2, int64_t isa, std::vector<at::Tensor>& keep);

// glue_rows over all rows, at::parallel_for.
void glue_parallel(const GlueArgs& g);

}  // namespace nasbnn_glue
