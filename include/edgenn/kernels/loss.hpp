// Softmax cross-entropy over [batch][classes] logits with integer labels, mean over the batch,
// with PyTorch's label smoothing (F.cross_entropy(logits, labels, label_smoothing=eps)):
//   target_k = (1 - eps) * [k == label] + eps / classes
//   loss     = mean_b sum_k -target_k * log_softmax(z_b)_k
//   dz_b,k   = (softmax(z_b)_k - target_k) / batch
// log_softmax subtracts the row maximum first (no overflow); sums are double.
#pragma once

#include <cmath>

#include "edgenn/core/status.hpp"

namespace edgenn::kernels {

// logits: `batch` rows of `classes` floats at stride ld; labels: [batch] in [0, classes).
// Writes the mean loss to *loss and, if dlogits is not null, the gradient rows (stride lddz;
// dlogits may be the logits buffer itself). Needs nothing saved: the gradient comes from the
// logits alone.
inline Status softmax_cross_entropy(int batch, int classes, const float* logits, index_t ld, const int* labels,
                                    float label_smoothing, float* loss, float* dlogits = nullptr,
                                    index_t lddz = 0) {
  EDGENN_CHECK(batch > 0 && classes > 0 && logits && labels && loss, Error::invalid_argument,
               "softmax_cross_entropy: empty batch or null buffers");
  EDGENN_CHECK(ld >= classes && (!dlogits || lddz >= classes), Error::shape_mismatch,
               "softmax_cross_entropy: row stride below the number of classes");
  EDGENN_CHECK(label_smoothing >= 0.0f && label_smoothing <= 1.0f, Error::invalid_argument,
               "softmax_cross_entropy: label smoothing must be in [0, 1]");
  for (int b = 0; b < batch; ++b)
    EDGENN_CHECK(labels[b] >= 0 && labels[b] < classes, Error::invalid_argument,
                 "softmax_cross_entropy: label outside [0, classes)");
  const double eps = label_smoothing, off = eps / classes, on = 1.0 - eps + off;
  double total = 0.0;
  for (int b = 0; b < batch; ++b) {
    const float* z = logits + b * ld;
    float m = z[0];
    for (int k = 1; k < classes; ++k) m = z[k] > m ? z[k] : m;
    double sum_exp = 0.0, sum_z = 0.0;
    for (int k = 0; k < classes; ++k) {
      sum_exp += std::exp(double(z[k]) - m);
      sum_z += z[k];
    }
    const double lse = m + std::log(sum_exp);
    // sum_k -target_k (z_k - lse) = lse - (1 - eps) z_label - eps / classes * sum_k z_k
    total += lse - (1.0 - eps) * z[labels[b]] - off * sum_z;
    if (dlogits) {
      float* d = dlogits + b * lddz;
      const int label = labels[b];
      for (int k = 0; k < classes; ++k) {
        const double p = std::exp(double(z[k]) - lse);
        d[k] = float((p - (k == label ? on : off)) / batch);
      }
    }
  }
  *loss = float(total / batch);
  return Status::ok();
}

}  // namespace edgenn::kernels
