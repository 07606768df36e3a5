// Non-owning NHWC tensor views over caller memory.
//
// Channels are contiguous; pixel, row and batch strides are free, so one view type covers a
// dense tensor, a channel slice of a wider buffer (zero-copy concat), and a rectangular tile
// of a feature map (the cluster runtime runs kernels on tiles).
#pragma once

#include "edgenn/core/shape.hpp"

namespace edgenn {

template <class T>
struct TensorView {
  T* data = nullptr;
  Shape shape{};
  index_t stride_n = 0;  // elements between batch items
  index_t stride_h = 0;  // elements between rows
  index_t stride_w = 0;  // elements between pixels (>= shape.c)

  constexpr TensorView() = default;
  constexpr TensorView(T* p, Shape s, index_t sn, index_t sh, index_t sw)
      : data(p), shape(s), stride_n(sn), stride_h(sh), stride_w(sw) {}

  // A densely packed tensor.
  static constexpr TensorView dense(T* p, Shape s) {
    return TensorView(p, s, index_t(s.h) * s.w * s.c, index_t(s.w) * s.c, s.c);
  }

  // Read-only view of the same memory.
  constexpr operator TensorView<const T>() const {  // NOLINT: implicit on purpose
    return TensorView<const T>(data, shape, stride_n, stride_h, stride_w);
  }

  constexpr int n() const { return shape.n; }
  constexpr int h() const { return shape.h; }
  constexpr int w() const { return shape.w; }
  constexpr int c() const { return shape.c; }

  constexpr T* pixel(index_t b, index_t y, index_t x) const {
    return data + b * stride_n + y * stride_h + x * stride_w;
  }
  constexpr T& at(index_t b, index_t y, index_t x, index_t ch) const { return pixel(b, y, x)[ch]; }

  constexpr bool is_dense() const {
    return stride_w == shape.c && stride_h == index_t(shape.w) * shape.c &&
           (shape.n <= 1 || stride_n == index_t(shape.h) * shape.w * shape.c);
  }

  // Channels [c0, c0 + count) of every pixel.
  constexpr TensorView channels(int c0, int count) const {
    return TensorView(data + c0, Shape{shape.n, shape.h, shape.w, count}, stride_n, stride_h, stride_w);
  }
  // Rows [y0, y0 + hh) and columns [x0, x0 + ww).
  constexpr TensorView region(int y0, int x0, int hh, int ww) const {
    return TensorView(pixel(0, y0, x0), Shape{shape.n, hh, ww, shape.c}, stride_n, stride_h, stride_w);
  }
  // Batch items [b0, b0 + count).
  constexpr TensorView items(int b0, int count) const {
    return TensorView(data + b0 * stride_n, Shape{count, shape.h, shape.w, shape.c}, stride_n, stride_h,
                      stride_w);
  }
};

template <class T>
using ConstTensorView = TensorView<const T>;

using Tensor = TensorView<float>;
using ConstTensor = TensorView<const float>;

// True if the views' memory ranges could overlap (conservative: compares the spans).
template <class A, class B>
bool may_alias(const TensorView<A>& a, const TensorView<B>& b) {
  if (a.shape.empty() || b.shape.empty()) return false;
  auto span_end = [](const auto& v) {
    return v.pixel(v.shape.n - 1, v.shape.h - 1, v.shape.w - 1) + v.shape.c;
  };
  const void* a0 = a.data;
  const void* a1 = span_end(a);
  const void* b0 = b.data;
  const void* b1 = span_end(b);
  return !(a1 <= b0 || b1 <= a0);
}

}  // namespace edgenn
