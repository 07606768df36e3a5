// edgenn: the firmware-safe umbrella header. Core, SIMD layer and kernels (and, as they
// arrive, nn/ and train/): no exceptions, no RTTI, no allocation inside kernels, no OS.
// Networking (edgenn/net.hpp), the cluster runtime (edgenn/dist.hpp) and file/image
// loading (edgenn/io.hpp) have their own umbrellas and are never pulled in from here.
#pragma once

#include "edgenn/core/config.hpp"
#include "edgenn/core/shape.hpp"
#include "edgenn/core/status.hpp"
#include "edgenn/core/tensor.hpp"
#include "edgenn/core/workspace.hpp"
#include "edgenn/kernels.hpp"
#include "edgenn/nn.hpp"
#include "edgenn/simd/simd.hpp"
#include "edgenn/version.hpp"
