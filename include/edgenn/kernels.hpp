// All kernels: inference (forward) and training (backward, training-mode batch norm, loss).
// Pure functions over caller memory; no allocation.
#pragma once

#include "edgenn/kernels/activation.hpp"
#include "edgenn/kernels/batchnorm.hpp"
#include "edgenn/kernels/batchnorm_train.hpp"
#include "edgenn/kernels/conv2d.hpp"
#include "edgenn/kernels/conv2d_backward.hpp"
#include "edgenn/kernels/depthwise.hpp"
#include "edgenn/kernels/depthwise_backward.hpp"
#include "edgenn/kernels/elementwise.hpp"
#include "edgenn/kernels/elementwise_backward.hpp"
#include "edgenn/kernels/fully_connected.hpp"
#include "edgenn/kernels/fully_connected_backward.hpp"
#include "edgenn/kernels/gemm.hpp"
#include "edgenn/kernels/loss.hpp"
#include "edgenn/kernels/pooling.hpp"
#include "edgenn/kernels/pooling_backward.hpp"
#include "edgenn/kernels/softmax.hpp"
#include "edgenn/kernels/winograd.hpp"
