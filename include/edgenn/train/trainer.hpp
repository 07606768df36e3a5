// Trainer: the loop around a model's training step. Seeded shuffling, augmentation (random
// crop with zero padding, horizontal flip), batching, the learning-rate schedule and SGD,
// a progress line (loss, accuracy, images/s, ETA), validation after every epoch, checkpoints
// written atomically, and resume that continues exactly where a run stopped.
//
// Determinism: the permutation and the augmentation draws of epoch e come from one
// mt19937_64 seeded with (seed, e), drawn in a fixed order (the permutation, then per image:
// crop offset y, crop offset x, flip — the order of tools/pyref/data.py augment); integers
// are taken as rng() mod n so the stream does not depend on the standard library. A
// checkpoint stores the parameters, the optimizer state, the extra state (BN running
// statistics), the position (epoch, step) and the generator's state, so a resumed run
// computes the same bits as one that never stopped (same build, same thread count).
//
// Linux-side convenience: allocates, and reports errors as Status values.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "edgenn/io/idx.hpp"
#include "edgenn/io/safetensors.hpp"
#include "edgenn/train/optim.hpp"
#include "edgenn/train/schedule.hpp"

namespace edgenn::train {

using io::fail;
using io::Outcome;
using io::Result;

struct TrainerConfig {
  int epochs = 10;
  int batch = 128;
  double lr = 0.05;  // cosine per step over the whole run (tools/train_reference.py)
  SgdConfig sgd{0.9, 0.0, false, 5e-4, WeightDecay::coupled};
  int pad = 2;       // random crop offsets in [0, 2·pad]
  bool flip = true;
  std::uint64_t seed = 0;
  float mean = 0.0f, stddev = 1.0f;  // x = (pixel / 255 − mean) / stddev
  std::string checkpoint;            // path; empty = no checkpoints
  std::int64_t checkpoint_every = 0; // steps between checkpoints (0: at the end of every epoch only)
  std::int64_t stop_after = -1;      // stop (with a checkpoint) after this many global steps; -1 = run to the end
  bool progress = true;
};

// Images the trainer draws from: `index` selects samples of `images`, `labels[i]` is the
// training label of images.image(index[i]).
struct TrainSet {
  const io::ImageSet* images = nullptr;
  std::vector<int> index;
  std::vector<int> labels;
  int size() const { return int(index.size()); }
};

inline std::uint64_t draw(std::mt19937_64& rng, std::uint64_t n) { return rng() % n; }

// Random crop of the zero-padded image (offsets drawn y then x) and a flip with probability
// 1/2, as uint8 pixels.
inline void augment_crop_flip(const unsigned char* src, int h, int w, int pad, bool flip, std::mt19937_64& rng,
                              unsigned char* dst) {
  const int dy = pad > 0 ? int(draw(rng, std::uint64_t(2 * pad + 1))) : pad;
  const int dx = pad > 0 ? int(draw(rng, std::uint64_t(2 * pad + 1))) : pad;
  const bool f = flip && draw(rng, 2) == 1;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const int sy = y + dy - pad, sx = (f ? w - 1 - x : x) + dx - pad;
      dst[y * w + x] = (sy >= 0 && sy < h && sx >= 0 && sx < w) ? src[sy * w + sx] : 0;
    }
}

inline std::mt19937_64 epoch_rng(std::uint64_t seed, int epoch) {
  std::seed_seq s{std::uint32_t(seed), std::uint32_t(seed >> 32), std::uint32_t(epoch)};
  return std::mt19937_64(s);
}

inline std::vector<int> epoch_permutation(int n, std::mt19937_64& rng) {
  std::vector<int> p(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) p[std::size_t(i)] = i;
  for (int i = n - 1; i > 0; --i) std::swap(p[std::size_t(i)], p[std::size_t(draw(rng, std::uint64_t(i + 1)))]);
  return p;
}

struct EpochResult {
  int epoch = 0;
  double loss = 0, train_acc = 0, val_acc = -1, seconds = 0;
};

class Trainer {
 public:
  // Forward + backward of one batch: x (n images, normalised NHWC), the samples' positions
  // in the TrainSet (for per-sample caches such as MEANet's main features), their labels.
  // Writes the gradients of every slot, the mean loss and the number of correct predictions.
  using StepFn = std::function<Status(ConstTensor x, const int* samples, const int* labels, int n, float* loss,
                                      int* correct)>;
  using EvalFn = std::function<double()>;

