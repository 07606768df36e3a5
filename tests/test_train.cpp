// Trainable layers: a tiny ResNet in training mode against PyTorch autograd and torch.optim
// (tests/golden/optim/net/, tools/gen_golden_optim.py), a whole BasicBlock against finite
// differences, for every backend.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <unistd.h>
#include <cstdint>
#include <cstring>
#include <random>
#include <thread>

#include "edgenn/io/safetensors.hpp"
#include "edgenn/kernels/loss.hpp"
#include "edgenn/train.hpp"
#include "support/golden_support.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_train {

using namespace edgenn;

namespace {

template <class Arch>
nn::Classifier<Arch> tiny_resnet() {
  nn::Classifier<Arch> c;
  c.features.add(nn::make_conv_bn<Arch>("conv1", "bn1", 1, 4, 3, 1, 1, Activation::relu));
  c.features.add(nn::BasicBlock<Arch>::make("layer.0", 4, 8, 2));
  c.features.add(nn::BasicBlock<Arch>::make("layer.1", 8, 8, 1));
  c.head.name = "fc";
  c.head.in_features = 8;
  c.head.out_features = 3;
  c.head.allocate();
  return c;
}

template <class Arch>
void tiny_resnet_vs_pytorch() {
  auto loaded = io::SafeTensors::load(std::string(EDGENN_SOURCE_DIR) + "/tests/golden/optim/net/tiny_resnet.safetensors");
  REQUIRE_MESSAGE(loaded.ok(), loaded.error());
  const io::SafeTensors& st = *loaded;
  nn::Classifier<Arch> model = tiny_resnet<Arch>();
  std::vector<nn::ParamRef> refs;
  model.visit_layers([&](auto& l) { l.visit_params([&](const nn::ParamRef& r) { refs.push_back(r); }); });
  for (auto& r : refs) *r.data = test::read_f32(st, "init." + r.name);

  train::ClassifierTrain<Arch> tr;
  REQUIRE(tr.bind(model).is_ok());
  std::vector<train::ParamSlot> slots;
  tr.visit_slots([&](const train::ParamSlot& s) { slots.push_back(s); });
  CHECK(slots.size() == 20);  // 6 ConvBNs x (weight, gamma, beta) + fc weight, bias
  train::SgdConfig sc;
  sc.momentum = 0.9;
  sc.weight_decay = 5e-4;
  train::Sgd opt(slots, sc);

  const Shape in{5, 7, 7, 1};
  test::OwnedWorkspace ws(tr.workspace_bytes(in));
  for (int step = 0; step < 2; ++step) {
    auto x = test::read_f32(st, "x" + std::to_string(step));
    const io::TensorInfo* yi = st.find("y" + std::to_string(step));
    REQUIRE(yi);
    std::vector<int> y(5);
    std::memcpy(y.data(), st.bytes(*yi), y.size() * sizeof(int));
    std::vector<float> logits(15), dlogits(15);
    const ConstTensor xv = ConstTensor::dense(x.data(), in);
    REQUIRE(tr.forward(xv, logits.data(), 3, ws.ws).is_ok());
    float loss = 0;
    REQUIRE(kernels::softmax_cross_entropy(5, 3, logits.data(), 3, y.data(), 0.0f, &loss, dlogits.data(), 3).is_ok());
    REQUIRE(tr.backward(xv, dlogits.data(), 3, ws.ws).is_ok());
    if (step == 0) {
      CHECK(test::max_rel_err(logits, test::read_f32(st, "logits0")) < 1e-5);
      CHECK(std::fabs(loss - test::read_f32(st, "loss0")[0]) < 1e-5);
      for (const auto& s : slots) {
        const std::vector<float> g(s.grad, s.grad + s.size);
        const double err = test::max_rel_err(g, test::read_f32(st, "grad." + s.name));
        CHECK_MESSAGE(err < 2e-5, s.name, ": gradient max relative error ", err);
      }
    }
    REQUIRE(opt.step(train::cosine_lr(0.1, 0, step, 2, 1)).is_ok());
  }
  for (auto& r : refs) {
    const double err = test::max_rel_err(*r.data, test::read_f32(st, "final." + r.name));
    CHECK_MESSAGE(err < 2e-5, r.name, ": after two steps, max relative error ", err);
  }
}

// L = Σ r·block(x); analytic dL/dparams and dL/dx against central differences.
template <class Arch>
void basic_block_finite_differences() {
  nn::BasicBlock<Arch> blk = nn::BasicBlock<Arch>::make("b", 3, 5, 2);
  // Smooth block (no ReLU): a kink within ±h of a pre-activation would make the difference
  // quotient meaningless; the ReLU paths are checked against PyTorch autograd above.
  blk.conv1.p.activation = Activation::none;
  blk.conv2.p.activation = Activation::none;
  std::mt19937 gen(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.5f, 1.5f);
  blk.visit_layers([&](nn::ConvBN<Arch>& l) {
    for (auto& w : l.weight) w = 0.4f * nd(gen);
    for (auto& g : l.gamma) g = ud(gen);
    for (auto& b : l.beta) b = 0.1f * nd(gen);
  });
  const Shape in{3, 5, 6, 3};
  const Shape out = blk.output_shape(in);
  std::vector<float> x(std::size_t(in.size())), r(std::size_t(out.size()));
  for (auto& v : x) v = nd(gen);
  for (auto& v : r) v = nd(gen);

  train::BasicBlockTrain<Arch> tr;
  REQUIRE(tr.bind(blk, false).is_ok());
  test::OwnedWorkspace ws(tr.workspace_bytes(in));
  std::vector<float> y(std::size_t(out.size())), dy, dx(x.size());
  auto loss = [&]() {
    REQUIRE(tr.forward(ConstTensor::dense(x.data(), in), Tensor::dense(y.data(), out), ws.ws).is_ok());
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += double(r[i]) * y[i];
    return s;
  };
  (void)loss();
  dy = r;
  REQUIRE(tr.backward(ConstTensor::dense(x.data(), in), ConstTensor::dense(y.data(), out), Tensor::dense(dy.data(), out),
                      Tensor::dense(dx.data(), in), false, ws.ws)
              .is_ok());
  std::vector<train::ParamSlot> slots;
  tr.visit_slots([&](const train::ParamSlot& s) { slots.push_back(s); });
  slots.push_back(train::ParamSlot{"x", x.data(), dx.data(), x.size(), false});
  std::vector<std::vector<float>> analytic;
  for (const auto& s : slots) analytic.emplace_back(s.grad, s.grad + s.size);
  const float h = 1e-2f;
  int checked = 0;
  for (std::size_t k = 0; k < slots.size(); ++k) {
    const auto& s = slots[k];
    for (std::size_t j = 0; j < s.size; j += 1 + s.size / 7) {
      const float v = s.value[j];
      s.value[j] = v + h;
      const double lp = loss();
      s.value[j] = v - h;
      const double lm = loss();
      s.value[j] = v;
      const double fd = (lp - lm) / (double(v + h) - double(v - h)), an = analytic[k][j];
      ++checked;
      // Float forward: the quotient at h = 1e-2 carries ~1e-3 of rounding noise (and O(h²) error).
      CHECK_MESSAGE(std::fabs(fd - an) < 1e-2 * std::max(1.0, std::fabs(an)), s.name, "[", j,
                    "]: finite difference ", fd, " analytic ", an);
    }
  }
  CHECK(checked > 40);
}

// Synthetic 3-class images: a bright 4x4 square whose position is the class, plus noise.
io::ImageSet synthetic_set(int count, std::uint32_t seed) {
  io::ImageSet s;
  s.count = count;
  s.height = s.width = 10;
  s.pixels.resize(std::size_t(count) * 100);
  s.labels.resize(std::size_t(count));
  std::mt19937 gen(seed);
  for (int i = 0; i < count; ++i) {
    const int c = int(gen() % 3);
    s.labels[std::size_t(i)] = static_cast<unsigned char>(c);
    unsigned char* im = s.pixels.data() + std::size_t(i) * 100;
    for (int k = 0; k < 100; ++k) im[k] = static_cast<unsigned char>(gen() % 60);
    const int oy = c == 0 ? 1 : c == 1 ? 5 : 1, ox = c == 0 ? 1 : c == 1 ? 3 : 5;
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 4; ++x) im[(oy + y) * 10 + ox + x] = static_cast<unsigned char>(180 + gen() % 60);
  }
  return s;
}

