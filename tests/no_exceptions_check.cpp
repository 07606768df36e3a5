// Compiled with -fno-exceptions -fno-rtti: the firmware-safe umbrella and every kernel
// instantiation must build that way (the Cortex-M check compiles this file too).
#include <edgenn/edgenn.hpp>

namespace {
template <class Arch>
int instantiate_all() {
  using namespace edgenn;
  static float x[1 * 4 * 4 * 3], y[1 * 4 * 4 * 5], w[5 * 9 * 3], b[5], packed[2048], g[8];
  alignas(64) static unsigned char mem[512];
  Workspace ws(mem, sizeof mem);
  const auto p = kernels::Conv2dParams::square(3, 1, 1);
  const auto pw = kernels::pack_conv_weights<Arch>(p, 3, 5, w, b, packed);
  int fails = 0;
  fails += !kernels::conv2d<Arch>(p, ConstTensor::dense(x, {1, 4, 4, 3}), pw, Tensor::dense(y, {1, 4, 4, 5}), ws).is_ok();
  auto dp = kernels::Conv2dParams::square(3, 2, 1, 3);
  const auto dw = kernels::pack_depthwise_weights<Arch>(dp, 3, w, b, packed);
  fails += !kernels::depthwise_conv2d<Arch>(dp, ConstTensor::dense(x, {1, 4, 4, 3}), dw, Tensor::dense(y, {1, 2, 2, 3}), ws).is_ok();
  const auto fc = kernels::pack_fc_weights<Arch>(3, 5, w, b, packed);
  fails += !kernels::fully_connected<Arch>(1, x, 3, fc, y, 5).is_ok();
  fails += !kernels::max_pool2d<Arch>(kernels::Pool2dParams::square(2, 2), ConstTensor::dense(x, {1, 4, 4, 3}), Tensor::dense(y, {1, 2, 2, 3})).is_ok();
  fails += !kernels::avg_pool2d<Arch>(kernels::Pool2dParams::square(2, 2), ConstTensor::dense(x, {1, 4, 4, 3}), Tensor::dense(y, {1, 2, 2, 3})).is_ok();
  fails += !kernels::global_avg_pool<Arch>(ConstTensor::dense(x, {1, 4, 4, 3}), g, 3).is_ok();
  fails += !kernels::add<Arch>(ConstTensor::dense(x, {1, 4, 4, 3}), ConstTensor::dense(x, {1, 4, 4, 3}), Tensor::dense(y, {1, 4, 4, 3})).is_ok();
  fails += !kernels::softmax(1, 3, x, 3, g, 3).is_ok();
  return fails;
}
}  // namespace

int edgenn_no_exceptions_check() {
  return instantiate_all<edgenn::simd::default_arch>() + instantiate_all<edgenn::simd::scalar>();
}

#if defined(EDGENN_CHECK_MAIN)
int main() { return edgenn_no_exceptions_check(); }
#endif
