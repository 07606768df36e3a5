// edgenn weights files: load a model (with full validation) and save one.
//
// A weights file is a safetensors container (docs/weights_format.md) whose metadata holds
//   edgenn.format      "1"
//   edgenn.model       JSON: arch, hparams, input spec (shape, normalisation), class names, layouts
//   edgenn.router      JSON (MEANet only, optional): calibrated routing thresholds
//   edgenn.provenance  JSON: how the weights were made (training command, seed, accuracies, ...)
// and whose tensors carry PyTorch state_dict names: convolution weights in OHWI, linear
// weights [out][in], batch-norm vectors. A batch norm folded by the converter appears as a
// convolution bias without BN tensors.
//
// Every problem is an error naming the file and the tensor or key: unknown format version,
// unknown architecture, bad hyperparameters, missing/unexpected tensors, wrong shapes or
// dtypes, non-finite values (plus everything SafeTensors::parse rejects).
#pragma once

#include <memory>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "edgenn/io/safetensors.hpp"
#include "edgenn/nn/meanet.hpp"
#include "edgenn/nn/mobilenet_v2.hpp"
#include "edgenn/nn/resnet.hpp"

namespace edgenn::io {

inline constexpr int kWeightsFormatVersion = 1;

struct InputSpec {
  int height = 28, width = 28, channels = 1;
  std::vector<float> mean{0.0f}, std{1.0f};  // per channel: x = (pixel / 255 - mean) / std
  Shape shape(int batch) const { return Shape{batch, height, width, channels}; }
};

struct ModelInfo {
  std::string arch;             // resnet_cifar | mobilenet_v2 | meanet
  nlohmann::json hparams;       // as written by the converter
  InputSpec input;
  std::vector<std::string> classes;
  nlohmann::json router;        // null when absent
  nlohmann::json provenance;    // null when absent
  std::map<std::string, std::string> extra_metadata;  // any other keys, preserved on save
};

template <class Arch = simd::default_arch>
struct LoadedModel {
  ModelInfo info;
  std::unique_ptr<nn::Classifier<Arch>> classifier;  // resnet_cifar, mobilenet_v2
  std::unique_ptr<nn::MEANet<Arch>> meanet;          // meanet
};

namespace detail {

// Typed access to JSON fields with errors naming the key.
struct JsonReader {
  std::string where;
  std::string error;

