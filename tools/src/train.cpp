// edgenn-train: training on the device with the engine's own kernels.
//
//   edgenn-train resnet --out resnet20_engine.safetensors [--depth 20 --width 16 --epochs 40 ...]
//
// trains the main block from scratch (tools/train_reference.py's `main` recipe), and
//   edgenn-train meanet --main weights/resnet20_main.safetensors --cloud weights/cloud_resnet20x2.safetensors
//                       --out meanet_edge.safetensors [--epochs 10 --lr 0.05 --batch 128 ...]
//
// MEANet stages B and C (shared/specs/meanet.md §3.1), the recipe of tools/train_reference.py's
// `meanet` preset: stage B picks the hard classes (the fraction of classes with the lowest
// main-block accuracy on the validation split); stage C trains the adaptive and extension
// blocks on the hard-class training samples with the main block frozen, its features computed
// once per (unaugmented) sample and cached; SGD momentum 0.9, cosine lr per step, weight decay,
// random crop (pad 2) and flip on the adaptive block's input, cross-entropy over the hard
// classes. Then the router thresholds are calibrated on the validation split (as
// edgenn-calibrate does) and a weights file the demo loads is written
// (tools/demo.sh --edge OUT). --checkpoint makes the run resumable (re-run the same command).
#include <chrono>
#include <cstdio>
#include <limits>
#include <random>
#include <thread>

#include <CLI/CLI.hpp>

#include "edgenn/io.hpp"
#include "edgenn/kernels/loss.hpp"
#include "edgenn/meanet/config_json.hpp"
#include "edgenn/meanet/observations.hpp"
#include "edgenn/train/steps.hpp"
#include "edgenn/train/trainer.hpp"

using namespace edgenn;
using Arch = simd::default_arch;

