// The 2x2x2, stride-2 max pool of NCDHW CPU volumes and its backward, for the libtorch whose own
// kernel is slow there (compat.h says which). Same results as ATen's max_pool3d_with_indices and
// its backward, bit for bit: the first maximum of each window in (d, h, w) order wins, a NaN wins
// over numbers (the last NaN of a window), and an index counts from the start of its [D, H, W]
// plane, so either side's indices serve the other's backward.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <utility>

namespace perceptual::cpu {

namespace detail {

// Output rows ([plane, od, oh]) per parallel task: a few KiB of work at the least.
inline int64_t rowGrain(int64_t outWidth) { return std::max<int64_t>(1, 2048 / std::max<int64_t>(1, outWidth)); }

template <typename T>
void maxPoolRows(const T* in, T* out, int64_t* indices, int64_t begin, int64_t end, int64_t D, int64_t H, int64_t W,
                 int64_t Do, int64_t Ho, int64_t Wo) {
  for (int64_t row = begin; row < end; ++row) {
    const int64_t oh = row % Ho, od = (row / Ho) % Do, plane = row / (Ho * Do);
    const T* ip = in + plane * D * H * W;
    T* op = out + row * Wo;
    int64_t* xp = indices + row * Wo;
    for (int64_t ow = 0; ow < Wo; ++ow) {
      int64_t best = ((2 * od) * H + 2 * oh) * W + 2 * ow;
      using Math = at::opmath_type<T>;  // float for bfloat16: exact
      Math maxval = -std::numeric_limits<Math>::infinity();
      for (int64_t kd = 0; kd < 2; ++kd) {
        for (int64_t kh = 0; kh < 2; ++kh) {
          const int64_t base = ((2 * od + kd) * H + 2 * oh + kh) * W + 2 * ow;
          for (int64_t kw = 0; kw < 2; ++kw) {
            const Math v = static_cast<Math>(ip[base + kw]);
            if (v > maxval || std::isnan(v)) {
              maxval = v;
              best = base + kw;
            }
          }
        }
      }
      op[ow] = ip[best];
      xp[ow] = best;
    }
  }
}

template <typename T>
void maxPoolBackwardRows(const T* gradOut, const int64_t* indices, T* gradIn, int64_t begin, int64_t end, int64_t D,
                         int64_t H, int64_t W, int64_t Do, int64_t Ho, int64_t Wo) {
  for (int64_t row = begin; row < end; ++row) {
    const int64_t oh = row % Ho, od = (row / Ho) % Do, plane = row / (Ho * Do);
    T* gp = gradIn + plane * D * H * W;
    const T* go = gradOut + row * Wo;
    const int64_t* xp = indices + row * Wo;
    for (int64_t ow = 0; ow < Wo; ++ow) {
      // Every element of the window is written: zero, or the gradient at its maximum. ATen adds
      // the gradient to a zeroed input gradient; 0 + g is written so (it makes -0 into +0).
      for (int64_t kd = 0; kd < 2; ++kd) {
        for (int64_t kh = 0; kh < 2; ++kh) {
          const int64_t base = ((2 * od + kd) * H + 2 * oh + kh) * W + 2 * ow;
          gp[base] = T(0);
          gp[base + 1] = T(0);
        }
      }
      gp[xp[ow]] = static_cast<T>(at::opmath_type<T>(0) + static_cast<at::opmath_type<T>>(go[ow]));
    }
  }
}

}  // namespace detail

// [N, C, D, H, W] float32 or bfloat16 on the CPU, any strides (made contiguous first).
inline std::pair<at::Tensor, at::Tensor> maxPool2x2x2(const at::Tensor& input) {
  const at::Tensor x = input.contiguous();
  const int64_t N = x.size(0), C = x.size(1), D = x.size(2), H = x.size(3), W = x.size(4);
  const int64_t Do = D / 2, Ho = H / 2, Wo = W / 2;
  at::Tensor out = at::empty({N, C, Do, Ho, Wo}, x.options());
  at::Tensor indices = at::empty({N, C, Do, Ho, Wo}, x.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "maxPool2x2x2", [&] {
    const scalar_t* in = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    int64_t* xp = indices.data_ptr<int64_t>();
    at::parallel_for(0, N * C * Do * Ho, detail::rowGrain(Wo), [&](int64_t begin, int64_t end) {
      detail::maxPoolRows(in, op, xp, begin, end, D, H, W, Do, Ho, Wo);
    });
  });
  return {out, indices};
}

// The input gradient of maxPool2x2x2 (`input` gives its shape, dtype and the sizes).
inline at::Tensor maxPool2x2x2Backward(const at::Tensor& gradOutput, const at::Tensor& input,
                                       const at::Tensor& indices) {
  const int64_t N = input.size(0), C = input.size(1), D = input.size(2), H = input.size(3), W = input.size(4);
  const int64_t Do = D / 2, Ho = H / 2, Wo = W / 2;
  const at::Tensor go = gradOutput.contiguous(), xp = indices.contiguous();
  // Odd sizes leave a last slice no window covers: zero it with the rest.
  const bool covered = D % 2 == 0 && H % 2 == 0 && W % 2 == 0;
  at::Tensor gradInput = covered
                             ? at::empty({N, C, D, H, W}, input.options().memory_format(at::MemoryFormat::Contiguous))
                             : at::zeros({N, C, D, H, W}, input.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, input.scalar_type(), "maxPool2x2x2Backward", [&] {
    const scalar_t* g = go.data_ptr<scalar_t>();
    const int64_t* ix = xp.data_ptr<int64_t>();
    scalar_t* gi = gradInput.data_ptr<scalar_t>();
    at::parallel_for(0, N * C * Do * Ho, detail::rowGrain(Wo), [&](int64_t begin, int64_t end) {
      detail::maxPoolBackwardRows(g, ix, gi, begin, end, D, H, W, Do, Ho, Wo);
    });
  });
  return gradInput;
}

}  // namespace perceptual::cpu
