// Training state for the nn/ layers: ConvBN in training mode (batch statistics, running
// statistics with PyTorch's momentum), BasicBlock, the PoolLinear head, and a Network chain.
//
// Each trainer binds to an nn layer and updates its parameters in place (the optimizer's
// ParamSlots point into the nn layer's vectors), so after training the model is saved and
// prepare()d for inference as usual. A trainer owns what the backward needs (the layer's
// outputs, the BN input and its batch statistics, gradient buffers) and resizes them when the
// batch shape changes; the kernels it calls never allocate and take their scratch from the
// caller's Workspace (workspace_bytes()).
//
// A frozen layer runs in eval mode (folded BN with running statistics, nothing updated, no
// parameter gradients) but still passes input gradients back when a trainable layer precedes
// it. Weights are packed from the current parameters at every forward (the optimizer changed
// them since), which costs one pass over the weights per step.
//
// Threads: set_parallel(Parallel*) makes every kernel of the layer run on the batch ranges of
// the Parallel's threads (train/parallel.hpp); the caller reserves each thread's workspace
// (Parallel::reserve_workspace with workspace_bytes()). Null (the default) runs serially.
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "edgenn/kernels/batchnorm_train.hpp"
#include "edgenn/kernels/conv2d_backward.hpp"
#include "edgenn/kernels/elementwise.hpp"
#include "edgenn/kernels/elementwise_backward.hpp"
#include "edgenn/kernels/fully_connected_backward.hpp"
#include "edgenn/kernels/pooling_backward.hpp"
#include "edgenn/kernels/winograd.hpp"
#include "edgenn/nn/classifier.hpp"
#include "edgenn/train/large_pages.hpp"
#include "edgenn/train/optim.hpp"
#include "edgenn/train/parallel.hpp"

namespace edgenn::train {

namespace detail {
template <class Alloc>
float* sized(std::vector<float, Alloc>& v, index_t n) {
  if (v.size() < std::size_t(n)) v.resize(std::size_t(n));
  return v.data();
}
}  // namespace detail

// Buffers a layer needs only inside one forward or backward call: the BN input's gradient,
// a BasicBlock's inner gradient and its shortcut output, the Winograd weights of the pass
// (packed and their scratch). A NetworkTrain shares one set among its layers (each grows to
// the largest use) instead of every layer keeping its own.
struct TransientBuffers {
  LargeVector<float> dz, dmid, shortcut, winograd, winograd_scratch;
};
// Floats of each transient buffer a layer uses.
struct TransientSizes {
  index_t dz = 0, dmid = 0, shortcut = 0, winograd = 0;  // winograd: packed + scratch
  TransientSizes max(const TransientSizes& o) const {
    return {std::max(dz, o.dz), std::max(dmid, o.dmid), std::max(shortcut, o.shortcut),
            std::max(winograd, o.winograd)};
  }
  index_t total() const { return dz + dmid + shortcut + winograd; }
};

template <class Arch = simd::default_arch>
struct ConvBNTrain {
  nn::ConvBN<Arch>* layer = nullptr;
  bool frozen = false;
  float bn_momentum = 0.1f;  // PyTorch's BatchNorm2d default

  std::vector<float> dweight, dbias, dgamma, dbeta;  // parameter gradients
  LargeVector<float> z;                              // BN input (kept for backward)
  std::vector<float> mean, invstd;                   // batch statistics
  TransientBuffers own_tmp;                          // used when no network shares its buffers
  TransientBuffers* shared_tmp = nullptr;
  std::vector<float> packed, packed_grad, folded_w, folded_b, zero_bias;
  std::vector<float> weight_slice;                   // input channels [dx_from, cin) of the weights
  int dx_from = 0;  // the input gradient covers input channels [dx_from, cin) only (dx holds those)
  // Training BN's forward sums per batch range: shift [R][C], sums [R][sum C | sum_sq C],
  // items; and the batch sums over all ranges (also the backward's).
  std::vector<float> range_shift;
  std::vector<double> range_sums;
  std::vector<int> range_items;
  std::vector<double> bn_sum, bn_sum2;
  bool had_residual = false;  // the last training forward added a residual before the activation
  // The backward's BN sums per batch range, [R][sum dy C | sum dy xhat C]; with
  // sums_from_consumer the layer after this one has already added them slice by slice
  // (add_backward_sums) while writing this layer's output gradient.
  std::vector<double> grad_range_sums;
  bool sums_from_consumer = false;
  // The batch is processed in slices of items whose BN input z (and dz) take at most
  // slice_bytes, so a slice is still in cache for the next step on it: the channel sums after
  // the convolution, dW and dx after dz (bench_train: at batch 128 ResNet-20's BN passes took
  // 50-70% longer per image than at batch 32, reading maps back from beyond L2).
  static constexpr std::size_t kSliceBytes = std::size_t(512) << 10;
  std::size_t slice_bytes = kSliceBytes;
  int slice_items(Shape s) const {
    return int(std::max<index_t>(1, index_t(slice_bytes / sizeof(float)) / (s.pixels() * s.c)));
  }
  kernels::PackedWeights pw;
  kernels::ConvInputGradWeights gw;
  Parallel* par = nullptr;

  bool winograd_enabled = true;  // false: the direct kernels only (set_winograd)

  // Deferred normalisation: a forward with `defer` stops after the batch statistics and
  // leaves y to the layer that reads it, which normalises each slice of its input right
  // before convolving it (normalize_items), while the slice is in cache, instead of a pass
  // of its own over y and a second read of y from beyond the cache.
  struct PendingNormalize {
    bool on = false;
    Tensor y;
    ConstTensor residual;  // kept alive by the caller until the consumer's forward is done
  } pending;

  void set_parallel(Parallel* p) { par = p; }
  void set_winograd(bool on) { winograd_enabled = on; }
  void set_slice_bytes(std::size_t b) { slice_bytes = b; }
  void set_transient(TransientBuffers* t) { shared_tmp = t; }
  TransientBuffers& tmp() { return shared_tmp ? *shared_tmp : own_tmp; }
  bool threaded(int n) const { return par && par->ranges(n) > 1; }

