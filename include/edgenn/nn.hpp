// Layers, blocks and models (ResNet-CIFAR, MobileNetV2, MEANet). Built at load time
// (allocates once); forward passes run in the caller's workspace without allocating.
#pragma once

#include "edgenn/nn/blocks.hpp"
#include "edgenn/nn/classifier.hpp"
#include "edgenn/nn/conv_bn.hpp"
#include "edgenn/nn/linear.hpp"
#include "edgenn/nn/meanet.hpp"
#include "edgenn/nn/mobilenet_v2.hpp"
#include "edgenn/nn/network.hpp"
#include "edgenn/nn/preprocess.hpp"
#include "edgenn/nn/resnet.hpp"