// A tiny ResNet with PyTorch's default-style uniform init from a seed, and its training state.
template <class Arch>
struct TinySetup {
  nn::Classifier<Arch> model = tiny_resnet<Arch>();
  train::ClassifierTrain<Arch> tr;
  std::vector<train::ParamSlot> slots;
  std::vector<train::StateRef> state;
  std::vector<float> logits, dlogits;
  std::unique_ptr<test::OwnedWorkspace> ws;

  explicit TinySetup(int batch) {
    std::mt19937 gen(42);
    model.visit_layers([&](auto& l) {
      l.visit_params([&](const nn::ParamRef& r) {
        if (!r.trainable || r.shape.size() == 1) return;
        int fan_in = 1;
        for (std::size_t d = 1; d < r.shape.size(); ++d) fan_in *= r.shape[d];
        std::uniform_real_distribution<float> u(-1.0f / std::sqrt(float(fan_in)), 1.0f / std::sqrt(float(fan_in)));
        for (auto& v : *r.data) v = u(gen);
      });
    });
    REQUIRE(tr.bind(model).is_ok());
    tr.visit_slots([&](const train::ParamSlot& s) { slots.push_back(s); });
    model.visit_layers([&](auto& l) {
      l.visit_params([&](const nn::ParamRef& r) {
        if (!r.trainable) state.push_back(train::StateRef{r.name, r.data});
      });
    });
    ws = std::make_unique<test::OwnedWorkspace>(tr.workspace_bytes(Shape{batch, 10, 10, 1}));
    logits.resize(std::size_t(batch) * 3);
    dlogits.resize(logits.size());
  }
  train::Trainer::StepFn step() {
    return [this](ConstTensor x, const int*, const int* labels, int n, float* loss, int* correct) -> Status {
      EDGENN_TRY(tr.forward(x, logits.data(), 3, ws->ws));
      EDGENN_TRY(kernels::softmax_cross_entropy(n, 3, logits.data(), 3, labels, 0.0f, loss, dlogits.data(), 3));
      *correct = 0;
      for (int b = 0; b < n; ++b) {
        const float* z = logits.data() + 3 * b;
        *correct += int(std::max_element(z, z + 3) - z) == labels[b];
      }
      return tr.backward(x, dlogits.data(), 3, ws->ws);
    };
  }
  std::vector<float> snapshot() {
    std::vector<float> all;
    model.visit_layers([&](auto& l) {
      l.visit_params([&](const nn::ParamRef& r) { all.insert(all.end(), r.data->begin(), r.data->end()); });
    });
    return all;
  }
};

train::TrainSet whole(const io::ImageSet& s) {
  train::TrainSet t;
  t.images = &s;
  for (int i = 0; i < s.count; ++i) {
    t.index.push_back(i);
    t.labels.push_back(s.labels[std::size_t(i)]);
  }
  return t;
}

}  // namespace