  Status bind(nn::ConvBN<Arch>& l, bool freeze) {
    EDGENN_CHECK(!l.depthwise(), Error::unsupported, "ConvBNTrain: depthwise layers are not trainable yet");
    layer = &l;
    frozen = freeze;
    const std::size_t co = std::size_t(l.cout);
    if (!frozen) {
      dweight.assign(l.weight.size(), 0.0f);
      dbias.assign(l.bias.size(), 0.0f);
      dgamma.assign(l.gamma.size(), 0.0f);
      dbeta.assign(l.beta.size(), 0.0f);
    }
    zero_bias.assign(co, 0.0f);
    mean.assign(co, 0.0f);
    invstd.assign(co, 0.0f);
    if (frozen) {
      // Eval mode: the inference path, and input gradients through the folded weights.
      EDGENN_TRY(l.prepare());
      folded_w = l.weight;
      folded_b = l.bias.empty() ? zero_bias : l.bias;
      if (l.has_bn()) {
        const kernels::BatchNormParams bn{l.gamma.data(), l.beta.data(), l.running_mean.data(), l.running_var.data(),
                                          l.bn_eps};
        EDGENN_TRY(kernels::fold_batchnorm(bn, l.cout, l.k_per_out(), folded_w.data(), folded_b.data()));
      }
      packed_grad.assign(std::size_t(kernels::conv_input_grad_packed_floats<Arch>(l.p, l.cin, l.cout)), 0.0f);
      gw = kernels::pack_conv_input_grad_weights<Arch>(l.p, l.cin, l.cout, folded_w.data(), packed_grad.data());
    }
    return Status::ok();
  }

  bool trains_bn() const { return !frozen && layer->has_bn(); }
  // The convolution as the training forward runs it: the activation follows the BN.
  kernels::Conv2dParams conv_params() const {
    kernels::Conv2dParams p = layer->p;
    if (trains_bn()) p.activation = Activation::none;
    return p;
  }

  template <class F>
  void visit_slots(F&& f) {
    if (frozen) return;
    nn::ConvBN<Arch>& l = *layer;
    f(ParamSlot{l.conv_name + ".weight", l.weight.data(), dweight.data(), l.weight.size(), true});
    if (!l.bias.empty()) f(ParamSlot{l.conv_name + ".bias", l.bias.data(), dbias.data(), l.bias.size(), true});
    if (l.has_bn()) {
      f(ParamSlot{l.bn_name + ".weight", l.gamma.data(), dgamma.data(), l.gamma.size(), true});
      f(ParamSlot{l.bn_name + ".bias", l.beta.data(), dbeta.data(), l.beta.size(), true});
    }
  }

  // 3x3 stride-1 layers followed by a training BN (no fused activation, residual or bias to
  // apply) run as Winograd F(4x4, 3x3) where that measured faster than the direct kernels
  // (bench_conv_algorithms, docs/training_kernels.md): forward, input gradient and weight
  // gradient from 16 channels in and out (1.3-2.2x).
  // winograd(): the forward and the weight gradient; winograd(cin): the input gradient over
  // `cin` of the input channels (fewer than the layer's with dx_from).
  static constexpr int kWinogradMinChannels = 16;
  bool winograd(int cin) const {
    const nn::ConvBN<Arch>& l = *layer;
    return winograd_enabled && trains_bn() && l.bias.empty() && kernels::winograd_applies(l.p) &&
           cin >= kWinogradMinChannels && l.cout >= kWinogradMinChannels;
  }
  bool winograd() const { return winograd(layer->cin); }

  std::size_t workspace_bytes(Shape in) const {
    const nn::ConvBN<Arch>& l = *layer;
    const kernels::Conv2dParams p = conv_params();
    std::size_t b = kernels::conv2d_workspace_bytes(p, in);
    b = std::max(b, kernels::conv2d_backward_input_workspace_bytes(p, l.cout));
    if (!frozen) b = std::max(b, kernels::conv2d_backward_weights_workspace_bytes<Arch>(p, l.cin, l.cout));
    if (winograd()) {
      b = std::max(b, kernels::winograd_workspace_bytes(l.cin, l.cout));
      b = std::max(b, kernels::winograd_workspace_bytes(l.cout, l.cin));
      b = std::max(b, kernels::winograd_weight_grad_workspace_bytes<Arch>(l.cin, l.cout));
    }
    if (trains_bn()) b = std::max(b, kernels::batchnorm_train_workspace_bytes(l.cout));
    return b;
  }
  // Floats this layer keeps between forward and backward for a batch of shape `in` (z), and
  // the transient ones it uses inside backward (dz).
  index_t saved_floats(Shape in) const { return trains_bn() ? layer->output_shape(in).size() : 0; }
  TransientSizes transient_sizes(Shape in) const {
    const nn::ConvBN<Arch>& l = *layer;
    index_t wino = 0;
    if (winograd())
      wino = std::max(kernels::winograd_packed_floats<Arch>(l.cin, l.cout) +
                          kernels::winograd_pack_scratch_floats(l.cin, l.cout),
                      kernels::winograd_packed_floats<Arch>(l.cout, l.cin));
    return TransientSizes{trains_bn() ? dz_floats(layer->output_shape(in)) : 0, 0, 0, wino};
  }
  // The BN input gradient dz lives one slice at a time: each batch range has a slice of its
  // own in the transient buffer (dz_slice_items items), not a whole map.
  int dz_slice_items(Shape out) const { return std::min(out.n, slice_items(out)); }
  index_t dz_floats(Shape out) const {
    const int ranges = threaded(out.n) ? par->ranges(out.n) : 1;
    return index_t(ranges) * dz_slice_items(out) * out.pixels() * out.c;
  }

