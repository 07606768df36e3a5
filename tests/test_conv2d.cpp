// conv2d against the naive reference on random shapes, for every backend.
#include "edgenn/kernels/reference.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_conv2d {

using namespace edgenn;
using kernels::Conv2dParams;

namespace {

struct ConvCase {
  Conv2dParams p;
  Shape in;
  int cout = 1;
  bool residual = false;
  bool strided = false;
  bool split_rows = false;
};

ConvCase random_case(test::Rng& r) {
  ConvCase c;
  const int kind = r.uniform_int(0, 7);
  const int groups = r.pick(std::vector<int>{1, 1, 1, 2, 3});
  int cin = groups * r.uniform_int(1, 13), cout = groups * r.uniform_int(1, 13);
  switch (kind) {
    case 0:  // 3x3 stride 1 "same": the ResNet case
      c.p = Conv2dParams::square(3, 1, 1, groups);
      break;
    case 1:  // 3x3 stride 2
      c.p = Conv2dParams::square(3, 2, 1, groups);
      break;
    case 2:  // pointwise (GEMM path)
      c.p = Conv2dParams::square(1, 1, 0, groups);
      cin = groups * r.uniform_int(1, 40);
      cout = groups * r.uniform_int(1, 40);
      break;
    case 3:  // strided 1x1 (projection shortcut)
      c.p = Conv2dParams::square(1, 2, 0, groups);
      break;
    default: {  // anything: sizes, strides, dilation, asymmetric padding
      c.p.kernel_h = r.uniform_int(1, 7);
      c.p.kernel_w = r.uniform_int(1, 7);
      c.p.stride_h = r.uniform_int(1, 3);
      c.p.stride_w = r.uniform_int(1, 3);
      c.p.dilation_h = r.uniform_int(1, 2);
      c.p.dilation_w = r.uniform_int(1, 2);
      c.p.pad_top = r.uniform_int(0, c.p.kernel_h);
      c.p.pad_bottom = r.uniform_int(0, c.p.kernel_h);
      c.p.pad_left = r.uniform_int(0, c.p.kernel_w);
      c.p.pad_right = r.uniform_int(0, c.p.kernel_w);
      c.p.groups = groups;
      break;
    }
  }
  c.p.activation = static_cast<Activation>(r.uniform_int(0, 2));
  const int hw_kind = r.uniform_int(0, 9);
  const int h = hw_kind == 0 ? 1 : hw_kind == 1 ? 7 : r.uniform_int(1, 13);
  const int w = hw_kind == 0 ? 1 : hw_kind == 1 ? 7 : r.uniform_int(1, 13);
  c.in = Shape{r.uniform_int(1, 3), h, w, cin};
  c.cout = cout;
  c.residual = r.coin(0.3);
  c.strided = r.coin(0.3);
  c.split_rows = r.coin(0.2);
  return c;
}

template <class Arch>
void run_case(const ConvCase& c, test::Rng& r) {
  if (!c.p.validate(c.in, c.cout).is_ok()) return;
  const Shape os = c.p.output_shape(c.in, c.cout);
  const int cin_g = c.in.c / c.p.groups;
  auto x = test::Buffer::make(c.in, &r, c.strided, &r);
  auto w = r.vec(std::size_t(c.cout) * c.p.taps() * cin_g);
  auto bias = r.vec(std::size_t(c.cout));
  auto res = test::Buffer::make(os, &r, c.strided, &r);
  auto y = test::Buffer::make(os, &r, c.strided, &r);
  auto y_ref = test::Buffer::make(os, nullptr);

  std::vector<float> packed(std::size_t(kernels::conv_packed_floats<Arch>(c.p, c.in.c, c.cout)));
  const auto pw = kernels::pack_conv_weights<Arch>(c.p, c.in.c, c.cout, w.data(), bias.data(), packed.data());
  std::vector<unsigned char> wsmem(kernels::conv2d_workspace_bytes(c.p, c.in) + kAlignment);
  Workspace ws(wsmem.data(), wsmem.size());
  const ConstTensor res_view = res.view;
  const ConstTensor* rp = c.residual ? &res_view : nullptr;
  if (c.split_rows && os.h > 1) {
    const int mid = os.h / 2;
    REQUIRE(kernels::conv2d<Arch>(c.p, x.view, pw, y.view, ws, rp, {0, mid}).is_ok());
    REQUIRE(kernels::conv2d<Arch>(c.p, x.view, pw, y.view, ws, rp, {mid, os.h}).is_ok());
  } else {
    REQUIRE(kernels::conv2d<Arch>(c.p, x.view, pw, y.view, ws, rp).is_ok());
  }
  ref::conv2d(c.p, x.view, w.data(), bias.data(), y_ref.view, rp);

  // Tolerance from the magnitude of the sum: the same convolution on absolute values.
  auto ax = test::Buffer::make(c.in, nullptr);
  const auto xd = test::to_dense(x.view);
  for (std::size_t i = 0; i < xd.size(); ++i) ax.storage[i] = std::fabs(xd[i]);
  auto ares = test::Buffer::make(os, nullptr);
  const auto rd = test::to_dense(res.view);
  for (std::size_t i = 0; i < rd.size(); ++i) ares.storage[i] = std::fabs(rd[i]);
  auto scale = test::Buffer::make(os, nullptr);
  Conv2dParams pa = c.p;
  pa.activation = Activation::none;
  const ConstTensor ares_view = ares.view;
  ref::conv2d(pa, ax.view, test::abs_of(w).data(), test::abs_of(bias).data(), scale.view, c.residual ? &ares_view : nullptr);

  std::string where;
  const bool ok = test::close(test::to_dense(y.view), test::to_dense(y_ref.view), test::to_dense(scale.view), 2e-6, 1e-6,
                              &where);
  if (!ok) {
    INFO("arch ", Arch::name(), " in ", c.in.n, "x", c.in.h, "x", c.in.w, "x", c.in.c, " cout ", c.cout, " k ",
         c.p.kernel_h, "x", c.p.kernel_w, " s ", c.p.stride_h, "x", c.p.stride_w, " d ", c.p.dilation_h, "x",
         c.p.dilation_w, " pad ", c.p.pad_top, ",", c.p.pad_left, ",", c.p.pad_bottom, ",", c.p.pad_right, " g ",
         c.p.groups, " act ", int(c.p.activation), " res ", c.residual, " strided ", c.strided, ": ", where);
    CHECK(ok);
  }
}

}  // namespace

