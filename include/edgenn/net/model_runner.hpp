// Runs a classifier over blocks of images as they arrive in classify requests: uint8
// pixels are normalised with the model's own mean/std (as in training), float32 inputs are
// used as given. Images of several blocks share a forward pass; passes hold at most
// `max_chunk` images so the workspace is sized once. One runner per thread (it owns its
// workspace); the model itself is shared read-only.
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#include "edgenn/io/model_file.hpp"
#include "edgenn/net/protocol.hpp"
#include "edgenn/nn/preprocess.hpp"

namespace edgenn::net {

struct ImageBlock {
  const void* data = nullptr;  // count images, NHWC
  DType dtype = DType::uint8;  // uint8 pixels or normalised float32
  int count = 0;
};

template <class Arch = simd::default_arch>
class ModelRunner {
 public:
  // `model` must outlive the runner.
  ModelRunner(const nn::Classifier<Arch>& model, io::InputSpec input, int max_chunk)
      : model_(model), input_(std::move(input)), chunk_(std::max(1, max_chunk)) {
    const Shape s = input_.shape(chunk_);
    x_.resize(std::size_t(s.size()));
    mem_.resize(model_.workspace_bytes(s) + kAlignment);
  }

  int num_classes() const { return model_.num_classes(); }
  std::size_t values_per_image() const { return std::size_t(input_.height) * input_.width * input_.channels; }

  // logits: (sum of block counts) rows of num_classes(), in block order.
  Status run(const ImageBlock* blocks, std::size_t nblocks, float* logits) {
    const std::size_t per = values_per_image();
    int filled = 0;
    float* out = logits;
    for (std::size_t b = 0; b < nblocks; ++b) {
      const ImageBlock& blk = blocks[b];
      EDGENN_CHECK(blk.count >= 0 && (blk.data || blk.count == 0), Error::invalid_argument, "ModelRunner: bad block");
      int done = 0;
      while (done < blk.count) {
        const int take = std::min(blk.count - done, chunk_ - filled);
        float* dst = x_.data() + std::size_t(filled) * per;
        if (blk.dtype == DType::uint8) {
          const auto* src = static_cast<const unsigned char*>(blk.data) + std::size_t(done) * per;
          EDGENN_TRY(nn::normalize_pixels(src, input_.mean.data(), input_.std.data(),
                                          Tensor::dense(dst, input_.shape(take))));
        } else if (blk.dtype == DType::float32) {
          // memcpy: the payload frame gives no alignment guarantee for floats.
          std::memcpy(dst, static_cast<const unsigned char*>(blk.data) + std::size_t(done) * per * sizeof(float),
                      std::size_t(take) * per * sizeof(float));
        } else {
          return Status(Error::invalid_argument, "ModelRunner: images are uint8 or float32");
        }
        filled += take;
        done += take;
        if (filled == chunk_) {
          EDGENN_TRY(forward(filled, out));
          out += std::size_t(filled) * std::size_t(num_classes());
          filled = 0;
        }
      }
    }
    if (filled > 0) EDGENN_TRY(forward(filled, out));
    return Status::ok();
  }

 private:
  Status forward(int n, float* out) {
    Workspace ws(mem_.data(), mem_.size());
    return model_.forward(ConstTensor::dense(x_.data(), input_.shape(n)), out, num_classes(), ws);
  }

  const nn::Classifier<Arch>& model_;
  io::InputSpec input_;
  int chunk_;
  std::vector<float> x_;
  std::vector<unsigned char> mem_;
};

}  // namespace edgenn::net
