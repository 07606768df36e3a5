// Batched inference over many images on a thread pool (host builds): images are split
// into chunks, each thread runs its chunks with its own workspace. Used by the evaluation
// tool, the cloud server and the benchmarks.
#pragma once

#include <memory>
#include <vector>

#include "edgenn/io/model_file.hpp"
#include "edgenn/nn/preprocess.hpp"
#include "edgenn/runtime/thread_pool.hpp"

namespace edgenn::runtime {

template <class Arch = simd::default_arch>
class BatchClassifier {
 public:
  // `model` must outlive this object.
  BatchClassifier(const nn::Classifier<Arch>& model, io::InputSpec input, int threads, int chunk = 64)
      : model_(model), input_(std::move(input)), pool_(threads), chunk_(chunk < 1 ? 1 : chunk) {
    const Shape s = input_.shape(chunk_);
    ws_bytes_ = model_.workspace_bytes(s);
    for (int t = 0; t < pool_.size(); ++t) {
      mem_.emplace_back(ws_bytes_ + kAlignment);
      x_.emplace_back(std::size_t(s.size()));
    }
  }

  int num_classes() const { return model_.num_classes(); }
  std::size_t pixels_per_image() const { return std::size_t(input_.height) * input_.width * input_.channels; }

  // logits: n rows of num_classes(); pixels: n images of pixels_per_image() bytes.
  Status run(const unsigned char* pixels, int n, float* logits) {
    const int chunks = int(div_up(n, chunk_));
    std::vector<Status> status(static_cast<std::size_t>(chunks));
    pool_.parallel_for(chunks, [&](int c) {
      const int t = c % pool_.size();
      const int b0 = c * chunk_, nb = std::min(chunk_, n - b0);
      const Shape s = input_.shape(nb);
      Tensor x = Tensor::dense(x_[std::size_t(t)].data(), s);
      Status st = nn::normalize_pixels(pixels + std::size_t(b0) * pixels_per_image(), input_.mean.data(),
                                       input_.std.data(), x);
      if (st) {
        Workspace ws(mem_[std::size_t(t)].data(), mem_[std::size_t(t)].size());
        st = model_.forward(x, logits + std::size_t(b0) * num_classes(), num_classes(), ws);
      }
      status[std::size_t(c)] = st;
    });
    for (const Status& s : status) EDGENN_TRY(s);
    return Status::ok();
  }

  std::size_t workspace_bytes_per_thread() const { return ws_bytes_; }

 private:
  const nn::Classifier<Arch>& model_;
  io::InputSpec input_;
  ThreadPool pool_;
  int chunk_;
  std::size_t ws_bytes_ = 0;
  std::vector<std::vector<unsigned char>> mem_;
  std::vector<std::vector<float>> x_;
};

}  // namespace edgenn::runtime