TEST_CASE_TEMPLATE("conv2d matches the reference on random shapes", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(0xC0FFEE);
  const int cases = test::scaled(400);
  for (int i = 0; i < cases; ++i) run_case<Arch>(random_case(r), r);
}

// Shapes that reach the special cases of the tiling: output channels past four SIMD
// vectors (full panels plus a narrower last panel: 80 = 64 + 16 on AVX-512), stems with 1-4
// input channels (kernel rows merged into one run of kernel_w * cin), and images so small
// that every tile is partial (half-height and one-row tiles).
TEST_CASE_TEMPLATE("conv2d matches the reference on wide outputs, stems and tiny images", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(0x5EED);
  const int cases = test::scaled(120);
  for (int i = 0; i < cases; ++i) {
    ConvCase c;
    const int kind = r.uniform_int(0, 3);
    int cin = r.uniform_int(1, 4), cout = r.uniform_int(1, 24);
    switch (kind) {
      case 0:  // wide output
        c.p = Conv2dParams::square(r.pick(std::vector<int>{1, 3}), r.uniform_int(1, 2), 0);
        if (c.p.kernel_h == 3) c.p.pad_top = c.p.pad_left = c.p.pad_bottom = c.p.pad_right = 1;
        cin = r.uniform_int(1, 24);
        cout = r.uniform_int(60, 200);
        break;
      case 1:  // stem: 3x3 over 1-4 channels, stride 1 or 2
        c.p = Conv2dParams::square(3, r.uniform_int(1, 2), 1);
        cout = r.uniform_int(1, 80);
        break;
      case 2:  // stem with another kernel size (5x5 / 7x7, padding k/2)
        c.p = Conv2dParams::square(r.pick(std::vector<int>{5, 7}), r.uniform_int(1, 2), 0);
        c.p.pad_top = c.p.pad_left = c.p.pad_bottom = c.p.pad_right = c.p.kernel_h / 2;
        break;
      default:  // pointwise on a tiny image: m < one tile
        c.p = Conv2dParams::square(1, 1, 0);
        cin = r.uniform_int(1, 40);
        cout = r.uniform_int(1, 140);
        break;
    }
    c.p.activation = static_cast<Activation>(r.uniform_int(0, 2));
    const bool tiny = kind == 3 || r.coin(0.3);
    const int h = tiny ? r.uniform_int(1, 3) : r.uniform_int(4, 17), w = tiny ? r.uniform_int(1, 3) : r.uniform_int(4, 17);
    c.in = Shape{r.uniform_int(1, 3), h, w, cin};
    c.cout = cout;
    c.residual = r.coin(0.3);
    c.strided = r.coin(0.3);
    c.split_rows = r.coin(0.2);
    run_case<Arch>(c, r);
  }
}

