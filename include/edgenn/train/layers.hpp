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
#pragma once

#include <algorithm>
#include <string>
#include <variant>
#include <vector>

#include "edgenn/kernels/batchnorm_train.hpp"
#include "edgenn/kernels/conv2d_backward.hpp"
#include "edgenn/kernels/elementwise.hpp"
#include "edgenn/kernels/elementwise_backward.hpp"
#include "edgenn/kernels/fully_connected_backward.hpp"
#include "edgenn/kernels/pooling_backward.hpp"
#include "edgenn/nn/classifier.hpp"
#include "edgenn/train/optim.hpp"

namespace edgenn::train {

namespace detail {
inline float* sized(std::vector<float>& v, index_t n) {
  if (v.size() < std::size_t(n)) v.resize(std::size_t(n));
  return v.data();
}
}  // namespace detail

template <class Arch = simd::default_arch>
struct ConvBNTrain {
  nn::ConvBN<Arch>* layer = nullptr;
  bool frozen = false;
  float bn_momentum = 0.1f;  // PyTorch's BatchNorm2d default

  std::vector<float> dweight, dbias, dgamma, dbeta;  // parameter gradients
  std::vector<float> z, dz, mean, invstd;            // BN input, its gradient, batch statistics
  std::vector<float> packed, packed_grad, folded_w, folded_b, zero_bias;
  kernels::PackedWeights pw;
  kernels::ConvInputGradWeights gw;

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

  std::size_t workspace_bytes(Shape in) const {
    const nn::ConvBN<Arch>& l = *layer;
    const kernels::Conv2dParams p = conv_params();
    std::size_t b = kernels::conv2d_workspace_bytes(p, in);
    b = std::max(b, kernels::conv2d_backward_input_workspace_bytes(p, l.cout));
    if (!frozen) b = std::max(b, kernels::conv2d_backward_weights_workspace_bytes<Arch>(p, l.cin, l.cout));
    if (trains_bn()) b = std::max(b, kernels::batchnorm_train_workspace_bytes(l.cout));
    return b;
  }
  // Floats this layer keeps between forward and backward for a batch of shape `in`.
  index_t saved_floats(Shape in) const {
    return trains_bn() ? 2 * layer->output_shape(in).size() : 0;  // z and dz
  }

  // y = act(BN(conv(x)) [+ residual]); training mode unless frozen. The caller keeps x and y
  // alive until backward().
  Status forward(ConstTensor x, Tensor y, Workspace& ws, const ConstTensor* residual = nullptr) {
    nn::ConvBN<Arch>& l = *layer;
    if (frozen) return l.forward(x, y, ws, residual);
    const kernels::Conv2dParams p = conv_params();
    detail::sized(packed, kernels::conv_packed_floats<Arch>(p, l.cin, l.cout));
    pw = kernels::pack_conv_weights<Arch>(p, l.cin, l.cout, l.weight.data(),
                                          l.bias.empty() ? zero_bias.data() : l.bias.data(), packed.data());
    if (!trains_bn()) return kernels::conv2d<Arch>(p, x, pw, y, ws, residual);
    const Tensor zt = Tensor::dense(detail::sized(z, y.shape.size()), y.shape);
    EDGENN_TRY(kernels::conv2d<Arch>(p, x, pw, zt, ws));
    const kernels::BatchNormTrainParams bn{l.gamma.data(), l.beta.data(), l.bn_eps, bn_momentum};
    EDGENN_TRY(kernels::batchnorm_train_forward<Arch>(zt, bn, y, mean.data(), invstd.data(), l.running_mean.data(),
                                                      l.running_var.data(), ws,
                                                      residual ? Activation::none : l.p.activation));
    if (residual) return kernels::add<Arch>(y, *residual, y, l.p.activation);
    return Status::ok();
  }

  // From dy (overwritten in place with the gradient at the activation's input, which is also
  // the residual's gradient): parameter gradients (written) and, if dx.data, dx (written or
  // added with accumulate_dx).
  Status backward(ConstTensor x, ConstTensor y, Tensor dy, Tensor dx, bool accumulate_dx, Workspace& ws) {
    nn::ConvBN<Arch>& l = *layer;
    if (l.p.activation != Activation::none)
      EDGENN_TRY(kernels::activation_backward<Arch>(y, dy, dy, l.p.activation));
    const kernels::Conv2dParams p = conv_params();
    if (frozen) {
      if (!dx.data) return Status::ok();
      return kernels::conv2d_backward_input<Arch>(p, dy, gw, dx, ws, accumulate_dx);
    }
    ConstTensor g = dy;
    if (trains_bn()) {
      const Tensor dzt = Tensor::dense(detail::sized(dz, dy.shape.size()), dy.shape);
      EDGENN_TRY(kernels::batchnorm_train_backward<Arch>(ConstTensor::dense(z.data(), dy.shape), dy, l.gamma.data(),
                                                         mean.data(), invstd.data(), dzt, dgamma.data(), dbeta.data(),
                                                         ws));
      g = dzt;
    }
    EDGENN_TRY(kernels::conv2d_backward_weights<Arch>(p, x, g, dweight.data(), l.bias.empty() ? nullptr : dbias.data(),
                                                      ws));
    if (!dx.data) return Status::ok();
    detail::sized(packed_grad, kernels::conv_input_grad_packed_floats<Arch>(p, l.cin, l.cout));
    gw = kernels::pack_conv_input_grad_weights<Arch>(p, l.cin, l.cout, l.weight.data(), packed_grad.data());
    return kernels::conv2d_backward_input<Arch>(p, g, gw, dx, ws, accumulate_dx);
  }
};

template <class Arch = simd::default_arch>
struct BasicBlockTrain {
  nn::BasicBlock<Arch>* block = nullptr;
  ConvBNTrain<Arch> c1, c2, ds;
  std::vector<float> mid, sc, dmid;

