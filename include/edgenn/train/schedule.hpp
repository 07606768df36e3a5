// Learning-rate schedules, evaluated per optimizer step in double (as the Python reference
// does before handing the value to torch.optim).
#pragma once

#include <cmath>
#include <cstdint>

namespace edgenn::train {

enum class ScheduleKind { constant, step, cosine };

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::constant;
  double base = 0.1;
  std::int64_t total_steps = 1;   // cosine: steps of the whole run (epochs · steps per epoch)
  std::int64_t step_size = 1;     // step: decay every step_size steps ...
  double gamma = 0.1;             // ... by gamma
  std::int64_t warmup_steps = 0;  // linear warm-up from base/warmup_steps to base over these steps

  // Learning rate of global step `it` (0-based).
  double at(std::int64_t it) const {
    double lr = base;
    switch (kind) {
      case ScheduleKind::constant:
        break;
      case ScheduleKind::step:
        lr = base * std::pow(gamma, double(it / (step_size > 0 ? step_size : 1)));
        break;
      case ScheduleKind::cosine: {
        // tools/train_reference.py cosine_lr: t = (epoch·spe + step) / (epochs·spe).
        const double t = double(it) / double(total_steps);
        lr = 0.5 * base * (1.0 + std::cos(M_PI * t));
        break;
      }
    }
    if (warmup_steps > 0 && it < warmup_steps) lr *= double(it + 1) / double(warmup_steps);
    return lr;
  }
};

inline double cosine_lr(double base, std::int64_t epoch, std::int64_t step, std::int64_t steps_per_epoch,
                        std::int64_t epochs) {
  const double t = double(epoch * steps_per_epoch + step) / double(epochs * steps_per_epoch);
  return 0.5 * base * (1.0 + std::cos(M_PI * t));
}

}  // namespace edgenn::train
