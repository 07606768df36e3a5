// The training steps edgenn-train runs, as objects the trainer, the benchmarks and the tests
// share: forward, softmax cross-entropy, backward into the parameter gradients (the optimizer
// step is the Trainer's).
//
//   ClassifierStep  a classifier (ResNet) trained end to end
//   StageCStep      MEANet stage C: the adaptive block on the raw image, the extension block
//                   and its classifier on concat(cached main-block features, adaptive
//                   features); the main block is frozen and does not run here
//
// Both own their buffers (sized for the largest batch at bind time), a workspace, and with
// threads > 1 a Parallel whose threads split every batch (train/parallel.hpp).
#pragma once

#include <algorithm>
#include <memory>
#include <vector>

#include "edgenn/kernels/loss.hpp"
#include "edgenn/nn/meanet.hpp"
#include "edgenn/train/layers.hpp"

namespace edgenn::train {

// Correct top-1 predictions of n rows of `classes` logits.
inline int count_correct(const float* logits, int n, int classes, const int* labels) {
  int correct = 0;
  for (int i = 0; i < n; ++i) {
    const float* z = logits + std::size_t(i) * classes;
    correct += int(std::max_element(z, z + classes) - z) == labels[i];
  }
  return correct;
}

// Workspace memory and optional threads of a step.
struct StepExec {
  LargeVector<unsigned char> wsmem;
  std::unique_ptr<Parallel> par;

  // One workspace of `bytes` for the serial parts, and per thread the same for the kernels.
  void setup(std::size_t bytes, int threads) {
    wsmem.assign(bytes + kAlignment, 0);
    par.reset();
    if (threads > 1) {
      par = std::make_unique<Parallel>(threads);
      par->reserve_workspace(bytes);
    }
  }
  Workspace workspace() { return Workspace(wsmem.data(), wsmem.size()); }
  std::size_t bytes() const { return wsmem.size() + (par ? par->memory_bytes() : 0); }
};

template <class Arch = simd::default_arch>
class ClassifierStep {
 public:
  // `model` must outlive the step; max_batch images of shape `image` (n ignored).
  Status bind(nn::Classifier<Arch>& model, Shape image, int max_batch, int threads = 1) {
    EDGENN_TRY(net_.bind(model, false));
    classes_ = model.num_classes();
    input_ = Shape{max_batch, image.h, image.w, image.c};
    exec_.setup(net_.workspace_bytes(input_), threads);
    net_.set_parallel(exec_.par.get());
    logits_.assign(std::size_t(max_batch) * classes_, 0.0f);
    dlogits_.assign(logits_.size(), 0.0f);
    return Status::ok();
  }

  template <class F>
  void visit_slots(F&& f) {
    net_.visit_slots(f);
  }

  // Gradients of the mean loss over the n images of x (labels in [0, classes)).
  Status run(ConstTensor x, const int* labels, float* loss, int* correct) {
    const int n = x.n();
    EDGENN_CHECK(n <= input_.n, Error::invalid_argument, "ClassifierStep: batch larger than bound");
    Workspace ws = exec_.workspace();
    EDGENN_TRY(net_.forward(x, logits_.data(), classes_, ws));
    EDGENN_TRY(kernels::softmax_cross_entropy(n, classes_, logits_.data(), classes_, labels, 0.0f, loss,
                                              dlogits_.data(), classes_));
    *correct = count_correct(logits_.data(), n, classes_, labels);
    return net_.backward(x, dlogits_.data(), classes_, ws);
  }

  // Floats of activations and gradient buffers a step keeps, and the bytes of workspaces.
  index_t activation_floats() const { return net_.features.activation_floats(input_); }
  std::size_t workspace_bytes() const { return exec_.bytes(); }