TEST_CASE_TEMPLATE("trainer: a stopped and resumed run gives the same weights bit for bit", Arch, EDGENN_TEST_ARCHS) {
  const io::ImageSet data = synthetic_set(90, 5);
  const train::TrainSet set = whole(data);
  train::TrainerConfig cfg;
  cfg.epochs = 3;
  cfg.batch = 16;  // 6 steps per epoch, the last one partial
  cfg.lr = 0.05;
  cfg.mean = 0.2f;
  cfg.stddev = 0.3f;
  cfg.seed = 9;
  cfg.progress = false;
  TinySetup<Arch> ref(cfg.batch);
  train::Trainer a(cfg, ref.slots, ref.state);
  REQUIRE(a.run(set, ref.step()).ok());
  REQUIRE(a.finished());
  REQUIRE(a.global_step() == 18);
  const std::vector<float> expect = ref.snapshot();

  const std::string ckpt = (std::filesystem::temp_directory_path() /
                            ("edgenn_test_resume_" + std::to_string(getpid()) + ".safetensors"))
                               .string();
  for (const std::int64_t stop : {std::int64_t(4), std::int64_t(6), std::int64_t(13)}) {
    CAPTURE(stop);
    std::filesystem::remove(ckpt);
    cfg.checkpoint = ckpt;
    cfg.checkpoint_every = 5;
    {
      TinySetup<Arch> first(cfg.batch);  // the "killed" process
      train::TrainerConfig c1 = cfg;
      c1.stop_after = stop;
      train::Trainer t(c1, first.slots, first.state);
      REQUIRE(!*t.resume());
      REQUIRE(t.run(set, first.step()).ok());
      CHECK(!t.finished());
      CHECK(t.global_step() == stop);
    }
    TinySetup<Arch> second(cfg.batch);  // a new process: fresh init, then the checkpoint
    train::Trainer t(cfg, second.slots, second.state);
    auto r = t.resume();
    REQUIRE_MESSAGE(r.ok(), r.error());
    REQUIRE(*r);
    REQUIRE(t.run(set, second.step()).ok());
    CHECK(t.finished());
    const std::vector<float> got = second.snapshot();
    REQUIRE(got.size() == expect.size());
    CHECK(std::memcmp(got.data(), expect.data(), got.size() * sizeof(float)) == 0);
  }
  std::filesystem::remove(ckpt);
}

TEST_CASE_TEMPLATE("trainer: a short training converges", Arch, EDGENN_TEST_ARCHS) {
  const io::ImageSet train_data = synthetic_set(240, 1), val_data = synthetic_set(90, 2);
  train::TrainerConfig cfg;
  cfg.epochs = 4;
  cfg.batch = 24;
  cfg.lr = 0.1;
  cfg.pad = 1;
  cfg.flip = false;
  cfg.mean = 0.2f;
  cfg.stddev = 0.3f;
  cfg.progress = false;
  TinySetup<Arch> s(cfg.batch);
  // Validation in eval mode: BN folded with the running statistics the training kept.
  auto eval = [&]() {
    nn::Classifier<Arch> m = s.model;
    REQUIRE(m.prepare().is_ok());
    std::vector<float> x(100), z(3);
    test::OwnedWorkspace ws(m.workspace_bytes(Shape{1, 10, 10, 1}));
    int correct = 0;
    for (int i = 0; i < val_data.count; ++i) {
      for (int k = 0; k < 100; ++k) x[std::size_t(k)] = (val_data.image(i)[k] / 255.0f - cfg.mean) / cfg.stddev;
      REQUIRE(m.forward(ConstTensor::dense(x.data(), Shape{1, 10, 10, 1}), z.data(), 3, ws.ws).is_ok());
      correct += int(std::max_element(z.begin(), z.end()) - z.begin()) == val_data.labels[std::size_t(i)];
    }
    return double(correct) / val_data.count;
  };
  train::Trainer t(cfg, s.slots, s.state);
  REQUIRE(t.run(whole(train_data), s.step(), eval).ok());
  const auto& h = t.history();
  REQUIRE(h.size() == 4);
  CHECK(h.back().loss < 0.5 * h.front().loss);
  CHECK(h.back().train_acc > 0.9);
  CHECK(h.back().val_acc > 0.9);
}

TEST_CASE_TEMPLATE("tiny ResNet training step matches PyTorch autograd and SGD", Arch, EDGENN_TEST_ARCHS) {
  tiny_resnet_vs_pytorch<Arch>();
}

TEST_CASE_TEMPLATE("BasicBlock gradients match finite differences", Arch, EDGENN_TEST_ARCHS) {
  basic_block_finite_differences<Arch>();
}

namespace {

// One step of `step_a` and `step_b` on the same batch: every gradient close (summation order
// of the per-thread partial sums differs), and running statistics close.
template <class Slots>
void check_same_gradients(const Slots& a, const Slots& b, double tol) {
  REQUIRE(a.size() == b.size());
  for (std::size_t k = 0; k < a.size(); ++k) {
    CAPTURE(a[k].name);
    REQUIRE(a[k].size == b[k].size);
    const std::vector<float> ga(a[k].grad, a[k].grad + a[k].size), gb(b[k].grad, b[k].grad + b[k].size);
    CHECK(test::max_rel_err(ga, gb) < tol);
  }
}

template <class Step>
std::vector<train::ParamSlot> slots_of(Step& s) {
  std::vector<train::ParamSlot> v;
  s.visit_slots([&](const train::ParamSlot& p) { v.push_back(p); });
  return v;
}

bool same_bits(const std::vector<train::ParamSlot>& a, const std::vector<train::ParamSlot>& b) {
  for (std::size_t k = 0; k < a.size(); ++k)
    if (std::memcmp(a[k].grad, b[k].grad, a[k].size * sizeof(float)) != 0) return false;
  return true;
}

}  // namespace

TEST_CASE_TEMPLATE("threaded classifier training step equals the serial step", Arch, EDGENN_TEST_ARCHS) {
  std::mt19937 gen(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const int batch : {7, 2}) {  // 3 threads: uneven ranges, and fewer items than threads
    CAPTURE(batch);
    TinySetup<Arch> serial(batch), threaded(batch), again(batch);
    const Shape in{batch, 10, 10, 1};
    std::vector<float> x(std::size_t(in.size()));
    for (auto& v : x) v = nd(gen);
    std::vector<int> labels(static_cast<std::size_t>(batch));
    for (auto& l : labels) l = int(gen() % 3);
    train::ClassifierStep<Arch> s1, s3, s3b;
    REQUIRE(s1.bind(serial.model, in, batch, 1).is_ok());
    REQUIRE(s3.bind(threaded.model, in, batch, 3).is_ok());
    REQUIRE(s3b.bind(again.model, in, batch, 3).is_ok());
    float l1 = 0, l3 = 0, l3b = 0;
    int c1 = 0, c3 = 0, c3b = 0;
    const ConstTensor xv = ConstTensor::dense(x.data(), in);
    REQUIRE(s1.run(xv, labels.data(), &l1, &c1).is_ok());
    REQUIRE(s3.run(xv, labels.data(), &l3, &c3).is_ok());
    REQUIRE(s3b.run(xv, labels.data(), &l3b, &c3b).is_ok());
    CHECK(std::fabs(l1 - l3) < 1e-5f * std::max(1.0f, std::fabs(l1)));
    CHECK(c1 == c3);
    const auto g1 = slots_of(s1), g3 = slots_of(s3), g3b = slots_of(s3b);
    check_same_gradients(g1, g3, 1e-5);
    CHECK(same_bits(g3, g3b));  // deterministic for a given thread count
    // BN running statistics (state) were updated alike.
    REQUIRE(serial.state.size() == threaded.state.size());
    for (std::size_t k = 0; k < serial.state.size(); ++k) {
      CAPTURE(serial.state[k].name);
      CHECK(test::max_rel_err(*serial.state[k].data, *threaded.state[k].data) < 1e-5);
    }
  }
}

