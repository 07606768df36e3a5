// Naive references: batch norm (inference), activation, residual add, concat.
#pragma once

#include <cmath>

#include "edgenn/kernels/reference/conv2d.hpp"

namespace edgenn::ref {

inline void batchnorm_inference(ConstTensor x, const float* gamma, const float* beta, const float* mean,
                                const float* var, float eps, Tensor y, Activation act = Activation::none) {
  for (int b = 0; b < x.n(); ++b)
    for (int i = 0; i < x.h(); ++i)
      for (int j = 0; j < x.w(); ++j)
        for (int c = 0; c < x.c(); ++c) {
          const double v = (double(x.at(b, i, j, c)) - mean[c]) / std::sqrt(double(var[c]) + eps) * gamma[c] + beta[c];
          y.at(b, i, j, c) = float(clamp_activation(v, act));
        }
}

inline void activation(ConstTensor x, Tensor y, Activation act) {
  for (int b = 0; b < x.n(); ++b)
    for (int i = 0; i < x.h(); ++i)
      for (int j = 0; j < x.w(); ++j)
        for (int c = 0; c < x.c(); ++c) y.at(b, i, j, c) = float(clamp_activation(x.at(b, i, j, c), act));
}

inline void add(ConstTensor a, ConstTensor b, Tensor y, Activation act = Activation::none) {
  for (int n = 0; n < a.n(); ++n)
    for (int i = 0; i < a.h(); ++i)
      for (int j = 0; j < a.w(); ++j)
        for (int c = 0; c < a.c(); ++c)
          y.at(n, i, j, c) = float(clamp_activation(double(a.at(n, i, j, c)) + b.at(n, i, j, c), act));
}

inline void concat_channels(ConstTensor a, ConstTensor b, Tensor y) {
  for (int n = 0; n < a.n(); ++n)
    for (int i = 0; i < a.h(); ++i)
      for (int j = 0; j < a.w(); ++j) {
        for (int c = 0; c < a.c(); ++c) y.at(n, i, j, c) = a.at(n, i, j, c);
        for (int c = 0; c < b.c(); ++c) y.at(n, i, j, a.c() + c) = b.at(n, i, j, c);
      }
}

}  // namespace edgenn::ref
