// The MEANet edge runtime: classify one input the way a device would — main block, router,
// extension only when the router says so, cloud only for complex inputs — and account for
// what it cost (MACs actually executed, bytes uploaded, estimated energy, wall latency).
//
// The cloud hop is a callback, so the same runtime serves the ZeroMQ client, tests and an
// edge-only mode. When the cloud fails (timeout, error, no answer), the input is answered by
// the edge's own best guess (the extension's answer for hard inputs, else the main block's)
// and the decision says it fell back and why.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "edgenn/io/model_file.hpp"
#include "edgenn/meanet/calibration.hpp"
#include "edgenn/nn/preprocess.hpp"

namespace edgenn::meanet {

struct CloudReply {
  bool ok = false;
  int cls = -1;
  std::string failure;  // why there is no answer (when !ok)
  std::int64_t bytes_sent = 0;
  std::int64_t bytes_received = 0;
};

// pixels: one image of the model's input size (HWC bytes).
using CloudFn = std::function<CloudReply(const unsigned char* pixels)>;

struct EdgeDecision {
  Exit exit = Exit::main;
  int cls = -1;
  bool fallback = false;  // routed to the cloud, answered by the edge
  std::string fallback_reason;
  Signals main, ext;
  bool extension_ran = false;
  std::int64_t edge_macs = 0;
  std::int64_t bytes_sent = 0;
  double latency_ms = 0;
  double energy_joules = 0;  // estimate
};

template <class Arch = simd::default_arch>
class EdgeRuntime {
 public:
  EdgeRuntime(const nn::MEANet<Arch>& model, io::InputSpec input, RouterConfig router, Costs costs)
      : m_(model), in_(std::move(input)), cfg_(router), costs_(costs) {
    const Shape s = in_.shape(1);
    x_.resize(std::size_t(s.size()));
    concat_.resize(std::size_t(m_.concat_shape(s).size()));
    logits_.resize(std::size_t(m_.num_classes()));
    ext_logits_.resize(std::size_t(m_.num_hard()));
    probs_.resize(std::size_t(std::max(m_.num_classes(), m_.num_hard())));
    mem_.resize(m_.workspace_bytes(s) + kAlignment);
  }

  const RouterConfig& router() const { return cfg_; }
  std::size_t workspace_bytes() const { return mem_.size(); }

  // cloud may be null (edge only: complex inputs fall back at once).
  io::Result<EdgeDecision> classify(const unsigned char* pixels, const CloudFn* cloud) {
    const auto t0 = std::chrono::steady_clock::now();
    EdgeDecision d;
    const Shape s = in_.shape(1);
    const Tensor x = Tensor::dense(x_.data(), s);
    const Tensor cat = Tensor::dense(concat_.data(), m_.concat_shape(s));
    Workspace ws(mem_.data(), mem_.size());
    EDGENN_RESULT_TRY(nn::normalize_pixels(pixels, in_.mean.data(), in_.std.data(), x));
    EDGENN_RESULT_TRY(m_.run_main(x, cat, logits_.data(), m_.num_classes(), ws));
    d.edge_macs = costs_.paths.main_macs;
    d.main = softmax_signals(logits_.data(), m_.num_classes(), probs_.data(), m_.hard_index.data());
    const bool hard = is_hard(cfg_, d.main, m_.hard_index.data(), m_.num_hard(), m_.num_classes());
    auto run_extension = [&]() -> Status {
      EDGENN_TRY(m_.run_extension(x, cat, ext_logits_.data(), m_.num_hard(), ws));
      d.extension_ran = true;
      d.edge_macs += costs_.paths.extension_macs;
      d.ext = softmax_signals(ext_logits_.data(), m_.num_hard(), probs_.data());
      return Status::ok();
    };
    Step step = route_after_main(cfg_, d.main, m_.hard_index.data(), m_.num_hard(), m_.num_classes());
    if (step == Step::run_extension) {
      EDGENN_RESULT_TRY(run_extension());
      step = route_after_extension(cfg_, d.ext);
    }
    if (step == Step::send_to_cloud) {
      d.exit = Exit::cloud;
      CloudReply r;
      if (cloud) {
        r = (*cloud)(pixels);
      } else {
        r.failure = "no cloud configured";
      }
      d.bytes_sent = r.bytes_sent;
      if (r.ok) {
        d.cls = r.cls;
      } else {
        d.fallback = true;
        d.fallback_reason = r.failure;
        if (hard && !d.extension_ran) EDGENN_RESULT_TRY(run_extension());
        d.cls = d.extension_ran ? m_.hard_classes[std::size_t(d.ext.top)] : d.main.top;
      }
    } else if (step == Step::exit_extension) {
      d.exit = Exit::extension;
      d.cls = m_.hard_classes[std::size_t(d.ext.top)];
    } else {
      d.exit = Exit::main;
      d.cls = d.main.top;
    }
    d.energy_joules = costs_.main_joules() + (d.extension_ran ? costs_.extension_joules() : 0.0) +
                      (d.bytes_sent > 0 ? costs_.energy.transmit_joules(d.bytes_sent) : 0.0);
    d.latency_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return d;
  }

 private:
  const nn::MEANet<Arch>& m_;
  io::InputSpec in_;
  RouterConfig cfg_;
  Costs costs_;
  std::vector<float> x_, concat_, logits_, ext_logits_, probs_;
  std::vector<unsigned char> mem_;
};

}  // namespace edgenn::meanet
