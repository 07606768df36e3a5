// Naive reference fully connected layer (double accumulation, PyTorch [out][in] weights).
#pragma once

#include "edgenn/kernels/reference/conv2d.hpp"

namespace edgenn::ref {

inline void fully_connected(int batch, int in_f, int out_f, const float* x, const float* w_oi, const float* bias,
                            float* y, Activation act = Activation::none) {
  for (int b = 0; b < batch; ++b)
    for (int o = 0; o < out_f; ++o) {
      double acc = bias ? bias[o] : 0.0;
      for (int i = 0; i < in_f; ++i) acc += double(x[index_t(b) * in_f + i]) * w_oi[index_t(o) * in_f + i];
      y[index_t(b) * out_f + o] = float(clamp_activation(acc, act));
    }
}

}  // namespace edgenn::ref
