// Naive references for training: forward passes and their gradients, written directly from
// the definitions (loops over outputs and taps, each output scattering its gradient to what
// it read). Templated on the element type: the tests run them in double, check them against
// central finite differences of the double forwards, then check the fast float kernels
// against them. Not for production use.
#pragma once

#include <cmath>
#include <limits>

#include "edgenn/kernels/conv2d.hpp"
#include "edgenn/kernels/pooling.hpp"

namespace edgenn::ref {

// Input position read by output `o` through tap `k` (may be outside the input).
constexpr int window_input(int o, int k, int stride, int dilation, int pad) { return o * stride - pad + k * dilation; }

// --- convolution (any kernel, stride, dilation, padding, groups; depthwise = groups == C) ---

// y = conv(x, W) + bias; W is OHWI [cout][kh][kw][cin/groups]; bias may be null. No activation.
template <class T>
void conv2d_forward(const kernels::Conv2dParams& p, TensorView<const T> x, const T* w, const T* bias, TensorView<T> y) {
  const int cin_g = x.c() / p.groups, cout_g = y.c() / p.groups;
  for (int b = 0; b < y.n(); ++b)
    for (int oy = 0; oy < y.h(); ++oy)
      for (int ox = 0; ox < y.w(); ++ox)
        for (int co = 0; co < y.c(); ++co) {
          const int g = co / cout_g;
          T acc = bias ? bias[co] : T(0);
          for (int ky = 0; ky < p.kernel_h; ++ky)
            for (int kx = 0; kx < p.kernel_w; ++kx) {
              const int iy = window_input(oy, ky, p.stride_h, p.dilation_h, p.pad_top);
              const int ix = window_input(ox, kx, p.stride_w, p.dilation_w, p.pad_left);
              if (iy < 0 || iy >= x.h() || ix < 0 || ix >= x.w()) continue;
              for (int ci = 0; ci < cin_g; ++ci)
                acc += w[((index_t(co) * p.kernel_h + ky) * p.kernel_w + kx) * cin_g + ci] * x.at(b, iy, ix, g * cin_g + ci);
            }
          y.at(b, oy, ox, co) = acc;
        }
}

// Gradients of conv2d_forward given dy: dx (view, may have null data to skip), dw (OHWI) and
// db (may be null). Every output scatters dy * (what it read) to the gradients.
template <class T>
void conv2d_backward(const kernels::Conv2dParams& p, TensorView<const T> x, const T* w, TensorView<const T> dy,
                     TensorView<T> dx, T* dw, T* db) {
  const int cin_g = x.c() / p.groups, cout_g = dy.c() / p.groups;
  if (dx.data)
    for (int b = 0; b < dx.n(); ++b)
      for (int i = 0; i < dx.h(); ++i)
        for (int j = 0; j < dx.w(); ++j)
          for (int c = 0; c < dx.c(); ++c) dx.at(b, i, j, c) = T(0);
  const index_t wsize = index_t(dy.c()) * p.taps() * cin_g;
  if (dw)
    for (index_t i = 0; i < wsize; ++i) dw[i] = T(0);
  if (db)
    for (int i = 0; i < dy.c(); ++i) db[i] = T(0);
  for (int b = 0; b < dy.n(); ++b)
    for (int oy = 0; oy < dy.h(); ++oy)
      for (int ox = 0; ox < dy.w(); ++ox)
        for (int co = 0; co < dy.c(); ++co) {
          const int g = co / cout_g;
          const T g_out = dy.at(b, oy, ox, co);
          if (db) db[co] += g_out;
          for (int ky = 0; ky < p.kernel_h; ++ky)
            for (int kx = 0; kx < p.kernel_w; ++kx) {
              const int iy = window_input(oy, ky, p.stride_h, p.dilation_h, p.pad_top);
              const int ix = window_input(ox, kx, p.stride_w, p.dilation_w, p.pad_left);
              if (iy < 0 || iy >= x.h() || ix < 0 || ix >= x.w()) continue;
              for (int ci = 0; ci < cin_g; ++ci) {
                const index_t wi = ((index_t(co) * p.kernel_h + ky) * p.kernel_w + kx) * cin_g + ci;
                if (dx.data) dx.at(b, iy, ix, g * cin_g + ci) += w[wi] * g_out;
                if (dw) dw[wi] += x.at(b, iy, ix, g * cin_g + ci) * g_out;
              }
            }
        }
}

// --- fully connected: y[b][o] = sum_i x[b][i] * W[o][i] + bias[o] (dense rows) ---

template <class T>
void linear_forward(int batch, int in_f, int out_f, const T* x, const T* w, const T* bias, T* y) {
  for (int b = 0; b < batch; ++b)
    for (int o = 0; o < out_f; ++o) {
      T acc = bias ? bias[o] : T(0);
      for (int i = 0; i < in_f; ++i) acc += x[index_t(b) * in_f + i] * w[index_t(o) * in_f + i];
      y[index_t(b) * out_f + o] = acc;
    }
}

// dx (may be null), dw [out][in], db (may be null).
template <class T>
void linear_backward(int batch, int in_f, int out_f, const T* x, const T* w, const T* dy, T* dx, T* dw, T* db) {
  if (dx)
    for (index_t i = 0; i < index_t(batch) * in_f; ++i) dx[i] = T(0);
  for (index_t i = 0; i < index_t(out_f) * in_f; ++i) dw[i] = T(0);
  if (db)
    for (int o = 0; o < out_f; ++o) db[o] = T(0);
  for (int b = 0; b < batch; ++b)
    for (int o = 0; o < out_f; ++o) {
      const T g = dy[index_t(b) * out_f + o];
      if (db) db[o] += g;
      for (int i = 0; i < in_f; ++i) {
        if (dx) dx[index_t(b) * in_f + i] += w[index_t(o) * in_f + i] * g;
        dw[index_t(o) * in_f + i] += x[index_t(b) * in_f + i] * g;
      }
    }
}

// --- batch normalisation in training mode (statistics over N*H*W per channel) ---

// y = (x - mean) / sqrt(var + eps) * gamma + beta with the batch mean and biased variance;
// saves mean and 1/sqrt(var + eps); updates the running statistics like PyTorch:
// r = (1 - momentum) r + momentum * stat, with the unbiased variance (M / (M - 1)) for running_var.
template <class T>
void batchnorm_train_forward(TensorView<const T> x, const T* gamma, const T* beta, T eps, T momentum, TensorView<T> y,
                             T* saved_mean, T* saved_invstd, T* running_mean, T* running_var) {
  const index_t m = x.shape.n * x.shape.pixels();
  for (int c = 0; c < x.c(); ++c) {
    T mean = 0;
    for (int b = 0; b < x.n(); ++b)
      for (int i = 0; i < x.h(); ++i)
        for (int j = 0; j < x.w(); ++j) mean += x.at(b, i, j, c);
    mean /= T(m);
    T var = 0;
    for (int b = 0; b < x.n(); ++b)
      for (int i = 0; i < x.h(); ++i)
        for (int j = 0; j < x.w(); ++j) var += (x.at(b, i, j, c) - mean) * (x.at(b, i, j, c) - mean);
    var /= T(m);
    const T invstd = T(1) / std::sqrt(var + eps);
    for (int b = 0; b < x.n(); ++b)
      for (int i = 0; i < x.h(); ++i)
        for (int j = 0; j < x.w(); ++j)
          y.at(b, i, j, c) = (x.at(b, i, j, c) - mean) * invstd * (gamma ? gamma[c] : T(1)) + (beta ? beta[c] : T(0));
    if (saved_mean) saved_mean[c] = mean;
    if (saved_invstd) saved_invstd[c] = invstd;
    if (running_mean) running_mean[c] = (T(1) - momentum) * running_mean[c] + momentum * mean;
    if (running_var)
      running_var[c] = (T(1) - momentum) * running_var[c] + momentum * (m > 1 ? var * T(m) / T(m - 1) : var);
  }
}

// With xhat = (x - mean) * invstd (the batch statistics), y = gamma * xhat + beta:
//   dbeta = sum dy, dgamma = sum dy * xhat,
//   dx = gamma * invstd / M * (M * dy - dbeta - xhat * dgamma)
// (the mean and variance depend on every x of the channel).
template <class T>
void batchnorm_train_backward(TensorView<const T> x, const T* gamma, T eps, TensorView<const T> dy, TensorView<T> dx,
                              T* dgamma, T* dbeta) {
  const index_t m = x.shape.n * x.shape.pixels();
  for (int c = 0; c < x.c(); ++c) {
    T mean = 0, var = 0;
    for (int b = 0; b < x.n(); ++b)
      for (int i = 0; i < x.h(); ++i)
        for (int j = 0; j < x.w(); ++j) mean += x.at(b, i, j, c);
    mean /= T(m);
    for (int b = 0; b < x.n(); ++b)
      for (int i = 0; i < x.h(); ++i)
        for (int j = 0; j < x.w(); ++j) var += (x.at(b, i, j, c) - mean) * (x.at(b, i, j, c) - mean);
    var /= T(m);
    const T invstd = T(1) / std::sqrt(var + eps);
    T sum_dy = 0, sum_dy_xhat = 0;
    for (int b = 0; b < x.n(); ++b)
      for (int i = 0; i < x.h(); ++i)
        for (int j = 0; j < x.w(); ++j) {
          sum_dy += dy.at(b, i, j, c);
          sum_dy_xhat += dy.at(b, i, j, c) * (x.at(b, i, j, c) - mean) * invstd;
        }
    const T gm = gamma ? gamma[c] : T(1);
    for (int b = 0; b < x.n(); ++b)
      for (int i = 0; i < x.h(); ++i)
        for (int j = 0; j < x.w(); ++j) {
          const T xhat = (x.at(b, i, j, c) - mean) * invstd;
          dx.at(b, i, j, c) = gm * invstd / T(m) * (T(m) * dy.at(b, i, j, c) - sum_dy - xhat * sum_dy_xhat);
        }
    if (dgamma) dgamma[c] = sum_dy_xhat;
    if (dbeta) dbeta[c] = sum_dy;
  }
}

// --- activations ---

template <class T>
T activation_value(T v, Activation a) {
  if (a == Activation::relu || a == Activation::relu6) v = v < T(0) ? T(0) : v;
  if (a == Activation::relu6) v = v > T(6) ? T(6) : v;
  return v;
}

// Derivative of the activation from its output y (PyTorch: relu passes where y > 0, relu6
// where 0 < y < 6).
template <class T>
T activation_derivative_from_output(T y, Activation a) {
  if (a == Activation::relu) return y > T(0) ? T(1) : T(0);
  if (a == Activation::relu6) return (y > T(0) && y < T(6)) ? T(1) : T(0);
  return T(1);
}

// --- pooling (PyTorch semantics) ---

// Max pooling; the first maximum of the window in (ky, kx) order is the one that receives
// the gradient. dx is zeroed first.
template <class T>
void max_pool2d_backward(const kernels::Pool2dParams& p, TensorView<const T> x, TensorView<const T> dy,
                         TensorView<T> dx) {
  for (int b = 0; b < dx.n(); ++b)
    for (int i = 0; i < dx.h(); ++i)
      for (int j = 0; j < dx.w(); ++j)
        for (int c = 0; c < dx.c(); ++c) dx.at(b, i, j, c) = T(0);
  for (int b = 0; b < dy.n(); ++b)
    for (int oy = 0; oy < dy.h(); ++oy)
      for (int ox = 0; ox < dy.w(); ++ox)
        for (int c = 0; c < dy.c(); ++c) {
          int by = -1, bx = -1;
          for (int ky = 0; ky < p.kernel_h; ++ky)
            for (int kx = 0; kx < p.kernel_w; ++kx) {
              const int y = window_input(oy, ky, p.stride_h, 1, p.pad_top);
              const int xx = window_input(ox, kx, p.stride_w, 1, p.pad_left);
              if (y < 0 || y >= x.h() || xx < 0 || xx >= x.w()) continue;
              if (by < 0 || x.at(b, y, xx, c) > x.at(b, by, bx, c)) {
                by = y;
                bx = xx;
              }
            }
          if (by >= 0) dx.at(b, by, bx, c) += dy.at(b, oy, ox, c);
        }
}

template <class T>
void max_pool2d_forward(const kernels::Pool2dParams& p, TensorView<const T> x, TensorView<T> y) {
  for (int b = 0; b < y.n(); ++b)
    for (int oy = 0; oy < y.h(); ++oy)
      for (int ox = 0; ox < y.w(); ++ox)
        for (int c = 0; c < y.c(); ++c) {
          T m = -std::numeric_limits<T>::infinity();
          for (int ky = 0; ky < p.kernel_h; ++ky)
            for (int kx = 0; kx < p.kernel_w; ++kx) {
              const int iy = window_input(oy, ky, p.stride_h, 1, p.pad_top);
              const int ix = window_input(ox, kx, p.stride_w, 1, p.pad_left);
              if (iy < 0 || iy >= x.h() || ix < 0 || ix >= x.w()) continue;
              m = x.at(b, iy, ix, c) > m ? x.at(b, iy, ix, c) : m;
            }
          y.at(b, oy, ox, c) = m;
        }
}

// Divisor of an average-pooling window: the taps inside the padded input
// (count_include_pad) or inside the input.
inline int avg_pool_divisor(const kernels::Pool2dParams& p, int oy, int ox, int H, int W) {
  int inside = 0, padded = 0;
  for (int ky = 0; ky < p.kernel_h; ++ky)
    for (int kx = 0; kx < p.kernel_w; ++kx) {
      const int y = window_input(oy, ky, p.stride_h, 1, p.pad_top);
      const int x = window_input(ox, kx, p.stride_w, 1, p.pad_left);
      if (y >= H + p.pad_bottom || x >= W + p.pad_right) continue;
      ++padded;
      if (y >= 0 && y < H && x >= 0 && x < W) ++inside;
    }
  return p.count_include_pad ? padded : inside;
}

template <class T>
void avg_pool2d_forward(const kernels::Pool2dParams& p, TensorView<const T> x, TensorView<T> y) {
  for (int b = 0; b < y.n(); ++b)
    for (int oy = 0; oy < y.h(); ++oy)
      for (int ox = 0; ox < y.w(); ++ox) {
        const int count = avg_pool_divisor(p, oy, ox, x.h(), x.w());
        for (int c = 0; c < y.c(); ++c) {
          T s = 0;
          for (int ky = 0; ky < p.kernel_h; ++ky)
            for (int kx = 0; kx < p.kernel_w; ++kx) {
              const int iy = window_input(oy, ky, p.stride_h, 1, p.pad_top);
              const int ix = window_input(ox, kx, p.stride_w, 1, p.pad_left);
              if (iy < 0 || iy >= x.h() || ix < 0 || ix >= x.w()) continue;
              s += x.at(b, iy, ix, c);
            }
          y.at(b, oy, ox, c) = count ? s / T(count) : T(0);
        }
      }
}

template <class T>
void avg_pool2d_backward(const kernels::Pool2dParams& p, TensorView<const T> dy, TensorView<T> dx) {
  for (int b = 0; b < dx.n(); ++b)
    for (int i = 0; i < dx.h(); ++i)
      for (int j = 0; j < dx.w(); ++j)
        for (int c = 0; c < dx.c(); ++c) dx.at(b, i, j, c) = T(0);
  for (int b = 0; b < dy.n(); ++b)
    for (int oy = 0; oy < dy.h(); ++oy)
      for (int ox = 0; ox < dy.w(); ++ox) {
        const int count = avg_pool_divisor(p, oy, ox, dx.h(), dx.w());
        if (!count) continue;
        for (int ky = 0; ky < p.kernel_h; ++ky)
          for (int kx = 0; kx < p.kernel_w; ++kx) {
            const int iy = window_input(oy, ky, p.stride_h, 1, p.pad_top);
            const int ix = window_input(ox, kx, p.stride_w, 1, p.pad_left);
            if (iy < 0 || iy >= dx.h() || ix < 0 || ix >= dx.w()) continue;
            for (int c = 0; c < dy.c(); ++c) dx.at(b, iy, ix, c) += dy.at(b, oy, ox, c) / T(count);
          }
      }
}

// Global average pooling: y[b][c] = mean of x[b, :, :, c] (dense [n][c] rows).
template <class T>
void global_avg_pool_forward(TensorView<const T> x, T* y) {
  for (int b = 0; b < x.n(); ++b)
    for (int c = 0; c < x.c(); ++c) {
      T s = 0;
      for (int i = 0; i < x.h(); ++i)
        for (int j = 0; j < x.w(); ++j) s += x.at(b, i, j, c);
      y[index_t(b) * x.c() + c] = s / T(x.h() * x.w());
    }
}

template <class T>
void global_avg_pool_backward(const T* dy, TensorView<T> dx) {
  for (int b = 0; b < dx.n(); ++b)
    for (int i = 0; i < dx.h(); ++i)
      for (int j = 0; j < dx.w(); ++j)
        for (int c = 0; c < dx.c(); ++c) dx.at(b, i, j, c) = dy[index_t(b) * dx.c() + c] / T(dx.h() * dx.w());
}

// --- loss ---

// Mean over the batch of the cross-entropy between softmax(logits) and the label
// distribution (1 - eps) * onehot(label) + eps / classes (PyTorch's label smoothing).
// Writes d(loss)/d(logits) if dlogits is not null. Dense [batch][classes] rows.
template <class T>
T softmax_cross_entropy(int batch, int classes, const T* logits, const int* labels, T eps, T* dlogits) {
  T total = 0;
  for (int b = 0; b < batch; ++b) {
    const T* z = logits + index_t(b) * classes;
    T m = z[0];
    for (int k = 1; k < classes; ++k) m = z[k] > m ? z[k] : m;
    T s = 0;
    for (int k = 0; k < classes; ++k) s += std::exp(z[k] - m);
    const T lse = m + std::log(s);
    for (int k = 0; k < classes; ++k) {
      const T target = (k == labels[b] ? T(1) - eps : T(0)) + eps / T(classes);
      total += -target * (z[k] - lse);
      if (dlogits) dlogits[index_t(b) * classes + k] = (std::exp(z[k] - lse) - target) / T(batch);
    }
  }
  return total / T(batch);
}

}  // namespace edgenn::ref