TEST_CASE_TEMPLATE("conv2d covers the ResNet and MobileNetV2 layer shapes", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(7);
  struct L {
    int h, cin, cout, k, s;
  };
  const L layers[] = {{28, 1, 16, 3, 1},  {28, 16, 16, 3, 1}, {28, 16, 32, 3, 2}, {14, 32, 32, 3, 1},
                      {14, 32, 64, 3, 2}, {7, 64, 64, 3, 1},  {28, 16, 32, 1, 2}, {14, 96, 24, 1, 1},
                      {7, 160, 960, 1, 1}, {9, 17, 33, 3, 1}};
  for (const L& l : layers) {
    ConvCase c;
    c.p = Conv2dParams::square(l.k, l.s, l.k / 2, 1, Activation::relu);
    c.in = Shape{2, l.h, l.h, l.cin};
    c.cout = l.cout;
    c.residual = l.s == 1 && l.cin == l.cout;
    run_case<Arch>(c, r);
  }
}

TEST_CASE("conv2d reports bad arguments instead of computing") {
  float x[4 * 4 * 2] = {}, y[4 * 4 * 3] = {}, packed[1024] = {}, w[3 * 9 * 2] = {};
  const auto p = Conv2dParams::square(3, 1, 1);
  const auto pw = kernels::pack_conv_weights(p, 2, 3, w, nullptr, packed);
  unsigned char wsmem[256];
  Workspace ws(wsmem, sizeof wsmem);
  const auto in = ConstTensor::dense(x, {1, 4, 4, 2});
  CHECK(kernels::conv2d(p, in, pw, Tensor::dense(y, {1, 4, 4, 3}), ws).is_ok());

  auto bad = p;
  bad.stride_h = 0;
  CHECK(kernels::conv2d(bad, in, pw, Tensor::dense(y, {1, 4, 4, 3}), ws).code() == Error::invalid_argument);
  CHECK(kernels::conv2d(p, in, pw, Tensor::dense(y, {1, 3, 4, 3}), ws).code() == Error::shape_mismatch);
  const auto pw_other = kernels::pack_conv_weights(p, 2, 2, w, nullptr, packed);
  CHECK(kernels::conv2d(p, in, pw_other, Tensor::dense(y, {1, 4, 4, 3}), ws).code() == Error::shape_mismatch);
  Workspace tiny(wsmem, 1);
  CHECK(kernels::conv2d(p, in, pw, Tensor::dense(y, {1, 4, 4, 3}), tiny).code() == Error::workspace_too_small);
  CHECK(kernels::conv2d(p, in, pw, Tensor::dense(y, {1, 4, 4, 3}), ws, nullptr, {3, 7}).code() ==
        Error::invalid_argument);
  // A measuring workspace records the size the call needs.
  Workspace m = Workspace::measure();
  CHECK(kernels::conv2d(p, in, pw, Tensor::dense(y, {1, 4, 4, 3}), m).is_ok());
  CHECK(m.peak() == kernels::conv2d_workspace_bytes(p, in.shape));
}

}  // namespace test_conv2d