TEST_CASE_TEMPLATE("threaded MEANet stage-C step equals the serial step", Arch, EDGENN_TEST_ARCHS) {
  nn::MEANetConfig cfg;
  cfg.main.depth = 8;
  cfg.main.width = 4;
  cfg.main.num_classes = 4;
  cfg.adaptive_stem = 4;
  cfg.adaptive_blocks = {{4, 1}, {8, 2}, {8, 2}};
  cfg.extension_blocks = {{8, 1}};
  cfg.hard_classes = {2, 0};
  REQUIRE(cfg.validate().is_ok());
  std::mt19937 gen(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto make = [&](std::uint32_t seed) {
    nn::MEANet<Arch> m = nn::build_meanet<Arch>(cfg);
    std::mt19937 g(seed);
    std::normal_distribution<float> w(0.0f, 0.3f);
    m.adaptive.visit_layers([&](nn::ConvBN<Arch>& l) { for (auto& v : l.weight) v = w(g); });
    m.extension.visit_layers([&](nn::ConvBN<Arch>& l) { for (auto& v : l.weight) v = w(g); });
    for (auto& v : m.extension_head.weight) v = w(g);
    return m;
  };
  nn::MEANet<Arch> ma = make(3), mb = make(3);
  const int batch = 5, samples = 9;
  const Shape in{batch, 10, 10, 1};
  const Shape fs = ma.main_feature_shape(Shape{1, 10, 10, 1});
  std::vector<float> feats(std::size_t(fs.size()) * samples), x(std::size_t(in.size()));
  for (auto& v : feats) v = std::max(0.0f, nd(gen));
  for (auto& v : x) v = nd(gen);
  const std::vector<int> rows = {8, 1, 4, 4, 0}, labels = {1, 0, 1, 1, 0};
  train::StageCStep<Arch> s1, s2;
  REQUIRE(s1.bind(ma, in, batch, feats.data(), 1).is_ok());
  REQUIRE(s2.bind(mb, in, batch, feats.data(), 2).is_ok());
  float l1 = 0, l2 = 0;
  int c1 = 0, c2 = 0;
  REQUIRE(s1.run(ConstTensor::dense(x.data(), in), rows.data(), labels.data(), &l1, &c1).is_ok());
  REQUIRE(s2.run(ConstTensor::dense(x.data(), in), rows.data(), labels.data(), &l2, &c2).is_ok());
  CHECK(std::fabs(l1 - l2) < 1e-5f * std::max(1.0f, std::fabs(l1)));
  const auto g1 = slots_of(s1), g2 = slots_of(s2);
  CHECK(g1.size() > 10);
  check_same_gradients(g1, g2, 1e-5);
}

namespace {

// The same random convolution weights in two copies of a network.
template <class Arch>
void same_random_weights(nn::Network<Arch>& a, nn::Network<Arch>& b, std::mt19937& gen,
                         std::normal_distribution<float>& nd) {
  std::vector<float> w;
  a.visit_layers([&](nn::ConvBN<Arch>& l) {
    for (auto& v : l.weight) v = nd(gen);
    w.insert(w.end(), l.weight.begin(), l.weight.end());
  });
  std::size_t k = 0;
  b.visit_layers([&](nn::ConvBN<Arch>& l) {
    for (auto& v : l.weight) v = w[k++];
  });
}

// Two copies of the network make() builds, with the same random convolution weights, each
// bound to a trainer (a trains na, b trains nb). Built in place: the trainers point into the
// networks.
template <class Arch>
struct TwinNetworks {
  nn::Network<Arch> na, nb;
  train::NetworkTrain<Arch> a, b;
  template <class Make>
  TwinNetworks(Make&& make, std::mt19937& gen, std::normal_distribution<float>& nd) : na(make()), nb(make()) {
    same_random_weights(na, nb, gen, nd);
    REQUIRE(a.bind(na, false).is_ok());
    REQUIRE(b.bind(nb, false).is_ok());
  }
  TwinNetworks(const TwinNetworks&) = delete;
  TwinNetworks& operator=(const TwinNetworks&) = delete;
};

// sqrt(sum (a - b)^2 / sum b^2).
double rel_l2(const float* a, const float* b, std::size_t n) {
  double d = 0, r = 0;
  for (std::size_t i = 0; i < n; ++i) {
    d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    r += double(b[i]) * b[i];
  }
  return std::sqrt(d / std::max(r, 1e-30));
}

// What two trainers of the same network computed for one step.
struct TwinStep {
  std::vector<float> y[2], dx[2];
};

// One forward and backward of trainers a and b on the same random input (shape `in`) and
// output gradient, on `threads` threads (one: serially).
template <class Arch>
TwinStep twin_step(train::NetworkTrain<Arch>& a, train::NetworkTrain<Arch>& b, Shape in, int threads,
                   std::mt19937& gen, std::normal_distribution<float>& nd) {
  train::NetworkTrain<Arch>* t[2] = {&a, &b};
  std::vector<float> x(std::size_t(in.size()));
  for (auto& v : x) v = nd(gen);
  std::unique_ptr<train::Parallel> par;
  const std::size_t bytes = std::max(a.workspace_bytes(in), b.workspace_bytes(in));
  if (threads > 1) {
    par = std::make_unique<train::Parallel>(threads);
    par->reserve_workspace(bytes);
  }
  test::OwnedWorkspace ws(bytes);
  const ConstTensor xv = ConstTensor::dense(x.data(), in);
  TwinStep r;
  for (int i = 0; i < 2; ++i) {
    t[i]->set_parallel(par.get());
    REQUIRE(t[i]->forward(xv, ws.ws).is_ok());
  }
  const Shape os = a.output().shape;
  std::vector<float> dy(std::size_t(os.size()));
  for (auto& v : dy) v = nd(gen);
  for (int i = 0; i < 2; ++i) {
    r.y[i] = test::to_dense(t[i]->output());
    std::vector<float> d = dy;  // overwritten by the backward
    r.dx[i].resize(std::size_t(in.size()));
    REQUIRE(t[i]->backward(xv, Tensor::dense(d.data(), os), Tensor::dense(r.dx[i].data(), in), false, ws.ws).is_ok());
    t[i]->set_parallel(nullptr);  // par ends here
  }
  return r;
}

}  // namespace

// A network whose input is a concat with a frozen part (MEANet's extension on main-block and
// adaptive features): with set_input_grad_from(c) backward computes the input gradient of
// channels [c, cin) only. It must equal those channels of the full input gradient, and leave
// the parameter gradients as they are, to the bit (same reductions in the same order).
TEST_CASE_TEMPLATE("partial input gradient of a network equals the full one's channels", Arch, EDGENN_TEST_ARCHS) {
  struct Case {
    const char* name;
    int from;
    std::function<nn::Network<Arch>()> make;
    int cin = 12;
  };
  const Case cases[] = {
      {"block with a projection shortcut first", 5,
       [] {
         nn::Network<Arch> n;
         n.add(nn::BasicBlock<Arch>::make("a", 12, 8, 1));
         return n;
       }},
      {"block with an identity shortcut first", 7,
       [] {
         nn::Network<Arch> n;
         n.add(nn::BasicBlock<Arch>::make("a", 12, 12, 1));
         n.add(nn::BasicBlock<Arch>::make("b", 12, 8, 2));
         return n;
       }},
      {"conv first", 4,
       [] {
         nn::Network<Arch> n;
         n.add(nn::make_conv_bn<Arch>("c", "bn", 12, 8, 3, 1, 1, Activation::relu));
         n.add(nn::BasicBlock<Arch>::make("b", 8, 8, 1));
         return n;
       }},
      {"wide block (Winograd layers, as MEANet's extension)", 64,
       [] {
         nn::Network<Arch> n;
         n.add(nn::BasicBlock<Arch>::make("a", 128, 64, 1));
         return n;
       },
       128},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    std::mt19937 gen(11);
    std::normal_distribution<float> nd(0.0f, 0.5f);
    TwinNetworks<Arch> twins(c.make, gen, nd);
    train::NetworkTrain<Arch>& full = twins.a;
    train::NetworkTrain<Arch>& part = twins.b;
    const Shape in{3, 6, 6, c.cin};
    std::vector<float> x(std::size_t(in.size()));
    for (auto& v : x) v = nd(gen);
    part.set_input_grad_from(c.from);
    test::OwnedWorkspace ws(std::max(full.workspace_bytes(in), part.workspace_bytes(in)));
    const ConstTensor xv = ConstTensor::dense(x.data(), in);
    REQUIRE(full.forward(xv, ws.ws).is_ok());
    REQUIRE(part.forward(xv, ws.ws).is_ok());
    const Shape os = full.output().shape;
    std::vector<float> da(std::size_t(os.size())), db;
    for (auto& v : da) v = nd(gen);
    db = da;
    const Shape ps{in.n, in.h, in.w, in.c - c.from};
    std::vector<float> dxa(std::size_t(in.size()), 0.0f), dxb(std::size_t(ps.size()), 0.0f);
    REQUIRE(full.backward(xv, Tensor::dense(da.data(), os), Tensor::dense(dxa.data(), in), false, ws.ws).is_ok());
    REQUIRE(part.backward(xv, Tensor::dense(db.data(), os), Tensor::dense(dxb.data(), ps), false, ws.ws).is_ok());
    bool same = true;
    double largest = 0;
    for (index_t p = 0; p < in.n * in.pixels(); ++p)
      for (int ch = c.from; ch < in.c; ++ch) {
        const float a = dxa[std::size_t(p * in.c + ch)], b = dxb[std::size_t(p * ps.c + ch - c.from)];
        same = same && a == b;
        largest = std::max(largest, double(std::fabs(a)));
      }
    CHECK(same);
    CHECK(largest > 0);  // the gradient reached the input
    CHECK(same_bits(slots_of(full), slots_of(part)));
    // A dx with the channels of the whole input is refused once the range is set.
    std::vector<float> da2(std::size_t(os.size()), 1.0f);
    CHECK_FALSE(part.backward(xv, Tensor::dense(da2.data(), os), Tensor::dense(dxa.data(), in), false, ws.ws).is_ok());
  }
}

// The layers Winograd F(4x4, 3x3) runs (3x3 stride-1, >= 16 channels in and out) against
// the same network on the direct kernels only: output, input gradient and every parameter
// gradient agree to the transforms' rounding (relative L2 error, measured <= 6e-6, allowed
// 1e-4; a wrong pass, weight layout or channel range gives errors of order 1). Odd map
// (partial tiles), projection and identity blocks, a block on the direct kernels (8
// channels) after a Winograd one, serial and threaded. Two blocks: through more, sums that
// cancel (a BN bias gradient behind a BN's zero-mean input gradient) make the comparison
// ill-conditioned rather than wrong.
TEST_CASE_TEMPLATE("Winograd layers give the direct kernels' forward and gradients", Arch, EDGENN_TEST_ARCHS) {
  for (int second_cout : {64, 8}) {
    for (int threads : {1, 2}) {
      CAPTURE(second_cout);
      CAPTURE(threads);
      auto make = [&] {
        nn::Network<Arch> n;
        n.add(nn::BasicBlock<Arch>::make("a", 96, 64, 1));
        n.add(nn::BasicBlock<Arch>::make("b", 64, second_cout, 1));
        return n;
      };
      std::mt19937 gen(5);
      std::normal_distribution<float> nd(0.0f, 0.3f);
      TwinNetworks<Arch> twins(make, gen, nd);
      train::NetworkTrain<Arch>& wino = twins.a;
      train::NetworkTrain<Arch>& direct = twins.b;
      direct.set_winograd(false);
      // The fast path is really taken: the 3x3 layers' forward and gradients where both sides
      // have at least 16 channels (block b on 8 output channels: the direct kernels).
      const auto& a = std::get<train::BasicBlockTrain<Arch>>(wino.units[0]);
      const auto& b = std::get<train::BasicBlockTrain<Arch>>(wino.units[1]);
      CHECK(a.c1.winograd());
      CHECK(a.c1.winograd(96));
      CHECK(a.c2.winograd());
      CHECK(b.c2.winograd() == (second_cout == 64));
      CHECK_FALSE(std::get<train::BasicBlockTrain<Arch>>(direct.units[0]).c1.winograd());
      const TwinStep r = twin_step(wino, direct, Shape{4, 9, 9, 96}, threads, gen, nd);
      CHECK(test::max_rel_err(r.y[0], r.y[1]) < 1e-4);
      CHECK(rel_l2(r.dx[0].data(), r.dx[1].data(), r.dx[0].size()) < 1e-4);
      const auto sa = slots_of(wino), sb = slots_of(direct);
      REQUIRE(sa.size() == sb.size());
      for (std::size_t q = 0; q < sa.size(); ++q) {
        CAPTURE(sa[q].name);
        CHECK(rel_l2(sa[q].grad, sb[q].grad, sa[q].size) < 1e-4);
      }
    }
  }
}

// ConvBNTrain runs the batch in slices that stay in cache (slice_bytes): the convolution and
// the BN channel sums slice by slice, then dz, dW and dx slice by slice. Slices of one item
// must give the whole batch's results: the forward and dx to the bit (the same sums in the
// same order), the weight gradients up to the rounding of adding the slices' shares.
TEST_CASE_TEMPLATE("batch slices give the whole batch's forward and gradients", Arch, EDGENN_TEST_ARCHS) {
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    auto make = [&] {
      nn::Network<Arch> n;
      n.add(nn::BasicBlock<Arch>::make("a", 16, 16, 1));   // Winograd forward, dx and dW
      n.add(nn::BasicBlock<Arch>::make("b", 16, 32, 2));   // stride 2 and a 1x1 shortcut: direct
      n.add(nn::BasicBlock<Arch>::make("c", 32, 64, 1));   // 1x1 shortcut, Winograd
      return n;
    };
    std::mt19937 gen(9);
    std::normal_distribution<float> nd(0.0f, 0.3f);
    TwinNetworks<Arch> twins(make, gen, nd);
    train::NetworkTrain<Arch>& sliced = twins.a;
    train::NetworkTrain<Arch>& whole = twins.b;
    sliced.set_slice_bytes(1);  // one item per slice
    const auto& c = std::get<train::BasicBlockTrain<Arch>>(sliced.units[2]);
    CHECK(c.c2.winograd());
    CHECK(c.c1.slice_items(Shape{5, 9, 9, 64}) == 1);
    CHECK(std::get<train::BasicBlockTrain<Arch>>(whole.units[0]).c1.slice_items(Shape{5, 9, 9, 16}) >= 5);
    const TwinStep r = twin_step(sliced, whole, Shape{5, 9, 9, 16}, threads, gen, nd);
    CHECK(std::memcmp(r.y[0].data(), r.y[1].data(), r.y[0].size() * sizeof(float)) == 0);
    CHECK(std::memcmp(r.dx[0].data(), r.dx[1].data(), r.dx[0].size() * sizeof(float)) == 0);
    const auto sa = slots_of(sliced), sb = slots_of(whole);
    REQUIRE(sa.size() == sb.size());
    for (std::size_t q = 0; q < sa.size(); ++q) {
      CAPTURE(sa[q].name);
      CHECK(std::any_of(sb[q].grad, sb[q].grad + sb[q].size, [](float g) { return g != 0.0f; }));
      CHECK(rel_l2(sa[q].grad, sb[q].grad, sa[q].size) < 1e-5);
    }
  }
}

