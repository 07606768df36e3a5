// edgenn/train.hpp: training on the device (docs/training.md): trainable layers, optimizers,
// schedules, the training steps, threads and the trainer (data, checkpoints, resume). Host-side: it owns std::vector
// storage and reads files, so edgenn.hpp (firmware-safe) does not include it; the backward
// kernels it runs are in edgenn/kernels.hpp.
#pragma once

#include "edgenn/train/large_pages.hpp"
#include "edgenn/train/layers.hpp"
#include "edgenn/train/optim.hpp"
#include "edgenn/train/parallel.hpp"
#include "edgenn/train/schedule.hpp"
#include "edgenn/train/steps.hpp"
#include "edgenn/train/trainer.hpp"