 private:
  ClassifierTrain<Arch> net_;
  StepExec exec_;
  Shape input_{};
  int classes_ = 0;
  std::vector<float> logits_, dlogits_;
};

template <class Arch = simd::default_arch>
class StageCStep {
 public:
  // `m` must outlive the step (its adaptive and extension blocks and the extension head are
  // trained). Main-block features of sample s are features + s * feature_floats, in the
  // main block's output shape (main_feature_shape of one image).
  Status bind(nn::MEANet<Arch>& m, Shape image, int max_batch, const float* features, int threads = 1) {
    EDGENN_TRY(adaptive_.bind(m.adaptive, false));
    EDGENN_TRY(extension_.bind(m.extension, false));
    EDGENN_TRY(head_.bind(m.extension_head, false));
    hard_ = m.num_hard();
    input_ = Shape{max_batch, image.h, image.w, image.c};
    const Shape fs = m.main_feature_shape(Shape{1, image.h, image.w, image.c});
    main_c_ = fs.c;
    feature_floats_ = fs.size();
    features_ = features;
    cat_shape_ = m.concat_shape(input_);
    exec_.setup(std::max({adaptive_.workspace_bytes(input_), extension_.workspace_bytes(cat_shape_),
                          head_.workspace_bytes(extension_.output_shape(cat_shape_))}),
                threads);
    adaptive_.set_parallel(exec_.par.get());
    extension_.set_parallel(exec_.par.get());
    extension_.set_input_grad_from(main_c_);  // the main block's channels of the concat are frozen
    logits_.assign(std::size_t(max_batch) * hard_, 0.0f);
    dlogits_.assign(logits_.size(), 0.0f);
    return Status::ok();
  }

  template <class F>
  void visit_slots(F&& f) {
    adaptive_.visit_slots(f);
    extension_.visit_slots(f);
    head_.visit_slots(f);
  }

  // samples[i]: the feature-cache row of image i; labels in [0, num_hard).
  Status run(ConstTensor x, const int* samples, const int* labels, float* loss, int* correct) {
    const int n = x.n();
    EDGENN_CHECK(n <= input_.n, Error::invalid_argument, "StageCStep: batch larger than bound");
    Workspace ws = exec_.workspace();
    EDGENN_TRY(adaptive_.forward(x, ws));
    const ConstTensor a = adaptive_.output();
    const Shape cs{n, a.h(), a.w(), main_c_ + a.c()};
    cat_.resize(std::size_t(cs.size()));
    for (int i = 0; i < n; ++i) {
      const float* f = features_ + std::size_t(samples[i]) * feature_floats_;
      const float* ap = a.data + std::size_t(i) * a.h() * a.w() * a.c();
      float* dst = cat_.data() + std::size_t(i) * cs.pixels() * cs.c;
      for (index_t p = 0; p < cs.pixels(); ++p) {
        std::copy(f + p * main_c_, f + (p + 1) * main_c_, dst + p * cs.c);
        std::copy(ap + p * a.c(), ap + (p + 1) * a.c(), dst + p * cs.c + main_c_);
      }
    }
    const ConstTensor ct = ConstTensor::dense(cat_.data(), cs);
    EDGENN_TRY(extension_.forward(ct, ws));
    EDGENN_TRY(head_.forward(extension_.output(), logits_.data(), hard_));
    EDGENN_TRY(
        kernels::softmax_cross_entropy(n, hard_, logits_.data(), hard_, labels, 0.0f, loss, dlogits_.data(), hard_));
    *correct = count_correct(logits_.data(), n, hard_, labels);
    // Backward: head -> extension -> the adaptive channels of the concat (the extension's first
    // layers compute no gradient for the frozen main-block channels).
    // A buffer of its own: the extension's backward still reads its output (the ReLU masks).
    const Shape es = extension_.output().shape;
    dext_.resize(std::size_t(es.size()));
    const Tensor de = Tensor::dense(dext_.data(), es);
    EDGENN_TRY(head_.backward(dlogits_.data(), hard_, de, false, ws));
    dadapt_.resize(std::size_t(a.shape.size()));
    EDGENN_TRY(extension_.backward(ct, de, Tensor::dense(dadapt_.data(), a.shape), false, ws));
    return adaptive_.backward(x, Tensor::dense(dadapt_.data(), a.shape), Tensor(), false, ws);
  }

  // Floats of activations and gradient buffers a step keeps (adaptive and extension blocks,
  // the concat, the gradient of its adaptive part), and the bytes of workspaces.
  index_t activation_floats() const {
    const Shape es = extension_.output_shape(cat_shape_);
    return adaptive_.activation_floats(input_) + extension_.activation_floats(cat_shape_) + cat_shape_.size() +
           es.size() + adaptive_.output_shape(input_).size();
  }
  std::size_t workspace_bytes() const { return exec_.bytes(); }

 private:
  NetworkTrain<Arch> adaptive_, extension_;
  PoolLinearTrain<Arch> head_;
  StepExec exec_;
  Shape input_{}, cat_shape_{};
  int hard_ = 0, main_c_ = 0;
  index_t feature_floats_ = 0;
  const float* features_ = nullptr;
  LargeVector<float> cat_, dadapt_, dext_;
  std::vector<float> logits_, dlogits_;
};

}  // namespace edgenn::train