  // y = act(BN(conv(x)) [+ residual]); training mode unless frozen. The caller keeps x and y
  // alive until backward().
  // input_from: the layer whose deferred output x is (normalised here, item range by item
  // range, before the convolution reads it). defer: leave y's normalisation to the layer
  // that reads y (or to finish_normalize); only a layer with a training BN defers.
  Status forward(ConstTensor x, Tensor y, Workspace& ws, const ConstTensor* residual = nullptr,
                 ConvBNTrain* input_from = nullptr, bool defer = false) {
    pending.on = false;
    if (input_from && !input_from->pending.on) input_from = nullptr;
    if (input_from)
      EDGENN_CHECK(input_from->pending.y.data == x.data && input_from->pending.y.shape == x.shape,
                   Error::invalid_argument, "ConvBNTrain: the deferred input is not this layer's input");
    EDGENN_TRY(convolve(x, y, ws, residual, input_from, defer));
    if (input_from) input_from->pending.on = false;  // every item of x is final now
    return Status::ok();
  }

  // forward's work once input_from is checked (null if x is final already).
  Status convolve(ConstTensor x, Tensor y, Workspace& ws, const ConstTensor* residual, ConvBNTrain* input_from,
                  bool defer) {
    nn::ConvBN<Arch>& l = *layer;
    const int n = x.n();
    // x's items [b0, b1) made final, right before they are read.
    auto ready = [&](int b0, int b1) { return input_from ? input_from->normalize_items(b0, b1) : Status::ok(); };
    if (frozen) {
      return for_batch_ranges(par, n, ws, [&](int b0, int b1, Workspace& w) {
        EDGENN_TRY(ready(b0, b1));
        const ConstTensor r = residual ? items(*residual, b0, b1) : ConstTensor();
        return l.forward(items(x, b0, b1), items(y, b0, b1), w, residual ? &r : nullptr);
      });
    }
    const kernels::Conv2dParams p = conv_params();
    const bool bn_here = trains_bn();
    had_residual = residual != nullptr;
    sums_from_consumer = false;  // a new step: sums fed during a backward that failed are stale
    const Tensor zt = bn_here ? Tensor::dense(detail::sized(z, y.shape.size()), y.shape) : y;
    const bool deferred_in = input_from != nullptr;
    if (winograd()) {
      float* scratch = detail::sized(tmp().winograd_scratch, kernels::winograd_pack_scratch_floats(l.cin, l.cout));
      float* dst = detail::sized(tmp().winograd, kernels::winograd_packed_floats<Arch>(l.cin, l.cout));
      const kernels::PackedWeights ww = kernels::pack_winograd_weights<Arch>(
          l.cin, l.cout, l.weight.data(), kernels::WinogradPass::forward, scratch, dst);
      return forward_from(x.shape, zt, y, residual, deferred_in, defer, ws, [&](int b0, int b1, Workspace& w) {
        EDGENN_TRY(ready(b0, b1));
        return kernels::winograd_conv3x3<Arch>(items(x, b0, b1), ww, items(zt, b0, b1), w, false);
      });
    }
    detail::sized(packed, kernels::conv_packed_floats<Arch>(p, l.cin, l.cout));
    pw = kernels::pack_conv_weights<Arch>(p, l.cin, l.cout, l.weight.data(),
                                          l.bias.empty() ? zero_bias.data() : l.bias.data(), packed.data());
    return forward_from(x.shape, zt, y, residual, deferred_in, defer, ws, [&](int b0, int b1, Workspace& w) {
      EDGENN_TRY(ready(b0, b1));
      const ConstTensor r = residual && !bn_here ? items(*residual, b0, b1) : ConstTensor();
      return kernels::conv2d<Arch>(p, items(x, b0, b1), pw, items(zt, b0, b1), w, residual && !bn_here ? &r : nullptr);
    });
  }

  // The forward after the weights are packed: conv_items(b0, b1, ws) writes zt for batch items
  // [b0, b1) (y itself without a training BN) from input items of shape `in` (normalised
  // inside conv_items with input_deferred), then the training BN (its normalisation
  // deferred with `defer`).
  template <class Conv>
  Status forward_from(Shape in, Tensor zt, Tensor y, const ConstTensor* residual, bool input_deferred, bool defer,
                      Workspace& ws, Conv&& conv_items) {
    nn::ConvBN<Arch>& l = *layer;
    const int n = zt.n();
    if (!trains_bn()) return for_batch_ranges(par, n, ws, conv_items);

    // Training BN (the steps of kernels::batchnorm_train_forward). Each batch range convolves
    // its items slice by slice and takes a slice's channel sums right after, while the slice
    // is still in cache (slice_bytes), shifted by its own first pixel; the range sums are
    // then moved to range 0's shift and added in range order. One range (no threads) gives
    // exactly batchnorm_train_forward's sums.
    const int C = l.cout;
    const index_t pixels = zt.shape.pixels();
    EDGENN_CHECK(index_t(n) * pixels > 1, Error::invalid_argument,
                 "batchnorm_train_forward: training needs more than one value per channel (like PyTorch)");
    const int R = threaded(n) ? par->ranges(n) : 1;
    // A slice's input is normalised right before it is read: it has to fit as well.
    const int slice = input_deferred ? std::min(slice_items(zt.shape), slice_items(in)) : slice_items(zt.shape);
    range_shift.resize(std::size_t(R) * std::size_t(C));
    range_sums.resize(2 * std::size_t(R) * std::size_t(C));
    range_items.resize(std::size_t(R));
    auto conv_and_sums = [&](int r, int b0, int b1, Workspace& w) -> Status {
      float* shift = range_shift.data() + std::size_t(r) * std::size_t(C);
      double* sums = range_sums.data() + 2 * std::size_t(r) * std::size_t(C);
      range_items[std::size_t(r)] = b1 - b0;
      for (int a = b0; a < b1; a += slice) {
        const int e = std::min(b1, a + slice);
        EDGENN_TRY(conv_items(a, e, w));
        if (a == b0)
          for (int c = 0; c < C; ++c) shift[c] = zt.at(b0, 0, 0, c);
        EDGENN_TRY(kernels::batchnorm_channel_sums<Arch>(items(ConstTensor(zt), a, e), shift, sums, sums + C, a > b0));
      }
      return Status::ok();
    };
    EDGENN_TRY(R == 1 ? conv_and_sums(0, 0, n, ws) : par->for_ranges(n, conv_and_sums));
    bn_sum.assign(std::size_t(C), 0.0);
    bn_sum2.assign(std::size_t(C), 0.0);
    const float* shift0 = range_shift.data();
    for (int r = 0; r < R; ++r) {
      const float* shift = range_shift.data() + std::size_t(r) * std::size_t(C);
      const double* sums = range_sums.data() + 2 * std::size_t(r) * std::size_t(C);
      const double m = double(range_items[std::size_t(r)]) * double(pixels);
      for (int c = 0; c < C; ++c) {  // sums of x - shift0 from those of x - shift (d = 0 for range 0)
        const double d = double(shift[c]) - double(shift0[c]);
        bn_sum[std::size_t(c)] += sums[c] + m * d;
        bn_sum2[std::size_t(c)] += sums[C + c] + d * (2.0 * sums[c] + m * d);
      }
    }
    const kernels::BatchNormTrainParams bn{l.gamma.data(), l.beta.data(), l.bn_eps, bn_momentum};
    EDGENN_TRY(kernels::batchnorm_statistics(C, index_t(n) * pixels, shift0, bn_sum.data(), bn_sum2.data(), bn,
                                             mean.data(), invstd.data(), l.running_mean.data(), l.running_var.data()));
    pending = PendingNormalize{true, y, residual ? *residual : ConstTensor()};
    return defer ? Status::ok() : finish_normalize(ws);
  }

