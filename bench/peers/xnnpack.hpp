// XNNPACK (Debian libxnnpack-dev 2022 API) behind the benchmark's Runner interface.
// Operators are created (weights packed) and set up (indirection buffers built) in the
// constructor; run() is xnn_run_operator alone. A null threadpool runs on the caller's
// thread, i.e. single-threaded.
#pragma once

#include <xnnpack.h>

#include <cmath>
#include <string>

#include "../runner.hpp"

namespace edgenn_bench::xnnpack {

inline void check(xnn_status s, const char* what) {
  if (s != xnn_status_success) throw std::runtime_error(std::string("XNNPACK: ") + what + " failed (status " +
                                                        std::to_string(int(s)) + ")");
}

inline void initialize() { check(xnn_initialize(nullptr), "xnn_initialize"); }

class Op : public Runner {
 public:
  explicit Op(const LayerData& d) : y_(d.output_size()) {
    const Layer& l = d.layer;
    const float lo = -INFINITY, hi = INFINITY;
    const std::size_t n = std::size_t(d.batch);
    switch (l.family) {
      case Family::conv3x3:
      case Family::conv1x1:
      case Family::depthwise: {
        // Depthwise as groups = C with one input and one output channel per group: the
        // kernel is then [C][kh][kw][1], our OHWI layout, and XNNPACK picks its dwconv path.
        const uint32_t g = uint32_t(l.groups());
        const uint32_t p = uint32_t(l.pad), k = uint32_t(l.k), s = uint32_t(l.stride);
        check(xnn_create_convolution2d_nhwc_f32(p, p, p, p, k, k, s, s, 1, 1, g, std::size_t(l.cin) / g,
                                                std::size_t(l.cout) / g, std::size_t(l.cin), std::size_t(l.cout),
                                                d.w.data(), d.b.data(), lo, hi, 0, &op_.op),
              "create convolution2d");
        check(xnn_setup_convolution2d_nhwc_f32(op_.op, n, std::size_t(l.h), std::size_t(l.w), d.x.data(), y_.data(),
                                               nullptr),
              "setup convolution2d");
        break;
      }
      case Family::fc:
        check(xnn_create_fully_connected_nc_f32(std::size_t(l.cin), std::size_t(l.cout), std::size_t(l.cin),
                                                std::size_t(l.cout), d.w.data(), d.b.data(), lo, hi, 0, &op_.op),
              "create fully_connected");
        check(xnn_setup_fully_connected_nc_f32(op_.op, n, d.x.data(), y_.data(), nullptr), "setup fully_connected");
        break;
      case Family::gap:
        check(xnn_create_global_average_pooling_nwc_f32(std::size_t(l.cin), std::size_t(l.cin), std::size_t(l.cin),
                                                        lo, hi, 0, &op_.op),
              "create global_average_pooling");
        check(xnn_setup_global_average_pooling_nwc_f32(op_.op, n, std::size_t(l.h) * l.w, d.x.data(), y_.data(),
                                                       nullptr),
              "setup global_average_pooling");
        break;
      case Family::maxpool: {
        const uint32_t p = uint32_t(l.pad), k = uint32_t(l.k), s = uint32_t(l.stride);
        check(xnn_create_max_pooling2d_nhwc_f32(p, p, p, p, k, k, s, s, 1, 1, std::size_t(l.cin), std::size_t(l.cin),
                                                std::size_t(l.cin), lo, hi, 0, &op_.op),
              "create max_pooling2d");
        check(xnn_setup_max_pooling2d_nhwc_f32(op_.op, n, std::size_t(l.h), std::size_t(l.w), d.x.data(), y_.data(),
                                               nullptr),
              "setup max_pooling2d");
        break;
      }
      case Family::add: {
        const std::size_t shape[4] = {n, std::size_t(l.h), std::size_t(l.w), std::size_t(l.cin)};
        check(xnn_create_add_nd_f32(lo, hi, 0, &op_.op), "create add_nd");
        check(xnn_setup_add_nd_f32(op_.op, 4, shape, 4, shape, d.x.data(), d.x2.data(), y_.data(), nullptr),
              "setup add_nd");
        break;
      }
      case Family::softmax:
        check(xnn_create_softmax_nc_f32(std::size_t(l.cin), std::size_t(l.cin), std::size_t(l.cin), 0, &op_.op),
              "create softmax");
        check(xnn_setup_softmax_nc_f32(op_.op, n, d.x.data(), y_.data(), nullptr), "setup softmax");
        break;
    }
  }
  void run() override { check(xnn_run_operator(op_.op, nullptr), "run"); }
  const float* output() const override { return y_.data(); }

 private:
  // A member, so the operator is deleted even when the constructor throws after creating it.
  struct Handle {
    xnn_operator_t op = nullptr;
    Handle() = default;
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle() {
      if (op) xnn_delete_operator(op);
    }
  };
  Buffer y_;
  Handle op_;
};

}  // namespace edgenn_bench::xnnpack
