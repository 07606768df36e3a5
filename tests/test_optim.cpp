// Optimizers against torch.optim golden vectors (tests/golden/optim/, tools/gen_golden_optim.py)
// and the learning-rate schedules against their defining formulas.
#include <algorithm>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "edgenn/io/safetensors.hpp"
#include "edgenn/train/optim.hpp"
#include "edgenn/train/schedule.hpp"
#include "support/golden_support.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_optim {

using namespace edgenn;

namespace {

std::vector<double> get64(const io::SafeTensors& st, const std::string& name) {
  const io::TensorInfo* t = st.find(name);
  REQUIRE(t);
  REQUIRE(t->dtype == io::DType::f64);
  std::vector<double> v(std::size_t(t->shape[0]));
  std::memcpy(v.data(), st.bytes(*t), v.size() * sizeof(double));
  return v;
}

}  // namespace

TEST_CASE("optimizers match torch.optim step by step") {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(std::string(EDGENN_SOURCE_DIR) + "/tests/golden/optim"))
    if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 8);
  for (const auto& path : files) {
    CAPTURE(path);
    auto loaded = io::SafeTensors::load(path);
    REQUIRE_MESSAGE(loaded.ok(), loaded.error());
    const io::SafeTensors& st = *loaded;
    const auto cfg = nlohmann::json::parse(st.metadata().at("config"));
    const auto lrs = get64(st, "lr");
    const int steps = int(lrs.size());
    std::vector<std::vector<float>> p, g, expect, grad;
    std::vector<train::ParamSlot> slots;
    for (int i = 0; i < 2; ++i) {
      p.push_back(test::read_f32(st, "p0_" + std::to_string(i)));
      g.push_back(test::read_f32(st, "g_" + std::to_string(i)));
      expect.push_back(test::read_f32(st, "p_" + std::to_string(i)));
      grad.emplace_back(p.back().size());
    }
    for (int i = 0; i < 2; ++i)
      slots.push_back(train::ParamSlot{"p" + std::to_string(i), p[std::size_t(i)].data(), grad[std::size_t(i)].data(),
                                       p[std::size_t(i)].size(), true});
    const std::string kind = cfg["opt"];
    const double wd = cfg.value("weight_decay", 0.0);
    train::Sgd sgd;
    train::Adam adam;
    if (kind == "sgd") {
      train::SgdConfig c;
      c.momentum = cfg.value("momentum", 0.0);
      c.dampening = cfg.value("dampening", 0.0);
      c.nesterov = cfg.value("nesterov", false);
      c.weight_decay = wd;
      c.decay_mode = cfg.value("decoupled", false) ? train::WeightDecay::decoupled : train::WeightDecay::coupled;
      sgd = train::Sgd(slots, c);
    } else {
      train::AdamConfig c;
      if (cfg.contains("betas")) {
        c.beta1 = cfg["betas"][0];
        c.beta2 = cfg["betas"][1];
      }
      c.eps = cfg.value("eps", 1e-8);
      c.weight_decay = wd;
      c.decay_mode = kind == "adamw" ? train::WeightDecay::decoupled : train::WeightDecay::coupled;
      adam = train::Adam(slots, c);
    }
    for (int s = 0; s < steps; ++s) {
      // The schedule the generator used: cosine over two "epochs" of `steps` steps (numpy's
      // vectorised cos may differ from libm in the last bit).
      CHECK(std::fabs(train::cosine_lr(double(cfg["lr"]), 0, s, steps, 2) - lrs[std::size_t(s)]) <=
            1e-15 * lrs[std::size_t(0)]);
      for (int i = 0; i < 2; ++i) {
        const std::size_t n = p[std::size_t(i)].size();
        std::copy_n(g[std::size_t(i)].begin() + std::ptrdiff_t(std::size_t(s) * n), n, grad[std::size_t(i)].begin());
      }
      REQUIRE((kind == "sgd" ? sgd.step(lrs[std::size_t(s)]) : adam.step(lrs[std::size_t(s)])).is_ok());
      for (int i = 0; i < 2; ++i) {
        const std::size_t n = p[std::size_t(i)].size();
        double err = 0;
        for (std::size_t j = 0; j < n; ++j) {
          const double e = expect[std::size_t(i)][std::size_t(s) * n + j];
          err = std::max(err, std::fabs(p[std::size_t(i)][j] - e) / std::max(1.0, std::fabs(e)));
        }
        // Same float32 operations in the same order; only FMA contraction may differ.
        CHECK_MESSAGE(err < 2e-6, "step ", s, " tensor ", i, ": max relative error ", err);
      }
    }
  }
}

TEST_CASE("frozen slots and decay exemptions") {
  std::vector<float> w{1.0f, -2.0f}, gw{0.0f, 0.0f};
  train::SgdConfig c;
  c.momentum = 0.9;
  c.weight_decay = 0.1;
  train::Sgd sgd({train::ParamSlot{"w", w.data(), gw.data(), 2, false}}, c);
  REQUIRE(sgd.step(0.5).is_ok());
  CHECK(w[0] == 1.0f);  // zero gradient and no decay: unchanged
  CHECK(w[1] == -2.0f);
}

TEST_CASE("schedules") {
  train::LrSchedule s;
  s.kind = train::ScheduleKind::cosine;
  s.base = 0.05;
  s.total_steps = 10 * 7;
  for (int e = 0; e < 10; ++e)
    for (int k = 0; k < 7; ++k) CHECK(s.at(e * 7 + k) == train::cosine_lr(0.05, e, k, 7, 10));
  CHECK(s.at(0) == 0.05);
  CHECK(std::fabs(s.at(35) - 0.025) < 1e-15);
  s.kind = train::ScheduleKind::step;
  s.base = 0.1;
  s.step_size = 3;
  s.gamma = 0.5;
  CHECK(s.at(2) == 0.1);
  CHECK(s.at(3) == 0.05);
  CHECK(s.at(7) == 0.025);
  s.warmup_steps = 4;
  CHECK(s.at(0) == 0.1 * 0.25);
  CHECK(s.at(3) == 0.05);
}

}  // namespace test_optim