  // y's items [b0, b1) of a deferred forward: y = act(BN(z) [+ residual]) (the residual add
  // and the activation are fused into the normalisation). No-op without a deferred forward.
  Status normalize_items(int b0, int b1) {
    if (!pending.on) return Status::ok();
    const nn::ConvBN<Arch>& l = *layer;
    const ConstTensor zt = ConstTensor::dense(z.data(), pending.y.shape);
    return kernels::batchnorm_normalize<Arch>(items(zt, b0, b1), mean.data(), invstd.data(), l.gamma.data(),
                                              l.beta.data(), items(pending.y, b0, b1), l.p.activation,
                                              pending.residual.data ? items(pending.residual, b0, b1) : ConstTensor());
  }
  // All of y of a deferred forward (nothing without one).
  Status finish_normalize(Workspace& ws) {
    if (!pending.on) return Status::ok();
    EDGENN_TRY(for_batch_ranges(par, pending.y.n(), ws,
                                [&](int b0, int b1, Workspace&) { return normalize_items(b0, b1); }));
    pending.on = false;
    return Status::ok();
  }

  int sum_ranges(int n) const { return threaded(n) ? par->ranges(n) : 1; }
  // Zeroes the backward's per-range BN sums of a batch of n.
  void clear_backward_sums(int n) {
    grad_range_sums.assign(2 * std::size_t(sum_ranges(n)) * std::size_t(layer->cout), 0.0);
  }
  // Adds the BN backward sums over items [a, a + dy.n()) of the batch (dy, y: those items'
  // views; y is read only for a mask after a residual add) into batch range r's, after the
  // activation's backward applied to dy in place. Items are added in order, so slices give
  // the sums of one pass over the range.
  Status add_backward_sums(int r, int a, ConstTensor y, Tensor dy) {
    const nn::ConvBN<Arch>& l = *layer;
    const int C = l.cout;
    double* s = grad_range_sums.data() + 2 * std::size_t(r) * std::size_t(C);
    const ConstTensor zs = ConstTensor::dense(z.data() + index_t(a) * dy.shape.pixels() * dy.c(), dy.shape);
    const Activation act = l.p.activation;
    if (act == Activation::none || !had_residual)
      return kernels::batchnorm_backward_sums_from_input<Arch>(zs, l.gamma.data(), l.beta.data(), act, dy,
                                                               mean.data(), invstd.data(), s, s + C, true);
    return kernels::batchnorm_backward_sums<Arch>(zs, y, act, dy, mean.data(), invstd.data(), s, s + C, true);
  }
  // bn_sum, bn_sum2 = the ranges' sums, added in range order.
  void reduce_backward_sums(int n) {
    const int C = layer->cout;
    bn_sum.assign(std::size_t(C), 0.0);
    bn_sum2.assign(std::size_t(C), 0.0);
    for (int r = 0; r < sum_ranges(n); ++r) {
      const double* s = grad_range_sums.data() + 2 * std::size_t(r) * std::size_t(C);
      for (int c = 0; c < C; ++c) {
        bn_sum[std::size_t(c)] += s[c];
        bn_sum2[std::size_t(c)] += s[C + c];
      }
    }
  }