  Status bind(nn::BasicBlock<Arch>& b, bool freeze) {
    block = &b;
    EDGENN_TRY(c1.bind(b.conv1, freeze));
    EDGENN_TRY(c2.bind(b.conv2, freeze));
    if (b.downsample) EDGENN_TRY(ds.bind(*b.downsample, freeze));
    return Status::ok();
  }
  bool has_ds() const { return block->downsample.has_value(); }
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
    index_t n = c1.saved_floats(in) + c2.saved_floats(m) + 2 * m.size();  // mid, dmid
    if (has_ds()) n += ds.saved_floats(in) + output_shape(in).size();     // shortcut output
    return n;
  }

  Status forward(ConstTensor x, Tensor out, Workspace& ws) {
    const Shape ms = block->conv1.output_shape(x.shape);
    const Tensor m = Tensor::dense(detail::sized(mid, ms.size()), ms);
    EDGENN_TRY(c1.forward(x, m, ws));
    ConstTensor res = x;
    if (has_ds()) {
      const Tensor s = Tensor::dense(detail::sized(sc, out.shape.size()), out.shape);
      EDGENN_TRY(ds.forward(x, s, ws));
      res = s;
    }
    return c2.forward(m, out, ws, &res);
  }

  // dout is overwritten (it becomes the gradient at the add).
  Status backward(ConstTensor x, ConstTensor out, Tensor dout, Tensor dx, bool accumulate_dx, Workspace& ws) {
    const Shape ms = block->conv1.output_shape(x.shape);
    const Tensor dm = Tensor::dense(detail::sized(dmid, ms.size()), ms);
    EDGENN_TRY(c2.backward(ConstTensor::dense(mid.data(), ms), out, dout, dm, false, ws));
    EDGENN_TRY(c1.backward(x, ConstTensor::dense(mid.data(), ms), dm, dx, accumulate_dx, ws));
    if (has_ds()) {
      // The shortcut has no activation: backward leaves dout as it is.
      return ds.backward(x, ConstTensor::dense(sc.data(), out.shape), dout, dx, true, ws);
    }
    if (dx.data) return kernels::add<Arch>(dx, dout, dx);
    return Status::ok();
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
  std::vector<std::vector<float>> acts;  // output of unit i
  std::vector<float> grad[2];
  std::vector<Shape> shapes;             // shapes[0] = input, shapes[i + 1] = output of unit i

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
    for (std::size_t i = 0; i < units.size(); ++i) {
      n += std::visit([&](const auto& t) { return t.saved_floats(in); }, units[i]);
      in = std::visit([&](const auto& blk) { return blk.output_shape(in); }, net->blocks[i]);
      n += in.size();
      largest = std::max(largest, in.size());
    }
    return n + 2 * largest;
  }

  ConstTensor output() const { return ConstTensor::dense(acts.back().data(), shapes.back()); }

  Status forward(ConstTensor x, Workspace& ws) {
    shapes.assign(1, x.shape);
    ConstTensor in = x;
    for (std::size_t i = 0; i < units.size(); ++i) {
      const Shape os = std::visit([&](const auto& blk) { return blk.output_shape(in.shape); }, net->blocks[i]);
      shapes.push_back(os);
      const Tensor y = Tensor::dense(detail::sized(acts[i], os.size()), os);
      EDGENN_TRY(std::visit(
          [&](auto& t) -> Status {
            using T = std::decay_t<decltype(t)>;
            if constexpr (std::is_same_v<T, ConvBNTrain<Arch>>) return t.forward(in, y, ws);
            else return t.forward(in, y, ws);
          },
          units[i]));
      in = y;
    }
    return Status::ok();
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
      EDGENN_TRY(std::visit([&](auto& t) { return t.backward(in, out, g, gin, acc, ws); }, units[k]));
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
  std::vector<float> dfeat;

  Status bind(nn::Classifier<Arch>& c, bool freeze = false) {
    EDGENN_TRY(features.bind(c.features, freeze));
    return head.bind(c.head, freeze);
  }
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
