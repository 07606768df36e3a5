// Residual blocks: ResNet's BasicBlock and MobileNetV2's InvertedResidual.
// Both fuse the residual add (and the ReLU after it) into their last convolution's epilogue.
#pragma once

#include <optional>

#include "edgenn/nn/conv_bn.hpp"

namespace edgenn::nn {

// conv3x3-BN-ReLU, conv3x3-BN, + shortcut (identity or 1x1 conv + BN), ReLU.
template <class Arch = simd::default_arch>
struct BasicBlock {
  ConvBN<Arch> conv1, conv2;  // conv2 carries the post-add ReLU
  std::optional<ConvBN<Arch>> downsample;

  // prefix e.g. "layer2.0" -> conv1, bn1, conv2, bn2, downsample.0, downsample.1
  static BasicBlock make(const std::string& prefix, int cin, int cout, int stride) {
    BasicBlock b;
    b.conv1 = make_conv_bn<Arch>(prefix + ".conv1", prefix + ".bn1", cin, cout, 3, stride, 1, Activation::relu);
    b.conv2 = make_conv_bn<Arch>(prefix + ".conv2", prefix + ".bn2", cout, cout, 3, 1, 1, Activation::relu);
    if (stride != 1 || cin != cout)
      b.downsample = make_conv_bn<Arch>(prefix + ".downsample.0", prefix + ".downsample.1", cin, cout, 1, stride, 1,
                                        Activation::none);
    return b;
  }
  template <class F>
  void visit_layers(F&& f) {
    f(conv1);
    f(conv2);
    if (downsample) f(*downsample);
  }
  Shape output_shape(Shape in) const { return conv2.output_shape(conv1.output_shape(in)); }
  std::int64_t macs(Shape in) const {
    return conv1.macs(in) + conv2.macs(conv1.output_shape(in)) + (downsample ? downsample->macs(in) : 0);
  }

  Status forward(ConstTensor in, Tensor out, Workspace& ws) const {
    WorkspaceScope scope(ws);
    const Shape mid_shape = conv1.output_shape(in.shape);
    float* mid = ws.take<float>(std::size_t(mid_shape.size()));
    EDGENN_TRY(ws.status());
    // Each convolution takes (and returns) its own small scratch after `mid`.
    EDGENN_TRY(conv1.forward(in, Tensor::dense(mid, mid_shape), ws));
    if (downsample) {
      // out = shortcut(in), then out = relu(conv2(mid) + out) in place.
      EDGENN_TRY(downsample->forward(in, out, ws));
      const ConstTensor acc = out;
      EDGENN_TRY(conv2.forward(Tensor::dense(mid, mid_shape), out, ws, &acc));
    } else {
      EDGENN_TRY(conv2.forward(Tensor::dense(mid, mid_shape), out, ws, &in));
    }
    return ws.status();
  }
};

// [1x1 expand-BN-ReLU6] - 3x3 depthwise-BN-ReLU6 - 1x1 project-BN, + input when shapes allow.
template <class Arch = simd::default_arch>
struct InvertedResidual {
  std::optional<ConvBN<Arch>> expand;
  ConvBN<Arch> depthwise, project;
  bool residual = false;

  // prefix e.g. "features.3" -> conv.0 (expand), conv.1 (dw), conv.2/conv.3 (project conv/BN);
  // without expansion: conv.0 (dw), conv.1/conv.2 (project).
  static InvertedResidual make(const std::string& prefix, int cin, int cout, int stride, int expand_ratio) {
    InvertedResidual b;
    const int hidden = cin * expand_ratio;
    int i = 0;
    if (expand_ratio != 1) {
      b.expand = make_conv_bn<Arch>(prefix + ".conv.0.0", prefix + ".conv.0.1", cin, hidden, 1, 1, 1, Activation::relu6);
      i = 1;
    }
    const std::string dw = prefix + ".conv." + std::to_string(i);
    b.depthwise = make_conv_bn<Arch>(dw + ".0", dw + ".1", hidden, hidden, 3, stride, hidden, Activation::relu6);
    b.project = make_conv_bn<Arch>(prefix + ".conv." + std::to_string(i + 1), prefix + ".conv." + std::to_string(i + 2),
                                   hidden, cout, 1, 1, 1, Activation::none);
    b.residual = stride == 1 && cin == cout;
    return b;
  }
  template <class F>
  void visit_layers(F&& f) {
    if (expand) f(*expand);
    f(depthwise);
    f(project);
  }
  Shape output_shape(Shape in) const {
    const Shape e = expand ? expand->output_shape(in) : in;
    return project.output_shape(depthwise.output_shape(e));
  }
  std::int64_t macs(Shape in) const {
    const Shape e = expand ? expand->output_shape(in) : in;
    return (expand ? expand->macs(in) : 0) + depthwise.macs(e) + project.macs(depthwise.output_shape(e));
  }

  Status forward(ConstTensor in, Tensor out, Workspace& ws) const {
    WorkspaceScope scope(ws);
    ConstTensor x = in;
    if (expand) {
      const Shape es = expand->output_shape(in.shape);
      float* e = ws.take<float>(std::size_t(es.size()));
      EDGENN_TRY(ws.status());
      EDGENN_TRY(expand->forward(in, Tensor::dense(e, es), ws));
      x = ConstTensor::dense(e, es);
    }
    const Shape ds = depthwise.output_shape(x.shape);
    float* d = ws.take<float>(std::size_t(ds.size()));
    EDGENN_TRY(ws.status());
    EDGENN_TRY(depthwise.forward(x, Tensor::dense(d, ds), ws));
    EDGENN_TRY(project.forward(ConstTensor::dense(d, ds), out, ws, residual ? &in : nullptr));
    return ws.status();
  }
};

}  // namespace edgenn::nn