// Passes fused across units compute the same values as passes of their own: a unit's BN
// normalisation deferred into the next unit's forward (each slice of the input normalised
// right before it is convolved), and its BN backward sums taken on the slices of the next
// unit's input gradient (after an identity shortcut's gradient is added). Forward and every
// gradient must be the separate passes' to the bit. A stem, Winograd and direct blocks, a
// strided block whose shortcut reads the deferred input, slices of one item and of the whole
// batch, serial and threaded.
TEST_CASE_TEMPLATE("passes fused across units equal passes of their own", Arch, EDGENN_TEST_ARCHS) {
  for (int threads : {1, 2}) {
    for (std::size_t slice_bytes : {std::size_t(1), train::ConvBNTrain<Arch>::kSliceBytes}) {
      CAPTURE(threads);
      CAPTURE(slice_bytes);
      auto make = [&] {
        nn::Network<Arch> n;
        n.add(nn::make_conv_bn<Arch>("stem", "stem_bn", 3, 16, 3, 1, 1, Activation::relu));
        n.add(nn::BasicBlock<Arch>::make("a", 16, 16, 1));  // Winograd
        n.add(nn::BasicBlock<Arch>::make("b", 16, 32, 2));  // stride 2, 1x1 shortcut on the deferred input
        n.add(nn::BasicBlock<Arch>::make("c", 32, 32, 1));
        return n;
      };
      std::mt19937 gen(21);
      std::normal_distribution<float> nd(0.0f, 0.3f);
      TwinNetworks<Arch> twins(make, gen, nd);
      twins.b.set_cross_unit_fusion(false);
      for (auto* n : {&twins.a, &twins.b}) n->set_slice_bytes(slice_bytes);
      const TwinStep r = twin_step(twins.a, twins.b, Shape{4, 10, 10, 3}, threads, gen, nd);
      CHECK(std::memcmp(r.y[0].data(), r.y[1].data(), r.y[0].size() * sizeof(float)) == 0);
      CHECK(std::memcmp(r.dx[0].data(), r.dx[1].data(), r.dx[0].size() * sizeof(float)) == 0);
      const auto sa = slots_of(twins.a), sb = slots_of(twins.b);
      CHECK(sa.size() == 24);  // stem, 3 blocks x 2 layers, 1 shortcut: weight, BN gamma and beta
      CHECK(same_bits(sa, sb));
      for (const auto& q : sa) {
        CAPTURE(q.name);
        CHECK(std::any_of(q.grad, q.grad + q.size, [](float g) { return g != 0.0f; }));
      }
    }
  }
  // The deferral really happens: the stem's output is left as it was until the next unit's
  // forward reads it, and is then the normalised output.
  auto make = [] {
    nn::Network<Arch> n;
    n.add(nn::make_conv_bn<Arch>("stem", "stem_bn", 3, 16, 3, 1, 1, Activation::relu));
    n.add(nn::BasicBlock<Arch>::make("a", 16, 16, 1));
    return n;
  };
  std::mt19937 gen(22);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  TwinNetworks<Arch> twins(make, gen, nd);
  const Shape in{3, 8, 8, 3};
  std::vector<float> x(std::size_t(in.size()));
  for (auto& v : x) v = nd(gen);
  const ConstTensor xv = ConstTensor::dense(x.data(), in);
  test::OwnedWorkspace ws(twins.a.workspace_bytes(in));
  twins.b.set_cross_unit_fusion(false);
  REQUIRE(twins.b.forward(xv, ws.ws).is_ok());
  auto& stem = std::get<train::ConvBNTrain<Arch>>(twins.a.units[0]);
  auto& block = std::get<train::BasicBlockTrain<Arch>>(twins.a.units[1]);
  const Shape ss = stem.layer->output_shape(in);
  std::vector<float> ys(std::size_t(ss.size()), 7.0f), out(std::size_t(ss.size()));
  const Tensor ysv = Tensor::dense(ys.data(), ss);
  REQUIRE(stem.forward(xv, ysv, ws.ws, nullptr, nullptr, true).is_ok());
  CHECK(stem.pending.on);
  CHECK(std::all_of(ys.begin(), ys.end(), [](float v) { return v == 7.0f; }));
  REQUIRE(block.forward(ysv, Tensor::dense(out.data(), ss), ws.ws, &stem, false).is_ok());
  CHECK_FALSE(stem.pending.on);
  CHECK(std::memcmp(ys.data(), twins.b.acts[0].data(), ys.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(out.data(), twins.b.acts[1].data(), out.size() * sizeof(float)) == 0);
  // A consumer given another tensor than the deferred output is refused.
  REQUIRE(stem.forward(xv, ysv, ws.ws, nullptr, nullptr, true).is_ok());
  std::vector<float> other(ys.size(), 0.0f);
  const Status s = block.forward(Tensor::dense(other.data(), ss), Tensor::dense(out.data(), ss), ws.ws, &stem);
  CHECK(s.code() == Error::invalid_argument);
  // The backward feeds the previous unit's BN sums (an identity block after the stem).
  std::vector<float> g(std::size_t(ss.size()), 0.5f), dxs(std::size_t(ss.size()));
  REQUIRE(twins.a.forward(xv, ws.ws).is_ok());
  REQUIRE(block.backward(ConstTensor::dense(twins.a.acts[0].data(), ss), twins.a.output(), Tensor::dense(g.data(), ss),
                         Tensor::dense(dxs.data(), ss), false, ws.ws, &stem)
              .is_ok());
  CHECK(stem.sums_from_consumer);
}

// A block's first layer takes its BN backward sums on each slice of the second layer's input
// gradient, right after that slice is written (ConvBNTrain::backward's producer), instead of in
// a pass of its own: the same sums in the same order, so every gradient must be the one of the
// separate pass to the bit. Winograd and direct layers, slices of one item and of the whole
// batch, serial and threaded.
TEST_CASE_TEMPLATE("a block's first BN sums taken on the second layer's dx slices equal a pass of their own",
                   Arch, EDGENN_TEST_ARCHS) {
  for (int cin : {16, 8}) {
    for (int threads : {1, 2}) {
      for (std::size_t slice_bytes : {std::size_t(1), train::ConvBNTrain<Arch>::kSliceBytes}) {
        CAPTURE(cin);
        CAPTURE(threads);
        CAPTURE(slice_bytes);
        auto make = [&] {
          nn::Network<Arch> n;
          n.add(nn::BasicBlock<Arch>::make("a", cin, cin == 16 ? 32 : 12, 1));  // a projection shortcut
          return n;
        };
        std::mt19937 gen(13);
        std::normal_distribution<float> nd(0.0f, 0.4f);
        TwinNetworks<Arch> twins(make, gen, nd);
        train::NetworkTrain<Arch>* t[2] = {&twins.a, &twins.b};
        auto& separate = std::get<train::BasicBlockTrain<Arch>>(twins.b.units[0]);
        CHECK(separate.c2.winograd() == (cin == 16));
        const Shape in{5, 9, 9, cin};
        std::vector<float> x(std::size_t(in.size()));
        for (auto& v : x) v = nd(gen);
        const ConstTensor xv = ConstTensor::dense(x.data(), in);
        std::unique_ptr<train::Parallel> par;
        const std::size_t bytes = twins.a.workspace_bytes(in);
        if (threads > 1) {
          par = std::make_unique<train::Parallel>(threads);
          par->reserve_workspace(bytes);
        }
        test::OwnedWorkspace ws(bytes);
        for (auto* n : t) {
          n->set_parallel(par.get());
          n->set_slice_bytes(slice_bytes);
          REQUIRE(n->forward(xv, ws.ws).is_ok());
        }
        const Shape os = twins.a.output().shape;
        std::vector<float> dy(std::size_t(os.size()));
        for (auto& v : dy) v = nd(gen);
        std::vector<float> d0 = dy, d1 = dy, dx0(x.size()), dx1(x.size());
        // The fused side really takes the first layer's sums from the second layer's slices.
        auto& fused = std::get<train::BasicBlockTrain<Arch>>(twins.a.units[0]);
        std::vector<float> dm0(std::size_t(fused.block->conv1.output_shape(in).size()));
        {
          std::vector<float> probe = dy;
          const Tensor dmv0 = Tensor::dense(dm0.data(), fused.block->conv1.output_shape(in));
          REQUIRE(fused.c2.backward(ConstTensor::dense(fused.mid.data(), dmv0.shape), twins.a.output(),
                                    Tensor::dense(probe.data(), os), dmv0, false, ws.ws, &fused.c1)
                      .is_ok());
          CHECK(fused.c1.sums_from_consumer);
          REQUIRE(twins.a.forward(xv, ws.ws).is_ok());  // a new step drops them
          CHECK_FALSE(fused.c1.sums_from_consumer);
        }
        REQUIRE(twins.a.backward(xv, Tensor::dense(d0.data(), os), Tensor::dense(dx0.data(), in), false, ws.ws).is_ok());
        // BasicBlockTrain::backward's steps with the first layer's sums in their own pass.
        const Shape ms = separate.block->conv1.output_shape(in);
        const ConstTensor mid = ConstTensor::dense(separate.mid.data(), ms);
        std::vector<float> dm(std::size_t(ms.size()));
        const Tensor dmv = Tensor::dense(dm.data(), ms), dd1 = Tensor::dense(d1.data(), os);
        const Tensor dxv = Tensor::dense(dx1.data(), in);
        REQUIRE(separate.c2.backward(mid, twins.b.output(), dd1, dmv, false, ws.ws).is_ok());
        REQUIRE(separate.c1.backward(xv, mid, dmv, dxv, false, ws.ws).is_ok());
        REQUIRE(separate.ds.backward(xv, ConstTensor(), dd1, dxv, true, ws.ws).is_ok());
        for (auto* n : t) n->set_parallel(nullptr);  // par ends here
        CHECK(std::memcmp(dx0.data(), dx1.data(), dx0.size() * sizeof(float)) == 0);
        const auto sa = slots_of(twins.a), sb = slots_of(twins.b);
        CHECK(sa.size() == 9);  // conv1, conv2, shortcut: weights, BN gamma and beta
        CHECK(same_bits(sa, sb));
        for (const auto& q : sa) {
          CAPTURE(q.name);
          CHECK(std::any_of(q.grad, q.grad + q.size, [](float g) { return g != 0.0f; }));
        }
      }
    }
  }
}

// Training buffers from the large-page pool (Linux, not under AddressSanitizer): packed
// into shared regions, each pooled one on a cache line, never overlapping, kept through growth and
// frees of their neighbours; a region is returned once all of its buffers are freed.
TEST_CASE("large-page buffers: disjoint, aligned, kept through growth, regions returned") {
#if EDGENN_LARGE_PAGE_POOL
  const std::size_t regions_before = train::detail::LargePagePool::instance().regions();
#endif
  std::mt19937 gen(5);
  std::uniform_int_distribution<int> size_kb(1, 3000), pick(0, 15);
  std::vector<train::LargeVector<float>> bufs(16);
  auto fill = [](train::LargeVector<float>& v, std::size_t id) {
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = float((id * 131 + i) % 1021);
  };
  std::vector<std::size_t> ids(bufs.size(), 0);
  bool intact = true, aligned = true;
  for (int step = 0; step < 300; ++step) {
    const std::size_t k = std::size_t(pick(gen));
    if (step % 3 == 2) {
      bufs[k] = {};  // freed
      bufs[k].shrink_to_fit();
    } else {
      bufs[k].resize(std::size_t(size_kb(gen)) * 256);  // 1 KB .. 3 MB, grown or shrunk
      ids[k] = std::size_t(step) + 1;
      fill(bufs[k], ids[k]);
      if (bufs[k].capacity() * sizeof(float) >= train::LargePageAllocator<float>::kPooledMinBytes && EDGENN_LARGE_PAGE_POOL)
        aligned = aligned && reinterpret_cast<std::uintptr_t>(bufs[k].data()) % 64 == 0;
    }
    for (std::size_t j = 0; j < bufs.size(); ++j)  // every live buffer still holds its own values
      for (std::size_t i = 0; i < bufs[j].size(); i += 97) intact = intact && bufs[j][i] == float((ids[j] * 131 + i) % 1021);
  }
  CHECK(intact);
  CHECK(aligned);
  train::LargeVector<float> grown(100, 2.0f);
  grown.resize(train::kLargePageBytes / sizeof(float) * 2, 3.0f);  // from the plain allocator into the pool
  CHECK(grown[99] == 2.0f);
  CHECK(grown.back() == 3.0f);
  bufs.clear();
  grown = {};
  grown.shrink_to_fit();
#if EDGENN_LARGE_PAGE_POOL
  CHECK(train::detail::LargePagePool::instance().regions() == regions_before);
#endif
}

TEST_CASE("thread pool: every task runs exactly once, over many back-to-back hand-offs") {
  for (const int threads : {2, 3, 5}) {
    CAPTURE(threads);
    runtime::ThreadPool pool(threads);
    std::vector<int> count(16, 0);
    long long total = 0;
    for (int round = 0; round < 3000; ++round) {
      const int tasks = 1 + round % 16;
      pool.parallel_for(tasks, [&](int t) { ++count[std::size_t(t)]; });  // task t owns count[t]
      for (int t = 0; t < tasks; ++t) total += count[std::size_t(t)];
      std::fill(count.begin(), count.end(), 0);
      if (round % 500 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // workers fall asleep
    }
    long long expect = 0;
    for (int round = 0; round < 3000; ++round) expect += 1 + round % 16;
    CHECK(total == expect);
  }
}

}  // namespace test_train
