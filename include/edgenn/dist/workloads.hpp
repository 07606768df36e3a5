// Fused stacks of the workloads (docs/tiled_training.md):
//   yolov2_front: the first 16 layers of YOLOv2 (Darknet-19 front), the seed's workload, at any
//                 input size divisible by 16 (608 in the paper; smaller for tests). Leaky ReLU is
//                 not among the engine's activations: ReLU stands in (same cost, same halos),
//                 and BN is folded into the convs (frozen BN is per-pixel, so fusable).
//   fmnist_front: the feature-map-heavy front of a Fashion-MNIST classifier on images
//                 upsampled to size x size (>= 112); the tail (global average pool + linear +
//                 softmax cross-entropy) runs on the head rank.
#pragma once

#include "edgenn/dist/plan.hpp"

namespace edgenn::dist {

inline Stack yolov2_front(int size, int in_c = 3) {
  Stack s;
  s.in_h = s.in_w = size;
  s.in_c = in_c;
  // C M C M C C C M C C C M C C C C; kernels 3 2 3 2 3 1 3 2 3 1 3 2 3 1 3 1
  const char types[] = "CMCMCCCMCCCMCCCC";
  const int k[] = {3, 2, 3, 2, 3, 1, 3, 2, 3, 1, 3, 2, 3, 1, 3, 1};
  const int f[] = {32, 0, 64, 0, 128, 64, 128, 0, 256, 128, 256, 0, 512, 256, 512, 256};
  int c = in_c;
  for (int l = 0; l < 16; ++l) {
    if (types[l] == 'M') {
      s.layers.push_back(LayerDesc::maxpool(c, 2, 2));
    } else {
      s.layers.push_back(LayerDesc::conv(c, f[l], k[l], 1, k[l] / 2, Activation::relu));
      c = f[l];
    }
  }
  return s;
}

inline Stack fmnist_front(int size) {
  Stack s;
  s.in_h = s.in_w = size;
  s.in_c = 1;
  s.layers = {LayerDesc::conv(1, 16, 3, 1, 1, Activation::relu),  LayerDesc::maxpool(16),
              LayerDesc::conv(16, 32, 3, 1, 1, Activation::relu), LayerDesc::maxpool(32),
              LayerDesc::conv(32, 32, 3, 1, 1, Activation::relu), LayerDesc::maxpool(32),
              LayerDesc::conv(32, 64, 3, 1, 1, Activation::relu)};
  return s;
}

}  // namespace edgenn::dist
