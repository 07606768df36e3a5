// A small ResNet-CIFAR classifier with random (seeded) parameters, written as a regular
// weights file. The cloud tests, the Python client test and the load benchmark use it so
// they need no trained weights: the protocol, batching and throughput do not depend on the
// values of the parameters.
#pragma once

#include <random>
#include <string>

#include "edgenn/io/model_file.hpp"

namespace edgenn::net {

struct SyntheticModelSpec {
  int depth = 8;    // 6n + 2
  int width = 4;    // channels of the first stage
  int classes = 10;
  int height = 28, width_px = 28, channels = 1;
  std::uint64_t seed = 1;
};

inline io::Outcome write_synthetic_model(const std::string& path, const SyntheticModelSpec& spec = {}) {
  const nn::ResNetCifarConfig cfg{spec.depth, spec.width, spec.channels, spec.classes};
  if (const Status st = cfg.validate(); !st) return io::fail(st.code(), st.message());
  auto model = nn::build_resnet_cifar(cfg);
  std::mt19937_64 rng(spec.seed);
  std::uniform_real_distribution<float> weight(-0.5f, 0.5f), variance(0.5f, 1.5f);
  model.visit_layers([&](auto& layer) {
    layer.visit_params([&](const nn::ParamRef& p) {
      const bool var = p.name.find("running_var") != std::string::npos;
      for (auto& v : *p.data) v = var ? variance(rng) : weight(rng);
    });
  });
  io::ModelInfo info;
  info.arch = "resnet_cifar";
  info.hparams = {{"depth", spec.depth}, {"width", spec.width}, {"in_ch", spec.channels}, {"num_classes", spec.classes}};
  info.input.height = spec.height;
  info.input.width = spec.width_px;
  info.input.channels = spec.channels;
  info.input.mean.assign(std::size_t(spec.channels), 0.286f);
  info.input.std.assign(std::size_t(spec.channels), 0.353f);
  for (int i = 0; i < spec.classes; ++i) info.classes.push_back("class" + std::to_string(i));
  info.provenance = {{"note", "synthetic model with random parameters (edgenn::net::write_synthetic_model)"},
                     {"seed", spec.seed}};
  return io::save_model(path, info, model);
}

}  // namespace edgenn::net