  Trainer(TrainerConfig cfg, std::vector<ParamSlot> slots, std::vector<StateRef> state)
      : cfg_(std::move(cfg)), slots_(slots), state_(std::move(state)), opt_(std::move(slots), cfg_.sgd) {}

  Sgd& optimizer() { return opt_; }
  const std::vector<EpochResult>& history() const { return history_; }
  std::int64_t global_step() const { return global_; }
  bool finished() const { return finished_; }

  // Continue from cfg.checkpoint if it exists. Returns true if a checkpoint was loaded.
  Result<bool> resume() {
    if (cfg_.checkpoint.empty()) return false;
    if (std::FILE* f = std::fopen(cfg_.checkpoint.c_str(), "rb")) std::fclose(f);
    else return false;
    auto loaded = io::SafeTensors::load(cfg_.checkpoint);
    if (!loaded) return loaded.failure();
    const io::SafeTensors& st = *loaded;
    auto restore = [&](const std::string& name, float* dst, std::size_t n) -> Outcome {
      auto v = st.f32(name);
      if (!v) return v.failure();
      if (v->size() != n) return fail(Error::corrupt_data, cfg_.checkpoint + ": tensor " + name + " has the wrong size");
      std::copy(v->begin(), v->end(), dst);
      return io::success();
    };
    for (const auto& s : slots_)
      if (auto o = restore("param." + s.name, s.value, s.size); !o) return o.failure();
    Outcome ok = io::success();
    opt_.visit_state([&](const StateRef& r) {
      if (ok) ok = restore("opt." + r.name, r.data->data(), r.data->size());
    });
    if (!ok) return ok.failure();
    for (const auto& r : state_)
      if (auto o = restore("state." + r.name, r.data->data(), r.data->size()); !o) return o.failure();
    const auto& md = st.metadata();
    try {
      epoch_ = std::stoi(md.at("trainer.epoch"));
      step_ = std::stoll(md.at("trainer.step"));
      global_ = std::stoll(md.at("trainer.global_step"));
      opt_.set_steps(std::stoll(md.at("trainer.optimizer_steps")));
      tot_loss_ = std::stod(md.at("trainer.epoch_loss"));
      tot_correct_ = std::stoll(md.at("trainer.epoch_correct"));
      std::istringstream rs(md.at("trainer.rng"));
      rs >> rng_;
      rng_valid_ = step_ > 0;
    } catch (...) {
      return fail(Error::corrupt_data, cfg_.checkpoint + ": trainer metadata missing or malformed");
    }
    return true;
  }

  Outcome save_checkpoint() const {
    if (cfg_.checkpoint.empty()) return io::success();
    std::vector<io::TensorData> t;
    for (const auto& s : slots_)
      t.push_back(io::TensorData::from_f32("param." + s.name, {std::int64_t(s.size)}, s.value));
    const_cast<Sgd&>(opt_).visit_state([&](const StateRef& r) {
      t.push_back(io::TensorData::from_f32("opt." + r.name, {std::int64_t(r.data->size())}, r.data->data()));
    });
    for (const auto& r : state_)
      t.push_back(io::TensorData::from_f32("state." + r.name, {std::int64_t(r.data->size())}, r.data->data()));
    std::ostringstream rs;
    rs << rng_;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", tot_loss_);
    const std::map<std::string, std::string> md{{"trainer.epoch", std::to_string(epoch_)},
                                                {"trainer.step", std::to_string(step_)},
                                                {"trainer.global_step", std::to_string(global_)},
                                                {"trainer.optimizer_steps", std::to_string(opt_.steps())},
                                                {"trainer.epoch_loss", buf},
                                                {"trainer.epoch_correct", std::to_string(tot_correct_)},
                                                {"trainer.rng", rs.str()},
                                                {"trainer.seed", std::to_string(cfg_.seed)}};
    return io::save_safetensors(cfg_.checkpoint, t, md);
  }

