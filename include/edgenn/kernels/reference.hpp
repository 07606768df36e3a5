// The naive reference kernels, kept beside the optimized ones for the tests.
#pragma once

#include "edgenn/kernels/reference/conv2d.hpp"
#include "edgenn/kernels/reference/elementwise.hpp"
#include "edgenn/kernels/reference/fully_connected.hpp"
#include "edgenn/kernels/reference/pooling.hpp"
#include "edgenn/kernels/reference/softmax.hpp"