namespace {

// PyTorch's default Conv2d/Linear init (kaiming_uniform with a = √5): U(±1/√fan_in).
void init_default(std::vector<float>& v, int fan_in, std::mt19937_64& rng) {
  const double bound = 1.0 / std::sqrt(double(fan_in));
  for (auto& x : v) x = float((double(rng() >> 11) * 0x1.0p-53 * 2.0 - 1.0) * bound);
}

// Fashion-MNIST, as tools/pyref/data.py (normalisation constants, class names).
constexpr float kFashionMean = 0.2860f, kFashionStd = 0.3530f;
const std::vector<std::string> kFashionClasses = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                  "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

struct Batches {
  const io::ImageSet& set;
  const io::InputSpec& in;
  std::vector<float> x;
  void fill(const std::vector<int>& idx, int b0, int nb) {
    const int hw = set.height * set.width;
    x.resize(std::size_t(nb) * hw);
    for (int i = 0; i < nb; ++i) {
      const unsigned char* p = set.image(idx[std::size_t(b0 + i)]);
      for (int k = 0; k < hw; ++k) x[std::size_t(i) * hw + k] = (p[k] / 255.0f - in.mean[0]) / in.std[0];
    }
  }
};

// Per-class accuracy of a classifier on a split (counted at the true class, as the reference).
std::vector<double> per_class_accuracy(const nn::Classifier<Arch>& c, const io::InputSpec& in, const io::ImageSet& s,
                                       int classes) {
  std::vector<int> idx(static_cast<std::size_t>(s.count));
  for (int i = 0; i < s.count; ++i) idx[std::size_t(i)] = i;
  Batches b{s, in, {}};
  const int B = 250;
  std::vector<unsigned char> mem(c.workspace_bytes(in.shape(B)) + kAlignment);
  Workspace ws(mem.data(), mem.size());
  std::vector<float> logits(std::size_t(B) * classes);
  std::vector<int> correct(static_cast<std::size_t>(classes)), count(static_cast<std::size_t>(classes));
  for (int b0 = 0; b0 < s.count; b0 += B) {
    const int nb = std::min(B, s.count - b0);
    b.fill(idx, b0, nb);
    if (Status st = c.forward(ConstTensor::dense(b.x.data(), in.shape(nb)), logits.data(), classes, ws); !st) {
      std::fprintf(stderr, "edgenn-train: %s\n", st.message());
      std::exit(1);
    }
    for (int i = 0; i < nb; ++i) {
      const float* z = logits.data() + std::size_t(i) * classes;
      const int pred = int(std::max_element(z, z + classes) - z), y = s.labels[std::size_t(b0 + i)];
      ++count[std::size_t(y)];
      correct[std::size_t(y)] += pred == y;
    }
  }
  std::vector<double> acc(static_cast<std::size_t>(classes));
  for (int k = 0; k < classes; ++k) acc[std::size_t(k)] = count[std::size_t(k)] ? double(correct[std::size_t(k)]) / count[std::size_t(k)] : 0.0;
  return acc;
}

// Overall accuracy: per-class accuracies weighted by the class counts of the split.
double overall_accuracy(const nn::Classifier<Arch>& c, const io::InputSpec& in, const io::ImageSet& s, int classes) {
  const auto acc = per_class_accuracy(c, in, s, classes);
  std::vector<int> count(static_cast<std::size_t>(classes));
  for (int i = 0; i < s.count; ++i) ++count[std::size_t(s.labels[std::size_t(i)])];
  double correct = 0;
  for (int k = 0; k < classes; ++k) correct += acc[std::size_t(k)] * count[std::size_t(k)];
  return s.count ? correct / s.count : 0.0;
}

// Accuracy of the extension classifier on the samples whose true class is hard (inference
// path: BN folded with the running statistics).
double hard_accuracy(nn::MEANet<Arch> m, const io::InputSpec& in, const io::ImageSet& s) {
  if (Status st = m.prepare(); !st) return -1;
  std::vector<int> idx;
  for (int i = 0; i < s.count; ++i)
    if (m.is_hard(s.labels[std::size_t(i)])) idx.push_back(i);
  Batches b{s, in, {}};
  const int B = 250, C = m.num_classes(), H = m.num_hard();
  std::vector<unsigned char> mem(m.workspace_bytes(in.shape(B)) + kAlignment);
  Workspace ws(mem.data(), mem.size());
  std::vector<float> logits(std::size_t(B) * C), ext(std::size_t(B) * H);
  int correct = 0;
  for (int b0 = 0; b0 < int(idx.size()); b0 += B) {
    const int nb = std::min(B, int(idx.size()) - b0);
    b.fill(idx, b0, nb);
    const ConstTensor x = ConstTensor::dense(b.x.data(), in.shape(nb));
    std::vector<float> cat(std::size_t(m.concat_shape(x.shape).size()));
    const Tensor ct = Tensor::dense(cat.data(), m.concat_shape(x.shape));
    if (!m.run_main(x, ct, logits.data(), C, ws) || !m.run_extension(x, ct, ext.data(), H, ws)) return -1;
    for (int i = 0; i < nb; ++i) {
      const float* z = ext.data() + std::size_t(i) * H;
      correct += int(std::max_element(z, z + H) - z) == m.hard_index[s.labels[std::size_t(idx[std::size_t(b0 + i)])]];
    }
  }
  return idx.empty() ? 0.0 : double(correct) / double(idx.size());
}

int fail_msg(const std::string& m) {
  std::fprintf(stderr, "edgenn-train: %s\n", m.c_str());
  return 1;
}

int run_meanet(const std::string& main_path, const std::string& cloud_path, const std::string& out_path,
               const std::string& data_dir, double hard_fraction, train::TrainerConfig tc, int max_train, int threads) {
  const auto started = std::chrono::steady_clock::now();
  auto loaded = io::load_model(main_path);
  if (!loaded) return fail_msg(loaded.error());
  if (!loaded->classifier || loaded->info.arch != "resnet_cifar")
    return fail_msg(main_path + " is not a ResNet classifier (the main block)");
  const io::ModelInfo main_info = loaded->info;
  auto tr_set = io::load_fashion_mnist(data_dir, io::Split::train);
  auto va_set = io::load_fashion_mnist(data_dir, io::Split::val);
  auto te_set = io::load_fashion_mnist(data_dir, io::Split::test);
  if (!tr_set || !va_set || !te_set) return fail_msg("cannot read Fashion-MNIST from " + data_dir);
  nn::Classifier<Arch>& main = *loaded->classifier;
  if (Status st = main.prepare(); !st) return fail_msg(st.message());
  const int C = main.num_classes();

  // Stage B.
  const auto acc = per_class_accuracy(main, main_info.input, *va_set, C);
  std::vector<int> order(static_cast<std::size_t>(C));
  for (int c = 0; c < C; ++c) order[std::size_t(c)] = c;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return acc[std::size_t(a)] < acc[std::size_t(b)]; });
  const int H = std::max(1, int(C * hard_fraction));
  const std::vector<int> hard(order.begin(), order.begin() + H);
  std::fprintf(stderr, "stage B: main per-class val accuracy");
  for (int c = 0; c < C; ++c) std::fprintf(stderr, " %d:%.4f", c, acc[std::size_t(c)]);
  std::fprintf(stderr, "\nstage B: hard classes (increasing accuracy):");
  for (int c : hard) std::fprintf(stderr, " %d", c);
  std::fprintf(stderr, "\n");

  // The MEANet: the frozen main block from the file (names under "main."), fresh adaptive and
  // extension blocks (the reference preset's shape).
  auto main_cfg = io::detail::parse_resnet(main_info.hparams, main_path);
  if (!main_cfg) return fail_msg(main_cfg.error());
  nn::MEANetConfig cfg;
  cfg.main = *main_cfg;
  cfg.hard_classes = hard;
  if (Status st = cfg.validate(); !st) return fail_msg(st.message());
  nn::MEANet<Arch> m = nn::build_meanet<Arch>(cfg);
  m.main = main;
  m.main.visit_layers([](auto& l) {
    if constexpr (std::decay_t<decltype(l)>::is_conv) {
      l.conv_name = "main." + l.conv_name;
      if (!l.bn_name.empty()) l.bn_name = "main." + l.bn_name;
    } else {
      l.name = "main." + l.name;
    }
  });
  std::mt19937_64 init_rng(tc.seed * 1000003u + 17u);
  auto init_net = [&](nn::Network<Arch>& n) {
    n.visit_layers([&](nn::ConvBN<Arch>& l) { init_default(l.weight, l.k_per_out(), init_rng); });
  };
  init_net(m.adaptive);
  init_net(m.extension);
  init_default(m.extension_head.weight, m.extension_head.in_features, init_rng);
  init_default(m.extension_head.bias, m.extension_head.in_features, init_rng);

  // Hard-class training samples, labels remapped to 0..H-1.
  train::TrainSet set;
  set.images = &*tr_set;
  for (int i = 0; i < tr_set->count; ++i) {
    const int h = m.hard_index[tr_set->labels[std::size_t(i)]];
    if (h >= 0 && (max_train <= 0 || set.size() < max_train)) {
      set.index.push_back(i);
      set.labels.push_back(h);
    }
  }
  // Stage C, cached main features (computed once, from the unaugmented images).
  const Shape fs1 = m.main_feature_shape(main_info.input.shape(1));
  const index_t feat_floats = fs1.size();
  std::vector<float> feats(std::size_t(feat_floats) * set.size());
  {
    const int B = 250;
    Batches b{*tr_set, main_info.input, {}};
    std::vector<unsigned char> mem(m.main.workspace_bytes(main_info.input.shape(B)) + kAlignment);
    Workspace ws(mem.data(), mem.size());
    std::vector<float> logits(std::size_t(B) * C);
    const auto t0 = std::chrono::steady_clock::now();
    for (int b0 = 0; b0 < set.size(); b0 += B) {
      const int nb = std::min(B, set.size() - b0);
      b.fill(set.index, b0, nb);
      const Shape fs{nb, fs1.h, fs1.w, fs1.c};
      const Tensor f = Tensor::dense(feats.data() + std::size_t(b0) * feat_floats, fs);
      if (Status st = m.main.forward(ConstTensor::dense(b.x.data(), main_info.input.shape(nb)), logits.data(), C, ws, &f);
          !st)
        return fail_msg(st.message());
    }
    std::fprintf(stderr, "stage C: %d hard-class training samples, cached main features [%d, %d, %d, %d] (%.0f MB, %.1f s)\n",
                 set.size(), set.size(), fs1.h, fs1.w, fs1.c, feats.size() * 4.0 / 1e6,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  train::StageCStep<Arch> stage_c;
  if (Status st = stage_c.bind(m, main_info.input.shape(1), tc.batch, feats.data(), threads); !st)
    return fail_msg(st.message());
  std::vector<train::ParamSlot> slots;
  stage_c.visit_slots([&](const train::ParamSlot& s) { slots.push_back(s); });
  std::vector<train::StateRef> state;
  auto collect_state = [&](nn::ConvBN<Arch>& l) {
    if (l.has_bn()) {
      state.push_back({l.bn_name + ".running_mean", &l.running_mean});
      state.push_back({l.bn_name + ".running_var", &l.running_var});
    }
  };
  m.adaptive.visit_layers(collect_state);
  m.extension.visit_layers(collect_state);
  auto step = [&](ConstTensor x, const int* samples, const int* labels, int, float* loss, int* correct) {
    return stage_c.run(x, samples, labels, loss, correct);
  };

  tc.mean = main_info.input.mean[0];
  tc.stddev = main_info.input.std[0];
  train::Trainer trainer(tc, slots, state);
  auto resumed = trainer.resume();
  if (!resumed) return fail_msg(resumed.error());
  if (*resumed) std::fprintf(stderr, "resumed from %s at step %lld\n", tc.checkpoint.c_str(), (long long)trainer.global_step());
  auto eval = [&]() { return hard_accuracy(m, main_info.input, *va_set); };
  const auto t_train = std::chrono::steady_clock::now();
  if (auto o = trainer.run(set, step, eval); !o) return fail_msg(o.error());
  const double train_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_train).count();
  if (!trainer.finished()) {
    std::fprintf(stderr, "stopped at step %lld (checkpoint %s)\n", (long long)trainer.global_step(), tc.checkpoint.c_str());
    return 0;
  }
  {
    // A fingerprint of the trained state (parameters, then BN running statistics): a resumed
    // run must print the same one as a run that never stopped (tests/train/kill_resume.sh).
    std::uint64_t h = 14695981039346656037ull;
    std::size_t floats = 0;
    auto mix = [&](const float* p, std::size_t n) {
      const auto* b = reinterpret_cast<const unsigned char*>(p);
      for (std::size_t i = 0; i < n * sizeof(float); ++i) h = (h ^ b[i]) * 1099511628211ull;
      floats += n;
    };
    for (const auto& sl : slots) mix(sl.value, sl.size);
    for (const auto& st : state) mix(st.data->data(), st.data->size());
    std::printf("trained state: %zu floats, fnv1a64 %016llx\n", floats, (unsigned long long)h);
  }
  const double val_hard = hard_accuracy(m, main_info.input, *va_set);
  const double test_hard = hard_accuracy(m, main_info.input, *te_set);
  std::printf("stage C: val_hard %.4f test_hard %.4f (%d epochs, %.0f s training in this process)\n", val_hard, test_hard,
              tc.epochs, train_s);

  io::ModelInfo info;
  info.arch = "meanet";
  info.input = main_info.input;
  info.classes = main_info.classes;
  info.hparams = {{"main", main_info.hparams},
                  {"adaptive_stem", cfg.adaptive_stem},
                  {"adaptive_blocks", cfg.adaptive_blocks},
                  {"extension_blocks", cfg.extension_blocks},
                  {"hard_classes", hard}};
  nlohmann::json hist = nlohmann::json::array();
  for (const auto& h : trainer.history())
    hist.push_back({{"epoch", h.epoch}, {"loss", h.loss}, {"train_acc", h.train_acc}, {"val_acc", h.val_acc}, {"seconds", h.seconds}});
  info.provenance = {{"trained_by", "edgenn-train meanet (stages B and C on the engine)"},
                     {"main_source", main_path},
                     {"main_val_class_accuracy", acc},
                     {"recipe", {{"epochs", tc.epochs}, {"lr", tc.lr}, {"batch", tc.batch}, {"wd", tc.sgd.weight_decay},
                                 {"momentum", tc.sgd.momentum}, {"pad", tc.pad}, {"flip", tc.flip}, {"seed", tc.seed},
                                 {"hard_fraction", hard_fraction}}},
                     {"val_hard", val_hard},
                     {"test_hard", test_hard},
                     {"history", hist},
                     {"wall_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()}};

  if (!cloud_path.empty()) {
    // Router thresholds on the validation split, as edgenn-calibrate (default target: the
    // cloud model's validation accuracy with at most 15% of inputs sent).
    auto cloud = io::load_model(cloud_path);
    if (!cloud || !cloud->classifier) return fail_msg("cannot load the cloud classifier " + cloud_path);
    if (Status st = m.prepare(); !st) return fail_msg(st.message());
    meanet::RouterConfig rc;
    meanet::Costs costs;
    costs.paths = meanet::path_costs(m, info.input.shape(1));
    costs.request_bytes = std::int64_t(info.input.shape(1).size());
    auto obs = meanet::observe(m, info.input, rc, *va_set, cloud->classifier.get(), &cloud->info.input, 2);
    if (!obs) return fail_msg(obs.error());
    int cloud_correct = 0;
    for (const auto& o : *obs) cloud_correct += o.cloud_class == o.label;
    meanet::Target target;
    target.kind = meanet::Target::accuracy;
    target.value = double(cloud_correct) / va_set->count;
    target.max_cloud_fraction = 0.15;
    const meanet::Choice choice = meanet::choose(meanet::sweep(rc, *obs, costs), target);
    rc.entropy_threshold = choice.point.threshold;
    meanet::RouterConfig edge_only = rc;
    edge_only.entropy_threshold = std::numeric_limits<float>::infinity();
    const auto edge_pt = meanet::evaluate(edge_only, *obs, costs);
    std::printf("router: T = %g, val accuracy %.4f (edge only %.4f, cloud %.4f), cloud fraction %.3f, target %s\n",
                double(rc.entropy_threshold), choice.point.accuracy(), edge_pt.accuracy(), target.value,
                choice.point.fraction(meanet::Exit::cloud), choice.target_met ? "met" : "NOT met");
    info.router = meanet::router_to_json(rc);
    info.router["calibration"] = {{"split", "val"},
                                  {"images", va_set->count},
                                  {"target", {{"accuracy", target.value}, {"max_cloud_fraction", 0.15}, {"from", "cloud model validation accuracy"}}},
                                  {"target_met", choice.target_met},
                                  {"cloud_model", cloud_path.substr(cloud_path.find_last_of('/') + 1)},
                                  {"val_accuracy", choice.point.accuracy()},
                                  {"val_edge_accuracy", edge_pt.accuracy()},
                                  {"val_cloud_accuracy", target.value}};
  }
  if (auto ok = io::save_model(out_path, info, m); !ok) return fail_msg(ok.error());
  std::printf("wrote %s\n", out_path.c_str());
  return 0;
}

// The main block from scratch: a CIFAR-style ResNet on the whole training split (minus the
// validation images), tools/train_reference.py's `main` recipe (SGD momentum 0.9, lr 0.1
// cosine per step, weight decay 5e-4, batch 128, random crop pad 2 and flip, 40 epochs);
// conv weights kaiming-normal (fan_out, ReLU gain) as the reference, BN identity, the linear
// layer PyTorch's default. Written with BN unfolded (the loader folds it).
int run_resnet(int depth, int width, const std::string& out_path, const std::string& data_dir, train::TrainerConfig tc,
               int max_train, int threads) {
  const auto started = std::chrono::steady_clock::now();
  auto tr_set = io::load_fashion_mnist(data_dir, io::Split::train);
  auto va_set = io::load_fashion_mnist(data_dir, io::Split::val);
  auto te_set = io::load_fashion_mnist(data_dir, io::Split::test);
  if (!tr_set || !va_set || !te_set) return fail_msg("cannot read Fashion-MNIST from " + data_dir);
  nn::ResNetCifarConfig cfg;
  cfg.depth = depth;
  cfg.width = width;
  if (Status st = cfg.validate(); !st) return fail_msg(st.message());
  nn::Classifier<Arch> model = nn::build_resnet_cifar<Arch>(cfg);
  const int C = model.num_classes();
  io::InputSpec in;
  in.mean = {kFashionMean};
  in.std = {kFashionStd};
  std::mt19937_64 init_rng(tc.seed * 1000003u + 29u);
  model.features.visit_layers([&](nn::ConvBN<Arch>& l) {
    // kaiming_normal_(mode="fan_out", nonlinearity="relu"): N(0, 2 / (cout·kh·kw)).
    std::normal_distribution<double> nd(0.0, std::sqrt(2.0 / (double(l.cout) * l.p.taps())));
    for (auto& w : l.weight) w = float(nd(init_rng));
  });
  init_default(model.head.weight, model.head.in_features, init_rng);
  init_default(model.head.bias, model.head.in_features, init_rng);

  train::TrainSet set;
  set.images = &*tr_set;
  for (int i = 0; i < tr_set->count && (max_train <= 0 || i < max_train); ++i) {
    set.index.push_back(i);
    set.labels.push_back(tr_set->labels[std::size_t(i)]);
  }
  train::ClassifierStep<Arch> ct;
  if (Status st = ct.bind(model, in.shape(1), tc.batch, threads); !st) return fail_msg(st.message());
  std::vector<train::ParamSlot> slots;
  ct.visit_slots([&](const train::ParamSlot& sl) { slots.push_back(sl); });
  std::vector<train::StateRef> state;
  model.features.visit_layers([&](nn::ConvBN<Arch>& l) {
    if (l.has_bn()) {
      state.push_back({l.bn_name + ".running_mean", &l.running_mean});
      state.push_back({l.bn_name + ".running_var", &l.running_var});
    }
  });
  auto step = [&](ConstTensor x, const int*, const int* labels, int, float* loss, int* correct) {
    return ct.run(x, labels, loss, correct);
  };
  // Evaluation on a copy with BN folded from the running statistics (the inference path).
  auto accuracy = [&](const io::ImageSet& split) {
    nn::Classifier<Arch> m = model;
    if (!m.prepare()) return -1.0;
    return overall_accuracy(m, in, split, C);
  };
  tc.mean = in.mean[0];
  tc.stddev = in.std[0];
  train::Trainer trainer(tc, slots, state);
  auto resumed = trainer.resume();
  if (!resumed) return fail_msg(resumed.error());
  if (*resumed) std::fprintf(stderr, "resumed from %s at step %lld\n", tc.checkpoint.c_str(), (long long)trainer.global_step());
  std::fprintf(stderr, "resnet_cifar depth %d width %d: %d training images, %zu parameter tensors\n", depth, width,
               set.size(), slots.size());
  const auto t_train = std::chrono::steady_clock::now();
  if (auto o = trainer.run(set, step, [&] { return accuracy(*va_set); }); !o) return fail_msg(o.error());
  const double train_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_train).count();
  if (!trainer.finished()) {
    std::fprintf(stderr, "stopped at step %lld (checkpoint %s)\n", (long long)trainer.global_step(), tc.checkpoint.c_str());
    return 0;
  }
  const double val = accuracy(*va_set), test = accuracy(*te_set);
  std::printf("resnet_cifar: val %.4f test %.4f (%d epochs, %.0f s training in this process)\n", val, test, tc.epochs,
              train_s);
  io::ModelInfo info;
  info.arch = "resnet_cifar";
  info.input = in;
  info.classes = kFashionClasses;
  info.hparams = {{"depth", depth}, {"width", width}, {"in_ch", 1}, {"num_classes", C}};
  nlohmann::json hist = nlohmann::json::array();
  for (const auto& h : trainer.history())
    hist.push_back({{"epoch", h.epoch}, {"loss", h.loss}, {"train_acc", h.train_acc}, {"val_acc", h.val_acc}, {"seconds", h.seconds}});
  info.provenance = {{"trained_by", "edgenn-train resnet (from scratch on the engine)"},
                     {"recipe", {{"epochs", tc.epochs}, {"lr", tc.lr}, {"batch", tc.batch}, {"wd", tc.sgd.weight_decay},
                                 {"momentum", tc.sgd.momentum}, {"pad", tc.pad}, {"flip", tc.flip}, {"seed", tc.seed}}},
                     {"val_accuracy", val},
                     {"test_accuracy", test},
                     {"history", hist},
                     {"wall_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()}};
  if (auto ok = io::save_model(out_path, info, model); !ok) return fail_msg(ok.error());
  std::printf("wrote %s\n", out_path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train on the device with edgenn: MEANet stages B and C, or the main ResNet from scratch"};
  app.require_subcommand(1);
  std::string main_path, cloud_path, out_path, data_dir = "/usr/share/datasets/fashion-mnist", checkpoint;
  double hard_fraction = 0.5;
  int max_train = 0;
  // Threads split every batch (train/parallel.hpp); a run is deterministic for a given count.
  int threads = int(std::max(1u, std::thread::hardware_concurrency()));
  train::TrainerConfig tc;
  auto* mn = app.add_subcommand("meanet", "stage B (hard classes) + stage C (adaptive and extension blocks)");
  mn->add_option("--main", main_path, "main block weights (ResNet, BN folded)")->required();
  mn->add_option("--cloud", cloud_path, "cloud model weights (router calibration; without it no router is stored)");
  mn->add_option("--out", out_path, "output MEANet weights file")->required();
  mn->add_option("--data", data_dir, "Fashion-MNIST directory");
  mn->add_option("--hard-fraction", hard_fraction, "fraction of classes that are hard")->check(CLI::Range(0.0, 1.0));
  mn->add_option("--epochs", tc.epochs)->check(CLI::Range(1, 1000));
  mn->add_option("--lr", tc.lr);
  mn->add_option("--wd", tc.sgd.weight_decay);
  mn->add_option("--batch", tc.batch)->check(CLI::Range(2, 4096));
  mn->add_option("--pad", tc.pad)->check(CLI::Range(0, 8));
  mn->add_option("--flip", tc.flip);
  mn->add_option("--seed", tc.seed);
  mn->add_option("--checkpoint", checkpoint, "checkpoint file (written every epoch and --checkpoint-every steps; resumed if present)");
  mn->add_option("--checkpoint-every", tc.checkpoint_every);
  mn->add_option("--stop-after", tc.stop_after, "stop after this many steps (with a checkpoint)");
  mn->add_option("--max-train", max_train, "use at most this many hard-class training samples (smoke tests)");
  mn->add_option("--threads", threads, "threads per training step (default: all cores; results depend on the count)")
      ->check(CLI::Range(1, 256));
  // resnet: its own defaults (the reference's `main` preset), the same trainer options.
  train::TrainerConfig rc = tc;
  rc.epochs = 40;
  rc.lr = 0.1;
  int depth = 20, width = 16;
  auto* rn = app.add_subcommand("resnet", "the main block from scratch (CIFAR-style ResNet on Fashion-MNIST)");
  rn->add_option("--out", out_path, "output weights file (BN unfolded)")->required();
  rn->add_option("--depth", depth, "6n+2");
  rn->add_option("--width", width, "channels of the first stage");
  rn->add_option("--data", data_dir, "Fashion-MNIST directory");
  rn->add_option("--epochs", rc.epochs)->check(CLI::Range(1, 1000));
  rn->add_option("--lr", rc.lr);
  rn->add_option("--wd", rc.sgd.weight_decay);
  rn->add_option("--batch", rc.batch)->check(CLI::Range(2, 4096));
  rn->add_option("--pad", rc.pad)->check(CLI::Range(0, 8));
  rn->add_option("--flip", rc.flip);
  rn->add_option("--seed", rc.seed);
  rn->add_option("--checkpoint", checkpoint, "checkpoint file (written every epoch and --checkpoint-every steps; resumed if present)");
  rn->add_option("--checkpoint-every", rc.checkpoint_every);
  rn->add_option("--stop-after", rc.stop_after, "stop after this many steps (with a checkpoint)");
  rn->add_option("--max-train", max_train, "use at most this many training images (smoke tests)");
  rn->add_option("--threads", threads, "threads per training step (default: all cores; results depend on the count)")
      ->check(CLI::Range(1, 256));
  CLI11_PARSE(app, argc, argv);
  tc.checkpoint = rc.checkpoint = checkpoint;
  tc.progress = rc.progress = true;
  if (mn->parsed()) return run_meanet(main_path, cloud_path, out_path, data_dir, hard_fraction, tc, max_train, threads);
  if (rn->parsed()) return run_resnet(depth, width, out_path, data_dir, rc, max_train, threads);
  return 2;
}