  // From dy (overwritten in place with the gradient at the activation's input, which is also
  // the residual's gradient): parameter gradients (written) and, if dx.data, dx (written or
  // added with accumulate_dx).
  // producer: the training layer whose output is x (a block's first convolution, or the
  // previous unit's last); its BN backward sums are taken on each slice of dx right after
  // this layer writes it, while the slice is in cache, instead of in a pass of its own (dx
  // must then be all of its output gradient). dx_plus: added to each slice of dx after this
  // layer's part (a residual's gradient), before the producer reads it.
  Status backward(ConstTensor x, ConstTensor y, Tensor dy, Tensor dx, bool accumulate_dx, Workspace& ws,
                  ConvBNTrain* producer = nullptr, const ConstTensor* dx_plus = nullptr) {
    nn::ConvBN<Arch>& l = *layer;
    const int n = dy.n();
    // With BN in training mode the activation's backward is fused into the BN sums pass.
    if (l.p.activation != Activation::none && !trains_bn()) {
      EDGENN_TRY(for_batch_ranges(par, n, ws, [&](int b0, int b1, Workspace&) {
        const Tensor d = items(dy, b0, b1);
        return kernels::activation_backward<Arch>(items(y, b0, b1), d, d, l.p.activation);
      }));
    }
    const kernels::Conv2dParams p = conv_params();
    auto input_grad = [&](ConstTensor g) {
      return for_batch_ranges(par, n, ws, [&](int b0, int b1, Workspace& w) {
        return kernels::conv2d_backward_input<Arch>(p, items(g, b0, b1), gw, items(dx, b0, b1), w, accumulate_dx);
      });
    };
    if (dx.data) {
      EDGENN_CHECK(dx.c() == l.cin - dx_from, Error::shape_mismatch,
                   "ConvBNTrain: input gradient has the wrong number of channels");
      EDGENN_CHECK(dx_from == 0 || (!frozen && l.p.groups == 1), Error::unsupported,
                   "ConvBNTrain: a partial input gradient needs a trainable layer without groups");
    }
    EDGENN_CHECK(!dx_plus || (dx.data && dx_plus->shape == dx.shape), Error::shape_mismatch,
                 "ConvBNTrain: the gradient added to dx has another shape than dx");
    if (frozen && !dx_plus) return dx.data ? input_grad(dy) : Status::ok();
    if (frozen) {
      EDGENN_TRY(input_grad(dy));
      return for_batch_ranges(par, n, ws, [&](int b0, int b1, Workspace&) {
        const Tensor d = items(dx, b0, b1);
        return kernels::add<Arch>(d, items(*dx_plus, b0, b1), d);
      });
    }
    const bool bn_here = trains_bn();
    float* dz_mem = bn_here ? detail::sized(tmp().dz, dz_floats(dy.shape)) : nullptr;
    const ConstTensor zt = bn_here ? ConstTensor::dense(z.data(), dy.shape) : ConstTensor();
    if (bn_here) {
      // The BN backward's steps (batchnorm_train_backward), the sums per batch range added
      // in range order; the sums pass also applies the activation's backward to dy. Without
      // a residual the activation's mask is recomputed from z (y is not read).
      if (!sums_from_consumer) {
        clear_backward_sums(n);
        if (!threaded(n)) {
          EDGENN_TRY(add_backward_sums(0, 0, y, dy));
        } else {
          EDGENN_TRY(par->for_ranges(n, [&](int r, int b0, int b1, Workspace&) {
            return add_backward_sums(r, b0, y.data ? items(y, b0, b1) : ConstTensor(), items(dy, b0, b1));
          }));
        }
      }
      sums_from_consumer = false;
      reduce_backward_sums(n);
      for (int c = 0; c < l.cout; ++c) {
        dbeta[std::size_t(c)] = float(bn_sum[std::size_t(c)]);
        dgamma[std::size_t(c)] = float(bn_sum2[std::size_t(c)]);
      }
    }
    // The input gradient's weights, packed before the batch loop.
    const int cin = l.cin - dx_from;
    const bool wino_dx = dx.data && winograd(cin);
    kernels::PackedWeights ww;
    if (dx.data) {
      const float* w = l.weight.data();
      if (dx_from > 0) {  // the OHWI weights of input channels [dx_from, cin)
        const index_t rows = index_t(l.cout) * p.taps();
        weight_slice.resize(std::size_t(rows) * std::size_t(cin));
        for (index_t r = 0; r < rows; ++r)
          std::copy_n(w + r * l.cin + dx_from, cin, weight_slice.data() + r * cin);
        w = weight_slice.data();
      }
      if (wino_dx) {
        float* dst = detail::sized(tmp().winograd, kernels::winograd_packed_floats<Arch>(l.cout, cin));
        ww = kernels::pack_winograd_weights<Arch>(cin, l.cout, w, kernels::WinogradPass::input_grad, nullptr, dst);
      } else {
        detail::sized(packed_grad, kernels::conv_input_grad_packed_floats<Arch>(p, cin, l.cout));
        gw = kernels::pack_conv_input_grad_weights<Arch>(p, cin, l.cout, w, packed_grad.data());
      }
    }
    // The producer's sums come from the slices of dx below.
    const bool feed_producer = producer && producer->trains_bn() && dx.data && !accumulate_dx;
    if (feed_producer) {
      EDGENN_CHECK(producer->par == par && dx.shape == x.shape, Error::invalid_argument,
                   "ConvBNTrain: the producer's sums need its whole output gradient, split like this layer's");
      producer->clear_backward_sums(n);
      producer->sums_from_consumer = true;
    }
    // Items [b0, b1) of batch range r slice by slice, while a slice's dz is still in cache: the
    // BN input gradient dz, the slice's share of dW (added into dwr, dbr), of dx and of the
    // producer's BN sums.
    const index_t count = index_t(n) * dy.shape.pixels();
    const int slice = bn_here ? dz_slice_items(dy.shape) : n;  // without a BN there is no dz to keep
    const index_t item_floats = dy.shape.pixels() * dy.shape.c;
    auto items_backward = [&](int r, int b0, int b1, float* dwr, float* dbr, Workspace& w) -> Status {
      for (int a = b0; a < b1; a += slice) {
        const int e = std::min(b1, a + slice);
        ConstTensor g = items(ConstTensor(dy), a, e);
        if (bn_here) {  // dz of the slice, in range r's slice of the transient buffer
          const Tensor dzs = Tensor::dense(dz_mem + index_t(r) * slice * item_floats,
                                           Shape{e - a, dy.shape.h, dy.shape.w, dy.shape.c});
          EDGENN_TRY(kernels::batchnorm_backward_input<Arch>(items(zt, a, e), g, mean.data(), invstd.data(),
                                                             l.gamma.data(), bn_sum.data(), bn_sum2.data(), count,
                                                             dzs));
          g = dzs;
        }
        const ConstTensor xs = items(x, a, e);
        EDGENN_TRY(winograd() ? kernels::winograd_weight_grad<Arch>(xs, g, dwr, dbr, w, a > b0)
                              : kernels::conv2d_backward_weights<Arch>(p, xs, g, dwr, dbr, w, a > b0));
        if (wino_dx) {
          EDGENN_TRY(kernels::winograd_conv3x3<Arch>(g, ww, items(dx, a, e), w, accumulate_dx));
        } else if (dx.data) {
          EDGENN_TRY(kernels::conv2d_backward_input<Arch>(p, g, gw, items(dx, a, e), w, accumulate_dx));
        }
        if (dx_plus) {
          const Tensor d = items(dx, a, e);
          EDGENN_TRY(kernels::add<Arch>(d, items(*dx_plus, a, e), d));
        }
        if (feed_producer) EDGENN_TRY(producer->add_backward_sums(r, a, xs, items(dx, a, e)));
      }
      return Status::ok();
    };
    float* db = l.bias.empty() ? nullptr : dbias.data();
    if (!threaded(n)) return items_backward(0, 0, n, dweight.data(), db, ws);
    // Range 0 writes dW, the others their scratch; then the partial sums in range order.
    const std::size_t wn = dweight.size(), bn = db ? dbias.size() : 0;
    EDGENN_TRY(par->for_ranges(n, [&](int r, int b0, int b1, Workspace& w) {
      float* dwr = r == 0 ? dweight.data() : par->scratch<float>(r, wn + bn);
      float* dbr = !db ? nullptr : r == 0 ? db : dwr + wn;
      return items_backward(r, b0, b1, dwr, dbr, w);
    }));
    for (int r = 1; r < par->ranges(n); ++r) {
      const float* part = par->scratch<float>(r, wn + bn);
      for (std::size_t i = 0; i < wn; ++i) dweight[i] += part[i];
      for (std::size_t i = 0; i < bn; ++i) dbias[i] += part[wn + i];
    }
    return Status::ok();
  }
};

template <class Arch = simd::default_arch>
struct BasicBlockTrain {
  nn::BasicBlock<Arch>* block = nullptr;
  ConvBNTrain<Arch> c1, c2, ds;
  LargeVector<float> mid;  // conv1's output: conv2's input and conv1's activation mask