  const nlohmann::json* field(const nlohmann::json& j, const char* key) {
    if (!error.empty()) return nullptr;
    if (!j.is_object() || !j.contains(key)) {
      error = where + ": missing key '" + key + "'";
      return nullptr;
    }
    return &j[key];
  }
  int get_int(const nlohmann::json& j, const char* key, int lo, int hi) {
    const auto* v = field(j, key);
    if (!v) return 0;
    if (!v->is_number_integer() || v->get<long long>() < lo || v->get<long long>() > hi) {
      error = where + ": '" + key + "' must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
      return 0;
    }
    return v->get<int>();
  }
  float get_float(const nlohmann::json& j, const char* key) {
    const auto* v = field(j, key);
    if (!v) return 0;
    if (!v->is_number() || !std::isfinite(v->get<double>())) {
      error = where + ": '" + key + "' must be a finite number";
      return 0;
    }
    return v->get<float>();
  }
  std::vector<std::pair<int, int>> get_blocks(const nlohmann::json& j, const char* key) {
    std::vector<std::pair<int, int>> out;
    const auto* v = field(j, key);
    if (!v) return out;
    if (!v->is_array()) {
      error = where + ": '" + key + "' must be a list of [channels, stride]";
      return out;
    }
    for (const auto& b : *v) {
      if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer() ||
          b[0].get<long long>() < 1 || b[0].get<long long>() > 65536 || b[1].get<long long>() < 1 ||
          b[1].get<long long>() > 2) {
        error = where + ": '" + key + "' entries must be [channels, stride] with stride 1 or 2";
        return out;
      }
      out.emplace_back(b[0].get<int>(), b[1].get<int>());
    }
    return out;
  }
};

inline Result<nn::ResNetCifarConfig> parse_resnet(const nlohmann::json& hp, const std::string& where) {
  JsonReader r{where + " hparams", {}};
  nn::ResNetCifarConfig c;
  c.depth = r.get_int(hp, "depth", 8, 1000);
  c.width = r.get_int(hp, "width", 1, 4096);
  c.in_ch = r.get_int(hp, "in_ch", 1, 64);
  c.num_classes = r.get_int(hp, "num_classes", 1, 100000);
  if (!r.error.empty()) return fail(Error::corrupt_data, r.error);
  if (const Status st = c.validate(); !st) return fail(Error::corrupt_data, where + ": " + st.message());
  return c;
}

inline Result<nn::MobileNetV2Config> parse_mbv2(const nlohmann::json& hp, const std::string& where) {
  JsonReader r{where + " hparams", {}};
  nn::MobileNetV2Config c;
  c.width_mult = r.get_float(hp, "width_mult");
  c.stem_channels = r.get_int(hp, "stem_channels", 1, 4096);
  c.stem_stride = r.get_int(hp, "stem_stride", 1, 2);
  c.last_channel = r.get_int(hp, "last_channel", 1, 65536);
  c.in_ch = r.get_int(hp, "in_ch", 1, 64);
  c.num_classes = r.get_int(hp, "num_classes", 1, 100000);
  const auto* s = r.field(hp, "settings");
  if (!r.error.empty()) return fail(Error::corrupt_data, r.error);
  if (!(c.width_mult > 0.0f && c.width_mult <= 16.0f))
    return fail(Error::corrupt_data, where + " hparams: 'width_mult' must be in (0, 16]");
  if (!s->is_array()) return fail(Error::corrupt_data, where + " hparams: 'settings' must be a list of [t, c, n, s]");
  c.settings.clear();
  for (const auto& e : *s) {
    if (!e.is_array() || e.size() != 4) return fail(Error::corrupt_data, where + " hparams: settings entries are [t, c, n, s]");
    std::array<int, 4> a{};
    for (int i = 0; i < 4; ++i) {
      if (!e[std::size_t(i)].is_number_integer() || e[std::size_t(i)].get<long long>() < 1 ||
          e[std::size_t(i)].get<long long>() > 4096)
        return fail(Error::corrupt_data, where + " hparams: settings entries must be positive integers");
      a[std::size_t(i)] = e[std::size_t(i)].get<int>();
    }
    c.settings.push_back(a);
  }
  if (const Status st = c.validate(); !st) return fail(Error::corrupt_data, where + ": " + st.message());
  return c;
}

inline Result<nn::MEANetConfig> parse_meanet(const nlohmann::json& hp, const std::string& where) {
  JsonReader r{where + " hparams", {}};
  nn::MEANetConfig c;
  const auto* main = r.field(hp, "main");
  if (!r.error.empty()) return fail(Error::corrupt_data, r.error);
  auto m = parse_resnet(*main, where + " (main)");
  if (!m) return m.failure();
  c.main = *m;
  c.adaptive_stem = r.get_int(hp, "adaptive_stem", 1, 4096);
  c.adaptive_blocks = r.get_blocks(hp, "adaptive_blocks");
  c.extension_blocks = r.get_blocks(hp, "extension_blocks");
  const auto* hard = r.field(hp, "hard_classes");
  if (!r.error.empty()) return fail(Error::corrupt_data, r.error);
  if (!hard->is_array()) return fail(Error::corrupt_data, where + " hparams: 'hard_classes' must be a list");
  for (const auto& h : *hard) {
    if (!h.is_number_integer()) return fail(Error::corrupt_data, where + " hparams: hard classes must be integers");
    c.hard_classes.push_back(h.get<int>());
  }
  if (const Status st = c.validate(); !st) return fail(Error::corrupt_data, where + ": " + st.message());
  return c;
}

// Bind the file's tensors to every layer; names in the model are `strip` + file name.
template <class Model>
Outcome bind_tensors(Model& model, const SafeTensors& st, std::set<std::string>& used, const std::string& strip = "") {
  std::string error;
  auto file_name = [&](const std::string& n) { return n.compare(0, strip.size(), strip) == 0 ? n.substr(strip.size()) : n; };
  auto load = [&](const std::string& name, const std::vector<int>& shape, std::vector<float>& dst) {
    if (!error.empty()) return;
    const std::string fname = file_name(name);
    std::vector<std::int64_t> s64(shape.begin(), shape.end());
    auto v = st.f32(fname, s64);
    if (!v) {
      error = v.error();
      return;
    }
    dst = std::move(*v);
    used.insert(fname);
  };
  model.visit_layers([&](auto& layer) {
    using L = std::decay_t<decltype(layer)>;
    if constexpr (!L::is_conv) {
      layer.visit_params([&](const nn::ParamRef& p) { load(p.name, p.shape, *p.data); });
    } else {
      // ConvBN: weight always; BN either as four tensors or folded into a conv bias.
      const std::string wname = layer.conv_name + ".weight";
      load(wname, {layer.cout, layer.p.kernel_h, layer.p.kernel_w, layer.cin / layer.p.groups}, layer.weight);
      const bool file_bias = st.contains(file_name(layer.conv_name + ".bias"));
      const bool file_bn = !layer.bn_name.empty() && st.contains(file_name(layer.bn_name + ".running_mean"));
      if (file_bias) load(layer.conv_name + ".bias", {layer.cout}, layer.bias);
      else layer.bias.clear();
      if (!layer.bn_name.empty()) {
        if (file_bn) {
          load(layer.bn_name + ".weight", {layer.cout}, layer.gamma);
          load(layer.bn_name + ".bias", {layer.cout}, layer.beta);
          load(layer.bn_name + ".running_mean", {layer.cout}, layer.running_mean);
          load(layer.bn_name + ".running_var", {layer.cout}, layer.running_var);
          for (float v : layer.running_var)
            if (v < 0.0f && error.empty())
              error = st.source() + ": tensor '" + file_name(layer.bn_name + ".running_var") + "' has a negative variance";
        } else if (file_bias) {
          layer.gamma.clear();  // folded by the converter
          layer.beta.clear();
          layer.running_mean.clear();
          layer.running_var.clear();
        } else if (error.empty()) {
          error = st.source() + ": tensor '" + file_name(layer.bn_name + ".running_mean") +
                  "' is missing (and no folded '" + file_name(layer.conv_name + ".bias") + "' either)";
        }
      }
    }
  });
  if (!error.empty()) return fail(Error::corrupt_data, error);
  return success();
}

inline Outcome check_no_unexpected(const SafeTensors& st, const std::set<std::string>& used) {
  for (const auto& t : st.tensors())
    if (!used.count(t.name))
      return fail(Error::corrupt_data, st.source() + ": unexpected tensor '" + t.name + "' (not part of the model)");
  return success();
}

inline Result<ModelInfo> parse_info(const SafeTensors& st) {
  const std::string& src = st.source();
  const auto& md = st.metadata();
  auto get = [&](const char* k) -> const std::string* {
    auto it = md.find(k);
    return it == md.end() ? nullptr : &it->second;
  };
  const std::string* fmt = get("edgenn.format");
  if (!fmt) return fail(Error::corrupt_data, src + ": not an edgenn weights file (metadata 'edgenn.format' missing)");
  if (*fmt != std::to_string(kWeightsFormatVersion))
    return fail(Error::unsupported, src + ": weights format version '" + *fmt + "' is not supported (this build reads " +
                                         std::to_string(kWeightsFormatVersion) + ")");
  const std::string* model = get("edgenn.model");
  if (!model) return fail(Error::corrupt_data, src + ": metadata 'edgenn.model' missing");
  const nlohmann::json j = nlohmann::json::parse(*model, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(Error::corrupt_data, src + ": metadata 'edgenn.model' is not a JSON object");
  ModelInfo info;
  JsonReader r{src + " edgenn.model", {}};
  const auto* arch = r.field(j, "arch");
  const auto* hp = r.field(j, "hparams");
  const auto* input = r.field(j, "input");
  const auto* classes = r.field(j, "classes");
  if (!r.error.empty()) return fail(Error::corrupt_data, r.error);
  if (!arch->is_string()) return fail(Error::corrupt_data, src + ": 'arch' must be a string");
  info.arch = arch->get<std::string>();
  info.hparams = *hp;
  info.input.height = r.get_int(*input, "height", 1, 8192);
  info.input.width = r.get_int(*input, "width", 1, 8192);
  info.input.channels = r.get_int(*input, "channels", 1, 64);
  const auto* mean = r.field(*input, "mean");
  const auto* stdv = r.field(*input, "std");
  if (!r.error.empty()) return fail(Error::corrupt_data, r.error);
  auto floats = [&](const nlohmann::json& a, std::vector<float>& out, bool positive) {
    if (!a.is_array() || a.size() != std::size_t(info.input.channels)) return false;
    out.clear();
    for (const auto& v : a) {
      if (!v.is_number() || !std::isfinite(v.get<double>()) || (positive && v.get<double>() <= 0)) return false;
      out.push_back(v.get<float>());
    }
    return true;
  };
  if (!floats(*mean, info.input.mean, false) || !floats(*stdv, info.input.std, true))
    return fail(Error::corrupt_data, src + ": input 'mean'/'std' must list one finite number per channel (std > 0)");
  if (!classes->is_array()) return fail(Error::corrupt_data, src + ": 'classes' must be a list of names");
  for (const auto& c : *classes) {
    if (!c.is_string()) return fail(Error::corrupt_data, src + ": class names must be strings");
    info.classes.push_back(c.get<std::string>());
  }
  if (const std::string* rt = get("edgenn.router")) {
    info.router = nlohmann::json::parse(*rt, nullptr, false);
    if (info.router.is_discarded() || !info.router.is_object())
      return fail(Error::corrupt_data, src + ": metadata 'edgenn.router' is not a JSON object");
  }
  if (const std::string* pv = get("edgenn.provenance")) {
    info.provenance = nlohmann::json::parse(*pv, nullptr, false);
    if (info.provenance.is_discarded()) return fail(Error::corrupt_data, src + ": metadata 'edgenn.provenance' is not JSON");
  }
  for (const auto& [k, v] : md)
    if (k != "edgenn.format" && k != "edgenn.model" && k != "edgenn.router" && k != "edgenn.provenance")
      info.extra_metadata[k] = v;
  return info;
}

}  // namespace detail

// Load and validate a weights file, build the model it describes and prepare it for inference.
template <class Arch = simd::default_arch>
Result<LoadedModel<Arch>> load_model(const std::string& path) {
  auto st = SafeTensors::load(path);
  if (!st) return st.failure();
  auto info = detail::parse_info(*st);
  if (!info) return info.failure();
  LoadedModel<Arch> m;
  m.info = std::move(*info);
  const std::string where = path + " (" + m.info.arch + ")";
  std::set<std::string> used;
  int num_classes = 0;
  if (m.info.arch == "resnet_cifar" || m.info.arch == "mobilenet_v2") {
    if (m.info.arch == "resnet_cifar") {
      auto cfg = detail::parse_resnet(m.info.hparams, where);
      if (!cfg) return cfg.failure();
      if (cfg->in_ch != m.info.input.channels) return fail(Error::corrupt_data, where + ": in_ch differs from the input channels");
      m.classifier = std::make_unique<nn::Classifier<Arch>>(nn::build_resnet_cifar<Arch>(*cfg));
    } else {
      auto cfg = detail::parse_mbv2(m.info.hparams, where);
      if (!cfg) return cfg.failure();
      if (cfg->in_ch != m.info.input.channels) return fail(Error::corrupt_data, where + ": in_ch differs from the input channels");
      m.classifier = std::make_unique<nn::Classifier<Arch>>(nn::build_mobilenet_v2<Arch>(*cfg));
    }
    if (auto b = detail::bind_tensors(*m.classifier, *st, used); !b) return b.failure();
    num_classes = m.classifier->num_classes();
    if (m.classifier->feature_shape(m.info.input.shape(1)).h <= 0)
      return fail(Error::corrupt_data, where + ": input too small for the network");
  } else if (m.info.arch == "meanet") {
    auto cfg = detail::parse_meanet(m.info.hparams, where);
    if (!cfg) return cfg.failure();
    if (cfg->main.in_ch != m.info.input.channels) return fail(Error::corrupt_data, where + ": in_ch differs from the input channels");
    m.meanet = std::make_unique<nn::MEANet<Arch>>(nn::build_meanet<Arch>(*cfg));
    const Shape in = m.info.input.shape(1);
    const Shape ms = m.meanet->main.feature_shape(in), as = m.meanet->adaptive.output_shape(in);
    if (ms.h != as.h || ms.w != as.w)
      return fail(Error::corrupt_data, where + ": adaptive block output " + std::to_string(as.h) + "x" + std::to_string(as.w) +
                                           " does not match the main features " + std::to_string(ms.h) + "x" + std::to_string(ms.w));
    if (auto b = detail::bind_tensors(*m.meanet, *st, used); !b) return b.failure();
    num_classes = m.meanet->num_classes();
  } else {
    return fail(Error::unsupported, path + ": unknown architecture '" + m.info.arch + "'");
  }
  if (auto u = detail::check_no_unexpected(*st, used); !u) return u.failure();
  if (int(m.info.classes.size()) != num_classes)
    return fail(Error::corrupt_data, where + ": " + std::to_string(m.info.classes.size()) + " class names for " +
                                         std::to_string(num_classes) + " classes");
  const Status prep = m.classifier ? m.classifier->prepare() : m.meanet->prepare();
  if (!prep) return fail(prep.code(), where + ": " + prep.message());
  return m;
}

// Write a model's parameters (as they are: folded or not) and metadata to `path`, atomically.
template <class Model>
Outcome save_model(const std::string& path, const ModelInfo& info, Model& model) {
  std::vector<TensorData> tensors;
  std::vector<std::string> folded;  // convolutions whose batch norm is folded into a bias
  model.visit_layers([&](auto& layer) {
    using L = std::decay_t<decltype(layer)>;
    if constexpr (L::is_conv) {
      if (!layer.bn_name.empty() && !layer.has_bn()) folded.push_back(layer.conv_name);
    }
    layer.visit_params([&](const nn::ParamRef& p) {
      std::vector<std::int64_t> shape(p.shape.begin(), p.shape.end());
      tensors.push_back(TensorData::from_f32(p.name, shape, p.data->data()));
    });
  });
  nlohmann::json model_json = {{"arch", info.arch},
                               {"hparams", info.hparams},
                               {"input",
                                {{"height", info.input.height},
                                 {"width", info.input.width},
                                 {"channels", info.input.channels},
                                 {"mean", info.input.mean},
                                 {"std", info.input.std},
                                 {"layout", "NHWC"}}},
                               {"classes", info.classes},
                               {"layouts", {{"conv", "OHWI"}, {"linear", "OI"}}},
                               {"bn_folded", folded}};
  std::map<std::string, std::string> md = info.extra_metadata;
  md["edgenn.format"] = std::to_string(kWeightsFormatVersion);
  md["edgenn.model"] = model_json.dump();
  if (!info.router.is_null()) md["edgenn.router"] = info.router.dump();
  if (!info.provenance.is_null()) md["edgenn.provenance"] = info.provenance.dump();
  return save_safetensors(path, tensors, md);
}

}  // namespace edgenn::io