  // Train until the end of the run or cfg.stop_after global steps.
  Outcome run(const TrainSet& data, const StepFn& step_fn, const EvalFn& eval = {}) {
    const io::ImageSet& im = *data.images;
    const int n = data.size(), B = cfg_.batch, h = im.height, w = im.width;
    if (n == 0) return fail(Error::invalid_argument, "trainer: empty training set");
    const std::int64_t steps = (n + B - 1) / B;
    LrSchedule sched;
    sched.kind = ScheduleKind::cosine;
    sched.base = cfg_.lr;
    sched.total_steps = steps * cfg_.epochs;
    std::vector<unsigned char> u8(std::size_t(B) * h * w);
    std::vector<float> x(u8.size());
    std::vector<int> samples(static_cast<std::size_t>(B)), labels(static_cast<std::size_t>(B));
    for (; epoch_ < cfg_.epochs; ++epoch_) {
      // The permutation comes first in the epoch's stream; a resumed run recomputes it and
      // then restores the generator's position inside the epoch.
      std::mt19937_64 fresh = epoch_rng(cfg_.seed, epoch_);
      const std::vector<int> perm = epoch_permutation(n, fresh);
      if (!rng_valid_) {
        rng_ = fresh;
        step_ = 0;
        tot_loss_ = 0;
        tot_correct_ = 0;
      }
      rng_valid_ = false;
      const auto t0 = std::chrono::steady_clock::now();
      std::int64_t seen_this_run = 0;
      for (; step_ < steps; ++step_) {
        if (cfg_.stop_after >= 0 && global_ >= cfg_.stop_after) {
          rng_valid_ = true;
          return save_checkpoint();
        }
        const int b0 = int(step_ * B), nb = std::min(B, n - b0);
        for (int i = 0; i < nb; ++i) {
          const int s = perm[std::size_t(b0 + i)];
          samples[std::size_t(i)] = s;
          labels[std::size_t(i)] = data.labels[std::size_t(s)];
          unsigned char* dst = u8.data() + std::size_t(i) * h * w;
          const unsigned char* src = im.image(data.index[std::size_t(s)]);
          if (cfg_.pad > 0 || cfg_.flip) augment_crop_flip(src, h, w, cfg_.pad, cfg_.flip, rng_, dst);
          else std::copy(src, src + std::size_t(h) * w, dst);
        }
        for (std::size_t k = 0; k < std::size_t(nb) * h * w; ++k)
          x[k] = (float(u8[k]) / 255.0f - cfg_.mean) / cfg_.stddev;
        float loss = 0;
        int correct = 0;
        if (Status st = step_fn(ConstTensor::dense(x.data(), Shape{nb, h, w, 1}), samples.data(), labels.data(), nb,
                                &loss, &correct);
            !st)
          return fail(st.code(), std::string("trainer: ") + st.message());
        const double lr = sched.at(epoch_ * steps + step_);
        if (Status st = opt_.step(lr); !st) return fail(st.code(), st.message());
        ++global_;
        tot_loss_ += double(loss) * nb;
        tot_correct_ += correct;
        seen_this_run += nb;
        const std::int64_t done = b0 + nb;
        if (cfg_.progress && (step_ % 20 == 0 || step_ == steps - 1)) {
          const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          const double ips = seen_this_run / std::max(el, 1e-9);
          const double left = (double(steps * cfg_.epochs - global_) * B) / std::max(ips, 1e-9);
          std::fprintf(stderr, "\repoch %d/%d step %lld/%lld loss %.4f acc %.4f lr %.4f %.0f img/s ETA %.0fs   ",
                       epoch_ + 1, cfg_.epochs, (long long)step_ + 1, (long long)steps, tot_loss_ / double(done),
                       double(tot_correct_) / double(done), lr, ips, left);
        }
        if (cfg_.checkpoint_every > 0 && global_ % cfg_.checkpoint_every == 0 && step_ + 1 < steps) {
          ++step_;
          rng_valid_ = true;
          auto o = save_checkpoint();
          rng_valid_ = false;
          --step_;
          if (!o) return o;
        }
      }
      EpochResult r;
      r.epoch = epoch_ + 1;
      r.loss = tot_loss_ / n;
      r.train_acc = double(tot_correct_) / n;
      r.val_acc = eval ? eval() : -1.0;
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      history_.push_back(r);
      if (cfg_.progress)
        std::fprintf(stderr, "\repoch %d/%d loss %.4f train %.4f val %.4f (%.0fs)%30s\n", r.epoch, cfg_.epochs, r.loss,
                     r.train_acc, r.val_acc, r.seconds, "");
      step_ = 0;
      {
        ++epoch_;
        auto o = save_checkpoint();
        --epoch_;
        if (!o) return o;
      }
    }
    finished_ = true;
    return io::success();
  }

 private:
  TrainerConfig cfg_;
  std::vector<ParamSlot> slots_;
  std::vector<StateRef> state_;
  Sgd opt_;
  std::mt19937_64 rng_;
  bool rng_valid_ = false;  // rng_ holds the position inside epoch_ (after a resume or stop)
  int epoch_ = 0;
  std::int64_t step_ = 0, global_ = 0, tot_correct_ = 0;
  double tot_loss_ = 0;
  std::vector<EpochResult> history_;
  bool finished_ = false;
};

}  // namespace edgenn::train