  void set_parallel(Parallel* p) {
    c1.set_parallel(p);
    c2.set_parallel(p);
    ds.set_parallel(p);
  }
  void set_winograd(bool on) {
    c1.set_winograd(on);
    c2.set_winograd(on);
    ds.set_winograd(on);
  }
  void set_slice_bytes(std::size_t b) {
    c1.set_slice_bytes(b);
    c2.set_slice_bytes(b);
    ds.set_slice_bytes(b);
  }
  void set_transient(TransientBuffers* t) {
    c1.set_transient(t);
    c2.set_transient(t);
    ds.set_transient(t);
  }

  Status bind(nn::BasicBlock<Arch>& b, bool freeze) {
    block = &b;
    EDGENN_TRY(c1.bind(b.conv1, freeze));
    EDGENN_TRY(c2.bind(b.conv2, freeze));
    if (b.downsample) EDGENN_TRY(ds.bind(*b.downsample, freeze));
    return Status::ok();
  }
  bool has_ds() const { return block->downsample.has_value(); }
  // The input gradient covers input channels [c, cin) only (see ConvBNTrain::dx_from).
  void set_input_grad_from(int c) {
    c1.dx_from = c;
    ds.dx_from = c;
  }
  Shape output_shape(Shape in) const { return block->output_shape(in); }

  template <class F>
  void visit_slots(F&& f) {
    c1.visit_slots(f);
    c2.visit_slots(f);
    if (has_ds()) ds.visit_slots(f);
  }
  std::size_t workspace_bytes(Shape in) const {
    const Shape m = block->conv1.output_shape(in);
    std::size_t b = std::max(c1.workspace_bytes(in), c2.workspace_bytes(m));
    return has_ds() ? std::max(b, ds.workspace_bytes(in)) : b;
  }
  index_t saved_floats(Shape in) const {
    const Shape m = block->conv1.output_shape(in);
    return c1.saved_floats(in) + c2.saved_floats(m) + m.size() + (has_ds() ? ds.saved_floats(in) : 0);  // + mid
  }
  TransientSizes transient_sizes(Shape in) const {
    const Shape m = block->conv1.output_shape(in);
    TransientSizes t = c1.transient_sizes(in).max(c2.transient_sizes(m));
    if (has_ds()) t = t.max(ds.transient_sizes(in)).max(TransientSizes{0, 0, output_shape(in).size()});
    return t.max(TransientSizes{0, m.size(), 0});
  }

  // input_from, defer: as ConvBNTrain::forward's (conv1 reads x first and makes all of it
  // final). With defer conv1's output is normalised inside conv2's forward, and conv2's is
  // left to the next unit.
  Status forward(ConstTensor x, Tensor out, Workspace& ws, ConvBNTrain<Arch>* input_from = nullptr,
                 bool defer = false) {
    const Shape ms = block->conv1.output_shape(x.shape);
    const Tensor m = Tensor::dense(detail::sized(mid, ms.size()), ms);
    EDGENN_TRY(c1.forward(x, m, ws, nullptr, input_from, defer));
    ConstTensor res = x;
    if (has_ds()) {
      const Tensor s = Tensor::dense(detail::sized(c1.tmp().shortcut, out.shape.size()), out.shape);
      EDGENN_TRY(ds.forward(x, s, ws));
      res = s;
    }
    // res (x, or the shortcut buffer, which no unit writes before the next block's conv1
    // has read all of this block's output) stays alive while conv2's output is deferred.
    return c2.forward(m, out, ws, &res, &c1, defer);
  }
  // The layer whose output is the block's (deferred after forward with `defer`).
  ConvBNTrain<Arch>& output_layer() { return c2; }

  // dout is overwritten (it becomes the gradient at the add).
  // producer: as ConvBNTrain::backward's, the layer whose output is x; with an identity
  // shortcut its BN sums are taken on conv1's dx slices once the shortcut's gradient is
  // added to them (a projection shortcut adds its part in a pass of its own after conv1).
  Status backward(ConstTensor x, ConstTensor out, Tensor dout, Tensor dx, bool accumulate_dx, Workspace& ws,
                  ConvBNTrain<Arch>* producer = nullptr) {
    const Shape ms = block->conv1.output_shape(x.shape);
    const Tensor dm = Tensor::dense(detail::sized(c1.tmp().dmid, ms.size()), ms);
    const ConstTensor mid_v = ConstTensor::dense(mid.data(), ms);
    EDGENN_TRY(c2.backward(mid_v, out, dout, dm, false, ws, &c1));
    if (has_ds()) {
      EDGENN_TRY(c1.backward(x, mid_v, dm, dx, accumulate_dx, ws));
      // The shortcut has no activation: its backward reads no output (the shortcut buffer is
      // transient) and leaves dout as it is.
      return ds.backward(x, ConstTensor(), dout, dx, true, ws);
    }
    if (!dx.data) return c1.backward(x, mid_v, dm, dx, accumulate_dx, ws);
    const ConstTensor through = ConstTensor(dout).channels(c1.dx_from, dx.c());
    return c1.backward(x, mid_v, dm, dx, accumulate_dx, ws, producer, &through);
  }
};

// Global average pooling + linear layer.
template <class Arch = simd::default_arch>
struct PoolLinearTrain {
  nn::PoolLinear<Arch>* head = nullptr;
  bool frozen = false;
  std::vector<float> dweight, dbias, pooled, dpooled, packed, packed_grad;
  kernels::PackedWeights pw;
  kernels::ConvInputGradWeights gw;

