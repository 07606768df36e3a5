// Batch normalisation in training mode, forward and backward, NHWC, SIMD across channels.
//
// Forward, per channel over the M = N*H*W values of the batch:
//   mean = sum x / M, var = sum (x - mean)^2 / M (biased), invstd = 1 / sqrt(var + eps)
//   y = act((x - mean) * invstd * gamma + beta [+ residual])
//   running_mean = (1 - momentum) running_mean + momentum mean
//   running_var  = (1 - momentum) running_var + momentum var * M / (M - 1)   (unbiased, like PyTorch)
// Saved for backward: x (the caller keeps it), mean and invstd ([C] each).
// Backward, with xhat = (x - mean) * invstd and g = dY (after the activation's backward):
//   dbeta = sum g, dgamma = sum g * xhat
//   dx = gamma * invstd * (g - dbeta / M - xhat * dgamma / M)
//
// Numerics: sums are taken of x - shift with a per-channel shift close to the mean (the first
// value of the channel), so sum and sum of squares do not cancel catastrophically when
// |mean| >> std; partial sums per image row are float, totals are double.
//
// The steps are exposed for the cluster runtime, where a channel's statistics span tiles
// (specs/tiled_training.md §5.5): batchnorm_channel_sums on each tile's core (same shift
// everywhere), an all-reduce of the double sums, then batchnorm_statistics and
// batchnorm_normalize per tile; backward likewise with batchnorm_backward_sums and
// batchnorm_backward_input. batchnorm_train_forward/backward run all steps on one device.
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "edgenn/core/tensor.hpp"
#include "edgenn/core/workspace.hpp"
#include "edgenn/kernels/activation.hpp"
#include "edgenn/simd/simd.hpp"

