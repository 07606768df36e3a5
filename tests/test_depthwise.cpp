// depthwise_conv2d against the naive reference (grouped convolution with groups == C).
#include "edgenn/kernels/reference.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_depthwise {

using namespace edgenn;
using kernels::Conv2dParams;

namespace {

template <class Arch>
void run_case(const Conv2dParams& p, Shape in, bool residual, bool strided, bool split, test::Rng& r) {
  if (!p.validate(in, in.c).is_ok()) return;
  const Shape os = p.output_shape(in, in.c);
  auto x = test::Buffer::make(in, &r, strided, &r);
  auto w = r.vec(std::size_t(in.c) * p.taps());
  auto bias = r.vec(std::size_t(in.c));
  auto res = test::Buffer::make(os, &r, strided, &r);
  auto y = test::Buffer::make(os, &r, strided, &r);
  auto y_ref = test::Buffer::make(os, nullptr);
  std::vector<float> packed(std::size_t(kernels::depthwise_packed_floats<Arch>(p, in.c)));
  const auto dw = kernels::pack_depthwise_weights<Arch>(p, in.c, w.data(), bias.data(), packed.data());
  Workspace ws;
  const ConstTensor rv = res.view;
  const ConstTensor* rp = residual ? &rv : nullptr;
  if (split && os.h > 1) {
    REQUIRE(kernels::depthwise_conv2d<Arch>(p, x.view, dw, y.view, ws, rp, {0, os.h / 2}).is_ok());
    REQUIRE(kernels::depthwise_conv2d<Arch>(p, x.view, dw, y.view, ws, rp, {os.h / 2, os.h}).is_ok());
  } else {
    REQUIRE(kernels::depthwise_conv2d<Arch>(p, x.view, dw, y.view, ws, rp).is_ok());
  }
  ref::conv2d(p, x.view, w.data(), bias.data(), y_ref.view, rp);
  std::string where;
  const bool ok = test::close(test::to_dense(y.view), test::to_dense(y_ref.view), {}, 1e-5, 1e-5, &where);
  if (!ok) {
    INFO("arch ", Arch::name(), " in ", in.n, "x", in.h, "x", in.w, "x", in.c, " k ", p.kernel_h, "x", p.kernel_w,
         " s ", p.stride_h, "x", p.stride_w, " d ", p.dilation_h, " pad ", p.pad_top, ",", p.pad_left, ",",
         p.pad_bottom, ",", p.pad_right, " res ", residual, ": ", where);
    CHECK(ok);
  }
}

}  // namespace

TEST_CASE_TEMPLATE("depthwise conv matches the reference on random shapes", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(42);
  const int cases = test::scaled(400);
  for (int i = 0; i < cases; ++i) {
    const int kind = r.uniform_int(0, 3);
    Conv2dParams p;
    if (kind == 0) {
      p = Conv2dParams::square(3, 1, 1);
    } else if (kind == 1) {
      p = Conv2dParams::square(3, 2, 1);
    } else if (kind == 2) {  // 3x3 fast path with unusual padding
      p = Conv2dParams::square(3, r.uniform_int(1, 2), 0);
      p.pad_top = r.uniform_int(0, 2);
      p.pad_left = r.uniform_int(0, 2);
      p.pad_bottom = r.uniform_int(0, 2);
      p.pad_right = r.uniform_int(0, 2);
    } else {
      p.kernel_h = r.uniform_int(1, 5);
      p.kernel_w = r.uniform_int(1, 5);
      p.stride_h = r.uniform_int(1, 3);
      p.stride_w = r.uniform_int(1, 3);
      p.dilation_h = r.uniform_int(1, 2);
      p.dilation_w = r.uniform_int(1, 2);
      p.pad_top = r.uniform_int(0, p.kernel_h - 1);
      p.pad_bottom = r.uniform_int(0, p.kernel_h - 1);
      p.pad_left = r.uniform_int(0, p.kernel_w - 1);
      p.pad_right = r.uniform_int(0, p.kernel_w - 1);
    }
    p.activation = static_cast<Activation>(r.uniform_int(0, 2));
    const int hw = r.uniform_int(0, 9);
    const int h = hw == 0 ? 1 : hw == 1 ? 7 : r.uniform_int(1, 17);
    const int w = hw == 0 ? 1 : hw == 1 ? 7 : r.uniform_int(1, 17);
    const int c = r.coin(0.5) ? r.uniform_int(1, 40) : 8 * r.uniform_int(1, 12);
    const Shape in{r.uniform_int(1, 3), h, w, c};
    p.groups = c;
    run_case<Arch>(p, in, r.coin(0.3), r.coin(0.3), r.coin(0.2), r);
  }
}

TEST_CASE("depthwise conv rejects a non-depthwise layer") {
  float x[2 * 2 * 4] = {}, y[2 * 2 * 4] = {}, packed[256] = {}, w[4 * 9] = {};
  auto p = Conv2dParams::square(3, 1, 1, 2);
  const auto dw = kernels::pack_depthwise_weights(p, 4, w, nullptr, packed);
  Workspace ws;
  CHECK(kernels::depthwise_conv2d(p, ConstTensor::dense(x, {1, 2, 2, 4}), dw, Tensor::dense(y, {1, 2, 2, 4}), ws).code() ==
        Error::shape_mismatch);
}

}  // namespace test_depthwise
