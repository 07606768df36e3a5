// Naive reference convolution (and depthwise, which is the groups == channels case).
// Straight loops in double precision over the canonical OHWI weights: the ground truth
// the optimized kernels are tested against. Not for production use.
#pragma once

#include "edgenn/core/tensor.hpp"
#include "edgenn/kernels/conv2d.hpp"

namespace edgenn::ref {

inline double clamp_activation(double v, Activation a) {
  if (a == Activation::relu || a == Activation::relu6) v = v < 0 ? 0 : v;
  if (a == Activation::relu6) v = v > 6 ? 6 : v;
  return v;
}

// weights: OHWI [cout][kh][kw][cin/groups]; bias may be null; residual may be null.
inline void conv2d(const kernels::Conv2dParams& p, ConstTensor in, const float* weights, const float* bias,
                   Tensor out, const ConstTensor* residual = nullptr) {
  const int cin_g = in.c() / p.groups, cout_g = out.c() / p.groups;
  for (int b = 0; b < out.n(); ++b)
    for (int oy = 0; oy < out.h(); ++oy)
      for (int ox = 0; ox < out.w(); ++ox)
        for (int co = 0; co < out.c(); ++co) {
          const int g = co / cout_g;
          double acc = bias ? bias[co] : 0.0;
          for (int ky = 0; ky < p.kernel_h; ++ky)
            for (int kx = 0; kx < p.kernel_w; ++kx) {
              const int iy = oy * p.stride_h - p.pad_top + ky * p.dilation_h;
              const int ix = ox * p.stride_w - p.pad_left + kx * p.dilation_w;
              if (iy < 0 || iy >= in.h() || ix < 0 || ix >= in.w()) continue;
              for (int ci = 0; ci < cin_g; ++ci) {
                const double w = weights[((index_t(co) * p.kernel_h + ky) * p.kernel_w + kx) * cin_g + ci];
                acc += w * in.at(b, iy, ix, g * cin_g + ci);
              }
            }
          if (residual) acc += residual->at(b, oy, ox, co);
          out.at(b, oy, ox, co) = float(clamp_activation(acc, p.activation));
        }
}

}  // namespace edgenn::ref