namespace edgenn::kernels {

struct BatchNormTrainParams {
  const float* gamma = nullptr;  // [C], null = 1
  const float* beta = nullptr;   // [C], null = 0
  float eps = 1e-5f;
  float momentum = 0.1f;  // PyTorch's default
};

namespace detail {

// Add the n lanes of a vector to double totals.
template <class Arch>
EDGENN_INLINE void add_lanes(simd::Vec<Arch> v, int n, double* total) {
  alignas(64) float tmp[simd::Vec<Arch>::size];
  v.store(tmp);
  for (int i = 0; i < n; ++i) total[i] += double(tmp[i]);
}

// Normalisation and the BN input gradient run row by row over groups of this many channels
// (their per-channel constants on the stack, 1 KB each): a row's channels are read together,
// not one SIMD block of channels over the whole map after the other (that strided walk was
// twice as slow once the map left L2).
constexpr int kChannelGroup = 64;

// Run f(c0, n, full) over channel blocks of the SIMD width: full blocks, then the tail. `full`
// is a compile-time constant, so full blocks use plain loads and stores.
template <class Arch, class F>
EDGENN_INLINE void for_channel_blocks(int channels, F&& f) {
  constexpr int VL = simd::Vec<Arch>::size;
  int c0 = 0;
  for (; c0 + VL <= channels; c0 += VL) f(c0, VL, std::true_type{});
  if (c0 < channels) f(c0, channels - c0, std::false_type{});
}

template <class Arch, bool Full>
EDGENN_INLINE simd::Vec<Arch> load_n(const float* p, int n) {
  using V = simd::Vec<Arch>;
  if constexpr (Full) {
    return V::load(p);
  } else {
    return V::load_partial(p, n);
  }
}

template <class Arch, bool Full>
EDGENN_INLINE void store_n(simd::Vec<Arch> v, float* p, int n) {
  if constexpr (Full) {
    v.store(p);
  } else {
    v.store_partial(p, n);
  }
}

}  // namespace detail

// sum[c] = sum (x - shift[c]), sum_sq[c] = sum (x - shift[c])^2 over every pixel of x (written,
// or added with `accumulate`, e.g. over tiles). shift: [C] (null = 0).
template <class Arch = simd::default_arch>
Status batchnorm_channel_sums(ConstTensor x, const float* shift, double* sum, double* sum_sq, bool accumulate = false) {
  EDGENN_CHECK(x.shape.valid() && sum && sum_sq, Error::invalid_argument, "batchnorm_channel_sums: empty input or null sums");
  using V = simd::Vec<Arch>;
  const int C = x.c();
  if (!accumulate)
    for (int c = 0; c < C; ++c) sum[c] = sum_sq[c] = 0.0;
  for (int b = 0; b < x.n(); ++b)
    for (int i = 0; i < x.h(); ++i)
      detail::for_channel_blocks<Arch>(C, [&](int c0, int n, auto full) {
        constexpr bool F = decltype(full)::value;
        const V k = shift ? detail::load_n<Arch, F>(shift + c0, n) : V::zero();
        V s = V::zero(), q = V::zero();
        for (int j = 0; j < x.w(); ++j) {
          const V d = detail::load_n<Arch, F>(x.pixel(b, i, j) + c0, n) - k;
          s = s + d;
          q = fma(d, d, q);
        }
        detail::add_lanes<Arch>(s, n, sum + c0);
        detail::add_lanes<Arch>(q, n, sum_sq + c0);
      });
  return Status::ok();
}

// mean, invstd ([C]) from the sums over `count` values per channel, and the running-statistics
// update (running_mean/running_var may be null: no update).
inline Status batchnorm_statistics(int channels, index_t count, const float* shift, const double* sum,
                                   const double* sum_sq, const BatchNormTrainParams& bn, float* mean, float* invstd,
                                   float* running_mean, float* running_var) {
  EDGENN_CHECK(channels > 0 && count > 0 && sum && sum_sq && mean && invstd, Error::invalid_argument,
               "batchnorm_statistics: bad sizes or null buffers");
  EDGENN_CHECK(bn.eps > 0.0f && bn.momentum >= 0.0f && bn.momentum <= 1.0f, Error::invalid_argument,
               "batchnorm_statistics: eps must be positive and momentum in [0, 1]");
  const double m = double(count);
  for (int c = 0; c < channels; ++c) {
    const double d_mean = sum[c] / m;  // mean of x - shift
    double var = sum_sq[c] / m - d_mean * d_mean;
    var = var < 0.0 ? 0.0 : var;
    const double mu = d_mean + (shift ? double(shift[c]) : 0.0);
    mean[c] = float(mu);
    invstd[c] = float(1.0 / std::sqrt(var + double(bn.eps)));
    if (running_mean) running_mean[c] = float((1.0 - bn.momentum) * running_mean[c] + bn.momentum * mu);
    if (running_var) {
      const double unbiased = count > 1 ? var * m / (m - 1.0) : var;
      running_var[c] = float((1.0 - bn.momentum) * running_var[c] + bn.momentum * unbiased);
    }
  }
  return Status::ok();
}

// y = act((x - mean) * invstd * gamma + beta [+ residual]); y may be the same view as x or as
// the residual. The residual add (a ResNet block's shortcut) is fused in: one pass over the
// map instead of two.
template <class Arch = simd::default_arch>
Status batchnorm_normalize(ConstTensor x, const float* mean, const float* invstd, const float* gamma,
                           const float* beta, Tensor y, Activation act = Activation::none,
                           ConstTensor residual = ConstTensor()) {
  EDGENN_CHECK(x.shape == y.shape && x.shape.valid(), Error::shape_mismatch, "batchnorm_normalize: shapes differ");
  EDGENN_CHECK(!residual.data || residual.shape == x.shape, Error::shape_mismatch,
               "batchnorm_normalize: the residual's shape differs from the input's");
  EDGENN_CHECK(mean && invstd, Error::invalid_argument, "batchnorm_normalize: null statistics");
  using V = simd::Vec<Arch>;
  constexpr int G = detail::kChannelGroup;
  const Clamp cl = activation_clamp(act);
  const V lo = V::broadcast(cl.lo), hi = V::broadcast(cl.hi);
  const int C = x.c();
  const auto run = [&](auto with_residual) {
    for (int g0 = 0; g0 < C; g0 += G) {
      const int gc = std::min(G, C - g0);
      alignas(64) float mu_g[G] = {}, scale_g[G] = {}, shift_g[G] = {};
      for (int i = 0; i < gc; ++i) {
        const int c = g0 + i;
        mu_g[i] = mean[c];
        scale_g[i] = invstd[c] * (gamma ? gamma[c] : 1.0f);
        shift_g[i] = beta ? beta[c] : 0.0f;
      }
      for (int b = 0; b < x.n(); ++b)
        for (int i = 0; i < x.h(); ++i)
          detail::for_channel_blocks<Arch>(gc, [&](int c0, int n, auto full) {
            constexpr bool F = decltype(full)::value;
            const int c = g0 + c0;
            const V mu = V::load(mu_g + c0), scale = V::load(scale_g + c0), shift = V::load(shift_g + c0);
            for (int j = 0; j < x.w(); ++j) {
              V v = fma(detail::load_n<Arch, F>(x.pixel(b, i, j) + c, n) - mu, scale, shift);
              if constexpr (decltype(with_residual)::value) v = v + detail::load_n<Arch, F>(residual.pixel(b, i, j) + c, n);
              detail::store_n<Arch, F>(min(max(v, lo), hi), y.pixel(b, i, j) + c, n);
            }
          });
    }
  };
  if (residual.data) {
    run(std::true_type{});
  } else {
    run(std::false_type{});
  }
  return Status::ok();
}

namespace detail {

// The sums of batchnorm_backward_sums over g = dy * act'(y); with an activation, g is written
// back to dy. The activation's mask comes from y, or with MaskFromX from the BN's own output
// recomputed from x (scale = invstd * gamma and shift = beta, as batchnorm_normalize has it).
template <class Arch, Activation Act, bool MaskFromX>
void batchnorm_backward_sums_impl(ConstTensor x, ConstTensor y, const float* dy_in, float* dy_out, index_t dsn,
                                  index_t dsh, index_t dsw, const float* mean, const float* invstd,
                                  const float* gamma, const float* beta, double* sum_dy, double* sum_dy_xhat) {
  using V = simd::Vec<Arch>;
  const int C = x.c();
  const V zero = V::zero(), six = V::broadcast(6.0f);
  for (int b = 0; b < x.n(); ++b)
    for (int i = 0; i < x.h(); ++i)
      for_channel_blocks<Arch>(C, [&](int c0, int n, auto full) {
        constexpr bool F = decltype(full)::value;
        const V mu = load_n<Arch, F>(mean + c0, n);
        V scale = V::zero(), shift = V::zero();
        if constexpr (MaskFromX) {
          scale = load_n<Arch, F>(invstd + c0, n);
          if (gamma) scale = scale * load_n<Arch, F>(gamma + c0, n);
          if (beta) shift = load_n<Arch, F>(beta + c0, n);
        }
        V s = V::zero(), sx = V::zero();
        for (int j = 0; j < x.w(); ++j) {
          const index_t o = b * dsn + i * dsh + j * dsw + c0;
          V g = load_n<Arch, F>(dy_in + o, n);
          const V xm = load_n<Arch, F>(x.pixel(b, i, j) + c0, n) - mu;
          if constexpr (Act != Activation::none) {
            // The BN output before the clamp decides the mask as the clamped y does: y > 0 iff
            // v > 0, y < 6 iff v < 6.
            V yv;
            if constexpr (MaskFromX) {
              yv = fma(xm, scale, shift);
            } else {
              yv = load_n<Arch, F>(y.pixel(b, i, j) + c0, n);
            }
            g = select_gt(yv, zero, g);
            if constexpr (Act == Activation::relu6) g = select_lt(yv, six, g);
            store_n<Arch, F>(g, dy_out + o, n);
          }
          s = s + g;
          sx = fma(g, xm, sx);
        }
        add_lanes<Arch>(s, n, sum_dy + c0);
        // invstd is applied to the row sum (one multiply per row instead of per value).
        add_lanes<Arch>(sx * load_n<Arch, F>(invstd + c0, n), n, sum_dy_xhat + c0);
      });
}

template <class Arch, bool MaskFromX>
Status batchnorm_backward_sums_act(ConstTensor x, ConstTensor y, const float* gamma, const float* beta,
                                   Activation act, Tensor dy, const float* mean, const float* invstd, double* sum_dy,
                                   double* sum_dy_xhat, bool accumulate) {
  EDGENN_CHECK(x.shape == dy.shape && x.shape.valid() && (MaskFromX || act == Activation::none || y.shape == dy.shape),
               Error::shape_mismatch, "batchnorm_backward_sums: shapes differ");
  EDGENN_CHECK(mean && invstd && sum_dy && sum_dy_xhat, Error::invalid_argument, "batchnorm_backward_sums: null buffers");
  EDGENN_CHECK(act == Activation::none || act == Activation::relu || act == Activation::relu6, Error::unsupported,
               "batchnorm_backward_sums: only relu and relu6 are fused");
  if (!accumulate)
    for (int c = 0; c < x.c(); ++c) sum_dy[c] = sum_dy_xhat[c] = 0.0;
  const auto run = [&](auto a) {
    batchnorm_backward_sums_impl<Arch, decltype(a)::value, MaskFromX>(x, y, dy.data, dy.data, dy.stride_n,
                                                                      dy.stride_h, dy.stride_w, mean, invstd, gamma,
                                                                      beta, sum_dy, sum_dy_xhat);
  };
  if (act == Activation::relu) run(std::integral_constant<Activation, Activation::relu>{});
  else if (act == Activation::relu6) run(std::integral_constant<Activation, Activation::relu6>{});
  else run(std::integral_constant<Activation, Activation::none>{});
  return Status::ok();
}

}  // namespace detail

// sum_dy[c] = sum dy, sum_dy_xhat[c] = sum dy * (x - mean) * invstd (written, or added with
// `accumulate`, e.g. over tiles). These are dbeta and dgamma.
template <class Arch = simd::default_arch>
Status batchnorm_backward_sums(ConstTensor x, ConstTensor dy, const float* mean, const float* invstd, double* sum_dy,
                               double* sum_dy_xhat, bool accumulate = false) {
  EDGENN_CHECK(x.shape == dy.shape && x.shape.valid(), Error::shape_mismatch, "batchnorm_backward_sums: shapes differ");
  EDGENN_CHECK(mean && invstd && sum_dy && sum_dy_xhat, Error::invalid_argument, "batchnorm_backward_sums: null buffers");
  if (!accumulate)
    for (int c = 0; c < x.c(); ++c) sum_dy[c] = sum_dy_xhat[c] = 0.0;
  detail::batchnorm_backward_sums_impl<Arch, Activation::none, false>(x, ConstTensor(), dy.data, nullptr, dy.stride_n,
                                                                      dy.stride_h, dy.stride_w, mean, invstd, nullptr,
                                                                      nullptr, sum_dy, sum_dy_xhat);
  return Status::ok();
}

// The same sums with the backward of the activation that follows the BN fused in (one pass
// instead of two): dy, the gradient at the activation's output y, is overwritten with the
// gradient at its input (dy * act'(y), what a residual branch also receives), and the sums
// are taken of that. act: none, relu or relu6 (the BN layer's output y = act(BN(x) [+ r])).
template <class Arch = simd::default_arch>
Status batchnorm_backward_sums(ConstTensor x, ConstTensor y, Activation act, Tensor dy, const float* mean,
                               const float* invstd, double* sum_dy, double* sum_dy_xhat, bool accumulate = false) {
  return detail::batchnorm_backward_sums_act<Arch, false>(x, y, nullptr, nullptr, act, dy, mean, invstd, sum_dy,
                                                          sum_dy_xhat, accumulate);
}

// The same for a BN whose output had no residual added, y = act((x - mean) * invstd * gamma +
// beta): the activation's mask is recomputed from x bit for bit as batchnorm_normalize computed
// y, so y is not read (one map fewer through the memory).
template <class Arch = simd::default_arch>
Status batchnorm_backward_sums_from_input(ConstTensor x, const float* gamma, const float* beta, Activation act,
                                          Tensor dy, const float* mean, const float* invstd, double* sum_dy,
                                          double* sum_dy_xhat, bool accumulate = false) {
  return detail::batchnorm_backward_sums_act<Arch, true>(x, ConstTensor(), gamma, beta, act, dy, mean, invstd, sum_dy,
                                                         sum_dy_xhat, accumulate);
}

// dx = gamma * invstd * (dy - sum_dy / count - xhat * sum_dy_xhat / count); written, or added
// with `accumulate`. dx may be the same view as dy.
template <class Arch = simd::default_arch>
Status batchnorm_backward_input(ConstTensor x, ConstTensor dy, const float* mean, const float* invstd,
                                const float* gamma, const double* sum_dy, const double* sum_dy_xhat, index_t count,
                                Tensor dx, bool accumulate = false) {
  EDGENN_CHECK(x.shape == dy.shape && x.shape == dx.shape && x.shape.valid(), Error::shape_mismatch,
               "batchnorm_backward_input: shapes differ");
  EDGENN_CHECK(mean && invstd && sum_dy && sum_dy_xhat && count > 0, Error::invalid_argument,
               "batchnorm_backward_input: null buffers or empty batch");
  using V = simd::Vec<Arch>;
  constexpr int G = detail::kChannelGroup;
  const int C = x.c();
  for (int g0 = 0; g0 < C; g0 += G) {
    const int gc = std::min(G, C - g0);
    // dx = k_dy * dy + k_x * (x - mean) + k_0, per channel.
    alignas(64) float kdy[G] = {}, kx[G] = {}, k0[G] = {}, mu[G] = {};
    for (int i = 0; i < gc; ++i) {
      const int c = g0 + i;
      const double s = double(invstd[c]) * (gamma ? double(gamma[c]) : 1.0);
      kdy[i] = float(s);
      kx[i] = float(-s * double(invstd[c]) * sum_dy_xhat[c] / double(count));
      k0[i] = float(-s * sum_dy[c] / double(count));
      mu[i] = mean[c];
    }
    for (int b = 0; b < x.n(); ++b)
      for (int i = 0; i < x.h(); ++i)
        detail::for_channel_blocks<Arch>(gc, [&](int c0, int n, auto full) {
          constexpr bool F = decltype(full)::value;
          const int c = g0 + c0;
          const V vdy = V::load(kdy + c0), vx = V::load(kx + c0), v0 = V::load(k0 + c0), vmu = V::load(mu + c0);
          for (int j = 0; j < x.w(); ++j) {
            float* d = dx.pixel(b, i, j) + c;
            V v = fma(detail::load_n<Arch, F>(dy.pixel(b, i, j) + c, n), vdy,
                      fma(detail::load_n<Arch, F>(x.pixel(b, i, j) + c, n) - vmu, vx, v0));
            if (accumulate) v = v + detail::load_n<Arch, F>(d, n);
            detail::store_n<Arch, F>(v, d, n);
          }
        });
  }
  return Status::ok();
}

// Workspace of batchnorm_train_forward and batchnorm_train_backward: per-channel shift and
// double sums.
constexpr std::size_t batchnorm_train_workspace_bytes(int channels) {
  return aligned_bytes<float>(std::size_t(channels)) + 2 * aligned_bytes<double>(std::size_t(channels));
}

// Training-mode forward on one device: statistics of x, y = act(normalised x [+ residual]),
// saved mean and invstd ([C], needed by the backward), running statistics updated (may be null).
// y may be the same view as x only if the caller does not keep x for the backward.
// ws: batchnorm_train_workspace_bytes(C).
template <class Arch = simd::default_arch>
Status batchnorm_train_forward(ConstTensor x, const BatchNormTrainParams& bn, Tensor y, float* saved_mean,
                               float* saved_invstd, float* running_mean, float* running_var, Workspace& ws,
                               Activation act = Activation::none, ConstTensor residual = ConstTensor()) {
  EDGENN_CHECK(x.shape == y.shape && x.shape.valid(), Error::shape_mismatch, "batchnorm_train_forward: shapes differ");
  EDGENN_CHECK(saved_mean && saved_invstd, Error::invalid_argument, "batchnorm_train_forward: null saved statistics");
  EDGENN_CHECK(x.shape.n * x.shape.pixels() > 1, Error::invalid_argument,
               "batchnorm_train_forward: training needs more than one value per channel (like PyTorch)");
  const int C = x.c();
  WorkspaceScope scope(ws);
  float* shift = ws.take<float>(std::size_t(C));
  double* sum = ws.take<double>(std::size_t(C));
  double* sum_sq = ws.take<double>(std::size_t(C));
  EDGENN_TRY(ws.status());
  if (ws.measuring()) return Status::ok();
  for (int c = 0; c < C; ++c) shift[c] = x.at(0, 0, 0, c);
  EDGENN_TRY(batchnorm_channel_sums<Arch>(x, shift, sum, sum_sq));
  EDGENN_TRY(batchnorm_statistics(C, x.shape.n * x.shape.pixels(), shift, sum, sum_sq, bn, saved_mean, saved_invstd,
                                  running_mean, running_var));
  return batchnorm_normalize<Arch>(x, saved_mean, saved_invstd, bn.gamma, bn.beta, y, act, residual);
}

// Training-mode backward on one device: dgamma, dbeta ([C], written or added with
// accumulate_params; either may be null) and dx (written or added with accumulate_dx) from the
// saved x, mean, invstd and dy (already through the activation's backward if one was fused).
// dx may be the same view as dy. ws: batchnorm_train_workspace_bytes(C).
template <class Arch = simd::default_arch>
Status batchnorm_train_backward(ConstTensor x, ConstTensor dy, const float* gamma, const float* saved_mean,
                                const float* saved_invstd, Tensor dx, float* dgamma, float* dbeta, Workspace& ws,
                                bool accumulate_dx = false, bool accumulate_params = false) {
  EDGENN_CHECK(x.shape == dy.shape && x.shape == dx.shape && x.shape.valid(), Error::shape_mismatch,
               "batchnorm_train_backward: shapes differ");
  const int C = x.c();
  WorkspaceScope scope(ws);
  (void)ws.take<float>(std::size_t(C));  // same layout as the forward: one size query for both
  double* sum_dy = ws.take<double>(std::size_t(C));
  double* sum_dy_xhat = ws.take<double>(std::size_t(C));
  EDGENN_TRY(ws.status());
  if (ws.measuring()) return Status::ok();
  EDGENN_TRY(batchnorm_backward_sums<Arch>(x, dy, saved_mean, saved_invstd, sum_dy, sum_dy_xhat));
  for (int c = 0; c < C; ++c) {
    if (dbeta) dbeta[c] = float(accumulate_params ? dbeta[c] + sum_dy[c] : sum_dy[c]);
    if (dgamma) dgamma[c] = float(accumulate_params ? dgamma[c] + sum_dy_xhat[c] : sum_dy_xhat[c]);
  }
  return batchnorm_backward_input<Arch>(x, dy, saved_mean, saved_invstd, gamma, sum_dy, sum_dy_xhat,
                                        x.shape.n * x.shape.pixels(), dx, accumulate_dx);
}

}  // namespace edgenn::kernels