  Status bind(nn::PoolLinear<Arch>& h, bool freeze) {
    head = &h;
    frozen = freeze;
    dweight.assign(h.weight.size(), 0.0f);
    dbias.assign(h.bias.size(), 0.0f);
    return Status::ok();
  }
  template <class F>
  void visit_slots(F&& f) {
    if (frozen) return;
    f(ParamSlot{head->name + ".weight", head->weight.data(), dweight.data(), head->weight.size(), true});
    f(ParamSlot{head->name + ".bias", head->bias.data(), dbias.data(), head->bias.size(), true});
  }
  std::size_t workspace_bytes(Shape) const {
    return std::max(kernels::fc_backward_input_workspace_bytes(head->out_features),
                    kernels::fc_backward_weights_workspace_bytes<Arch>(head->in_features, head->out_features));
  }

  Status forward(ConstTensor x, float* logits, index_t ldl) {
    const nn::PoolLinear<Arch>& h = *head;
    EDGENN_CHECK(x.c() == h.in_features, Error::shape_mismatch, "PoolLinearTrain: feature channels differ");
    detail::sized(pooled, index_t(x.n()) * h.in_features);
    EDGENN_TRY(kernels::global_avg_pool<Arch>(x, pooled.data(), h.in_features));
    detail::sized(packed, kernels::fc_packed_floats<Arch>(h.in_features, h.out_features));
    pw = kernels::pack_fc_weights<Arch>(h.in_features, h.out_features, h.weight.data(), h.bias.data(), packed.data());
    return kernels::fully_connected<Arch>(x.n(), pooled.data(), h.in_features, pw, logits, ldl);
  }

  Status backward(const float* dlogits, index_t ldd, Tensor dx, bool accumulate_dx, Workspace& ws) {
    const nn::PoolLinear<Arch>& h = *head;
    const int n = dx.n();
    if (!frozen)
      EDGENN_TRY(kernels::fully_connected_backward_weights<Arch>(n, h.in_features, h.out_features, pooled.data(),
                                                                 h.in_features, dlogits, ldd, dweight.data(),
                                                                 dbias.data(), ws));
    if (!dx.data) return Status::ok();
    detail::sized(dpooled, index_t(n) * h.in_features);
    detail::sized(packed_grad, kernels::fc_input_grad_packed_floats<Arch>(h.in_features, h.out_features));
    gw = kernels::pack_fc_input_grad_weights<Arch>(h.in_features, h.out_features, h.weight.data(), packed_grad.data());
    EDGENN_TRY(kernels::fully_connected_backward_input<Arch>(n, dlogits, ldd, gw, dpooled.data(), h.in_features, ws));
    return kernels::global_avg_pool_backward<Arch>(dpooled.data(), h.in_features, dx, accumulate_dx);
  }
};

// A chain of ConvBN / BasicBlock units (nn::Network), keeping every unit's output.
template <class Arch = simd::default_arch>
struct NetworkTrain {
  using Unit = std::variant<ConvBNTrain<Arch>, BasicBlockTrain<Arch>>;
  nn::Network<Arch>* net = nullptr;
  std::vector<Unit> units;
  std::vector<LargeVector<float>> acts;  // output of unit i
  LargeVector<float> grad[2];
  std::vector<Shape> shapes;             // shapes[0] = input, shapes[i + 1] = output of unit i
  // One set for all units (heap: its address survives moves of the network).
  std::unique_ptr<TransientBuffers> transient = std::make_unique<TransientBuffers>();

  void set_parallel(Parallel* p) {
    for (auto& u : units) std::visit([&](auto& t) { t.set_parallel(p); }, u);
  }
  // Batch slices of at most this many bytes of a layer's BN input (ConvBNTrain::slice_bytes).
  void set_slice_bytes(std::size_t b) {
    for (auto& u : units) std::visit([&](auto& t) { t.set_slice_bytes(b); }, u);
  }
  // Winograd F(4x4, 3x3) for the layers where it is faster (on by default; off: the direct
  // kernels everywhere, e.g. to compare the two).
  void set_winograd(bool on) {
    for (auto& u : units) std::visit([&](auto& t) { t.set_winograd(on); }, u);
  }
  // backward's dx covers input channels [c, cin) only: the gradient of a concat's trainable
  // part, without computing the rest.
  void set_input_grad_from(int c) {
    if (units.empty()) return;
    std::visit(
        [&](auto& t) {
          if constexpr (std::is_same_v<std::decay_t<decltype(t)>, ConvBNTrain<Arch>>) t.dx_from = c;
          else t.set_input_grad_from(c);
        },
        units.front());
  }

