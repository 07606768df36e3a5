// edgenn/dist.hpp: tiled distributed training of a CNN's front layers over MPI ranks
// (docs/tiled_training.md). Needs MPI (target edgenn::dist); never pulled in by edgenn.hpp.
#pragma once

#include "edgenn/dist/cost.hpp"
#include "edgenn/dist/model.hpp"
#include "edgenn/dist/mpi_runtime.hpp"
#include "edgenn/dist/plan.hpp"
#include "edgenn/dist/reference.hpp"
#include "edgenn/dist/simulate.hpp"
#include "edgenn/dist/tail.hpp"
#include "edgenn/dist/tile_exec.hpp"
#include "edgenn/dist/workloads.hpp"