  Status bind(nn::Network<Arch>& n, bool freeze) {
    net = &n;
    units.clear();
    units.reserve(n.blocks.size());  // units hold no pointers to each other; reserve keeps binds cheap
    for (auto& b : n.blocks) {
      if (auto* c = std::get_if<nn::ConvBN<Arch>>(&b)) {
        ConvBNTrain<Arch> t;
        EDGENN_TRY(t.bind(*c, freeze));
        units.emplace_back(std::move(t));
      } else if (auto* bb = std::get_if<nn::BasicBlock<Arch>>(&b)) {
        BasicBlockTrain<Arch> t;
        EDGENN_TRY(t.bind(*bb, freeze));
        units.emplace_back(std::move(t));
      } else {
        return Status(Error::unsupported, "NetworkTrain: inverted residual blocks are not trainable yet");
      }
    }
    for (auto& u : units) std::visit([&](auto& t) { t.set_transient(transient.get()); }, u);
    acts.assign(units.size(), {});
    return Status::ok();
  }
  template <class F>
  void visit_slots(F&& f) {
    for (auto& u : units) std::visit([&](auto& t) { t.visit_slots(f); }, u);
  }
  Shape output_shape(Shape in) const { return net->output_shape(in); }
  std::size_t workspace_bytes(Shape in) const {
    std::size_t b = 0;
    for (std::size_t i = 0; i < units.size(); ++i) {
      b = std::max(b, std::visit([&](const auto& t) { return t.workspace_bytes(in); }, units[i]));
      in = std::visit([&](const auto& blk) { return blk.output_shape(in); }, net->blocks[i]);
    }
    return b;
  }
  // Floats kept by forward + backward at input shape `in` (activations, saved BN inputs,
  // gradient buffers): the training memory beside the parameters and the workspace.
  index_t activation_floats(Shape in) const {
    index_t n = 0, largest = 0;
    TransientSizes t;
    for (std::size_t i = 0; i < units.size(); ++i) {
      n += std::visit([&](const auto& u) { return u.saved_floats(in); }, units[i]);
      t = t.max(std::visit([&](const auto& u) { return u.transient_sizes(in); }, units[i]));
      in = std::visit([&](const auto& blk) { return blk.output_shape(in); }, net->blocks[i]);
      n += in.size();
      largest = std::max(largest, in.size());
    }
    return n + 2 * largest + t.total();  // + the gradient ping-pong, + the shared transients
  }

  ConstTensor output() const { return ConstTensor::dense(acts.back().data(), shapes.back()); }

  // Passes fused across units (on by default; off: passes of their own, e.g. to compare the
  // two): a unit's BN normalisation inside the next unit's first convolution (forward), and
  // its BN backward sums on the slices of the next unit's input gradient (backward).
  bool fuse_units = true;
  void set_cross_unit_fusion(bool on) { fuse_units = on; }
  // The layer whose output is unit k's output.
  ConvBNTrain<Arch>* output_layer(std::size_t k) {
    return std::visit(
        [](auto& t) -> ConvBNTrain<Arch>* {
          if constexpr (std::is_same_v<std::decay_t<decltype(t)>, ConvBNTrain<Arch>>) return &t;
          else return &t.output_layer();
        },
        units[k]);
  }

  Status forward(ConstTensor x, Workspace& ws) {
    shapes.assign(1, x.shape);
    ConstTensor in = x;
    ConvBNTrain<Arch>* pending = nullptr;  // the layer whose output `in` is, if deferred
    for (std::size_t i = 0; i < units.size(); ++i) {
      const Shape os = std::visit([&](const auto& blk) { return blk.output_shape(in.shape); }, net->blocks[i]);
      shapes.push_back(os);
      const Tensor y = Tensor::dense(detail::sized(acts[i], os.size()), os);
      EDGENN_TRY(std::visit(
          [&](auto& t) -> Status {
            if constexpr (std::is_same_v<std::decay_t<decltype(t)>, ConvBNTrain<Arch>>)
              return t.forward(in, y, ws, nullptr, pending, fuse_units);
            else return t.forward(in, y, ws, pending, fuse_units);
          },
          units[i]));
      pending = output_layer(i);
      in = y;
    }
    return pending ? pending->finish_normalize(ws) : Status::ok();
  }

  // dout (output-shaped, overwritten) → parameter gradients and, if dx.data, the input gradient.
  // dout must not be output(): the last unit's activation backward reads the output.
  Status backward(ConstTensor x, Tensor dout, Tensor dx, bool accumulate_dx, Workspace& ws) {
    Tensor g = dout;
    for (std::size_t k = units.size(); k-- > 0;) {
      const ConstTensor in = k == 0 ? x : ConstTensor::dense(acts[k - 1].data(), shapes[k]);
      const ConstTensor out = ConstTensor::dense(acts[k].data(), shapes[k + 1]);
      Tensor gin = k == 0 ? dx : Tensor::dense(detail::sized(grad[k % 2], shapes[k].size()), shapes[k]);
      const bool acc = k == 0 && accumulate_dx;
      ConvBNTrain<Arch>* producer = fuse_units && k > 0 ? output_layer(k - 1) : nullptr;
      EDGENN_TRY(std::visit([&](auto& t) { return t.backward(in, out, g, gin, acc, ws, producer); }, units[k]));
      g = gin;
    }
    return Status::ok();
  }
};

// A classifier (ResNet): features + head, trained end to end.
template <class Arch = simd::default_arch>
struct ClassifierTrain {
  NetworkTrain<Arch> features;
  PoolLinearTrain<Arch> head;
  LargeVector<float> dfeat;

  Status bind(nn::Classifier<Arch>& c, bool freeze = false) {
    EDGENN_TRY(features.bind(c.features, freeze));
    return head.bind(c.head, freeze);
  }
  void set_parallel(Parallel* p) { features.set_parallel(p); }
  void set_winograd(bool on) { features.set_winograd(on); }
  void set_slice_bytes(std::size_t b) { features.set_slice_bytes(b); }
  template <class F>
  void visit_slots(F&& f) {
    features.visit_slots(f);
    head.visit_slots(f);
  }
  std::size_t workspace_bytes(Shape in) const {
    return std::max(features.workspace_bytes(in), head.workspace_bytes(features.output_shape(in)));
  }
  Status forward(ConstTensor x, float* logits, index_t ldl, Workspace& ws) {
    EDGENN_TRY(features.forward(x, ws));
    return head.forward(features.output(), logits, ldl);
  }
  Status backward(ConstTensor x, const float* dlogits, index_t ldd, Workspace& ws) {
    const Shape fs = features.shapes.back();
    const Tensor df = Tensor::dense(detail::sized(dfeat, fs.size()), fs);
    EDGENN_TRY(head.backward(dlogits, ldd, df, false, ws));
    return features.backward(x, df, Tensor(), false, ws);
  }
};

}  // namespace edgenn::train
