// Winograd F(4x4, 3x3) convolution (forward, input gradient, weight gradient) against the
// double-precision references, on random shapes (maps not a multiple of the tile, channel
// counts on and off the SIMD width, strided views, accumulation), for every backend.
#include "edgenn/kernels/reference/backward.hpp"
#include "edgenn/kernels/winograd.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_winograd {

using namespace edgenn;
using kernels::Conv2dParams;
using kernels::WinogradPass;

namespace {

struct Dense {
  std::vector<double> v;
  TensorView<double> view;
  explicit Dense(Shape s) : v(std::size_t(s.size()), 0.0) { view = TensorView<double>::dense(v.data(), s); }
};

Dense to_double(ConstTensor t, bool absolute = false) {
  Dense d(t.shape);
  const auto f = test::to_dense(t);
  for (std::size_t i = 0; i < f.size(); ++i) d.v[i] = absolute ? std::fabs(f[i]) : f[i];
  return d;
}

// |got - want| <= rtol * scale + atol, where scale is the same computation on absolute
// values (the size of the terms that are summed).
void check(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& scale,
           double rtol, const char* what) {
  REQUIRE(got.size() == want.size());
  double worst = 0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]) / (scale[i] + 1e-6);
    if (err > worst) worst = err, at = i;
  }
  CHECK_MESSAGE(worst <= rtol, std::string(what), ": relative error ", worst, " at ", at, " (", got[at], " vs ", want[at], ")");
}

struct Case {
  Shape in;
  int cout;
  bool strided, accumulate;
};

Case random_case(test::Rng& r) {
  auto channels = [&] { return r.coin(0.4) ? r.pick(std::vector<int>{16, 32, 48, 64}) : r.uniform_int(1, 40); };
  const int h = r.coin(0.2) ? 7 : r.uniform_int(1, 13), w = r.coin(0.2) ? 7 : r.uniform_int(1, 13);
  return Case{Shape{r.uniform_int(1, 3), h, w, channels()}, channels(), r.coin(0.3), r.coin(0.3)};
}

// The transforms' rounding (measured up to ~6e-6 of the terms' magnitude on these cases) stays
// far below what a wrong index or transform coefficient gives (errors of the order of the values).
constexpr double kRtol = 2e-5;

template <class Arch>
void run_case(const Case& c, test::Rng& r) {
  const Conv2dParams p = Conv2dParams::square(3, 1, 1);
  const int cin = c.in.c, cout = c.cout;
  INFO("arch ", Arch::name(), " in ", c.in.n, "x", c.in.h, "x", c.in.w, "x", cin, " cout ", cout, " strided ",
       c.strided, " acc ", c.accumulate);
  const Shape os = p.output_shape(c.in, cout);
  auto x = test::Buffer::make(c.in, &r, c.strided, &r);
  auto dy = test::Buffer::make(os, &r, c.strided, &r);
  const std::vector<float> w = r.vec(std::size_t(cout) * 9 * cin);
  const std::vector<double> wd(w.begin(), w.end());
  std::vector<double> wa(wd.size());
  for (std::size_t i = 0; i < wd.size(); ++i) wa[i] = std::fabs(wd[i]);

  // Double references of y, dx, dW, db and their scales.
  const Dense xd = to_double(x.view), xa = to_double(x.view, true), dyd = to_double(dy.view),
              dya = to_double(dy.view, true);
  Dense y_ref(os), y_scale(os), dx_ref(c.in), dx_scale(c.in);
  std::vector<double> dw_ref(w.size()), dw_scale(w.size()), db_ref(std::size_t(cout), 0.0), db_scale(std::size_t(cout), 0.0);
  const std::vector<double> zero_bias(std::size_t(cout), 0.0);
  ref::conv2d_forward<double>(p, xd.view, wd.data(), zero_bias.data(), y_ref.view);
  ref::conv2d_forward<double>(p, xa.view, wa.data(), zero_bias.data(), y_scale.view);
  ref::conv2d_backward<double>(p, xd.view, wd.data(), dyd.view, dx_ref.view, dw_ref.data(),
                                              db_ref.data());
  ref::conv2d_backward<double>(p, xa.view, wa.data(), dya.view, dx_scale.view, dw_scale.data(),
                                              db_scale.data());

  // Forward and input gradient: one kernel with two weight packings, written or accumulated
  // onto random values.
  std::vector<float> scratch(std::size_t(kernels::winograd_pack_scratch_floats(cin, cout)));
  auto run_conv = [&](WinogradPass pass, ConstTensor src, test::Buffer& dst, const Dense& want, const Dense& scale,
                      const char* what) {
    const int k_in = src.c(), k_out = dst.view.c();
    std::vector<float> packed(std::size_t(kernels::winograd_packed_floats<Arch>(k_in, k_out)));
    const auto pw = kernels::pack_winograd_weights<Arch>(cin, cout, w.data(), pass, scratch.data(), packed.data());
    const auto before = test::to_dense(dst.view);
    test::OwnedWorkspace ws(kernels::winograd_workspace_bytes(k_in, k_out));
    REQUIRE(kernels::winograd_conv3x3<Arch>(src, pw, dst.view, ws.ws, c.accumulate).is_ok());
    std::vector<double> wv = want.v, sv = scale.v;
    if (c.accumulate)
      for (std::size_t i = 0; i < wv.size(); ++i) wv[i] += before[i], sv[i] += std::fabs(before[i]);
    check(test::to_dense(dst.view), wv, sv, kRtol, what);
  };
  auto y = test::Buffer::make(os, &r, c.strided, &r);
  run_conv(WinogradPass::forward, x.view, y, y_ref, y_scale, "y");
  auto dx = test::Buffer::make(c.in, &r, c.strided, &r);
  run_conv(WinogradPass::input_grad, dy.view, dx, dx_ref, dx_scale, "dx");

  // Weight and bias gradients.
  std::vector<float> dw(w.size()), db(std::size_t(cout), 0.0f);
  if (c.accumulate) {
    dw = r.vec(w.size());
    db = r.vec(db.size());
    for (std::size_t i = 0; i < dw.size(); ++i) dw_ref[i] += dw[i], dw_scale[i] += std::fabs(dw[i]);
    for (std::size_t i = 0; i < db.size(); ++i) db_ref[i] += db[i], db_scale[i] += std::fabs(db[i]);
  }
  test::OwnedWorkspace ws(kernels::winograd_weight_grad_workspace_bytes<Arch>(cin, cout));
  REQUIRE(kernels::winograd_weight_grad<Arch>(x.view, dy.view, dw.data(), db.data(), ws.ws, c.accumulate).is_ok());
  check(dw, dw_ref, dw_scale, kRtol, "dw");
  check(db, db_ref, db_scale, kRtol, "db");
}

}  // namespace

TEST_CASE_TEMPLATE("winograd convolution matches the double reference on random shapes", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(0x3A3);
  const int cases = test::scaled(120);
  for (int i = 0; i < cases; ++i) run_case<Arch>(random_case(r), r);
}

TEST_CASE_TEMPLATE("winograd convolution covers the trained ResNet and MEANet layers", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(5);
  struct L {
    int n, h, cin, cout;
  };
  // Several chunks of tiles (the 28x28 maps), the 128-channel concat of the extension block,
  // and 100 input channels: the weight gradient's sums end on a partial panel of 3 vectors
  // (AVX-512) after a full one of 4, with 20 rows (a partial row tile).
  const L layers[] = {{4, 28, 16, 16}, {3, 14, 32, 32}, {5, 7, 64, 64}, {2, 7, 128, 64}, {2, 6, 100, 20}};
  for (const L& l : layers) run_case<Arch>(Case{Shape{l.n, l.h, l.h, l.cin}, l.cout, false, false}, r);
}

TEST_CASE_TEMPLATE("winograd kernels check their arguments and measure their workspace", Arch, EDGENN_TEST_ARCHS) {
  const int cin = 16, cout = 16;
  std::vector<float> w(std::size_t(cout) * 9 * cin, 0.5f), scratch(std::size_t(kernels::winograd_pack_scratch_floats(cin, cout)));
  std::vector<float> packed(std::size_t(kernels::winograd_packed_floats<Arch>(cin, cout)));
  const auto pw = kernels::pack_winograd_weights<Arch>(cin, cout, w.data(), WinogradPass::forward, scratch.data(), packed.data());
  std::vector<float> xs(2 * 8 * 8 * cin, 1.0f), ys(2 * 8 * 8 * cout), bad(2 * 8 * 8 * 8);
  const ConstTensor x = ConstTensor::dense(xs.data(), Shape{2, 8, 8, cin});
  Workspace m = Workspace::measure();
  REQUIRE(kernels::winograd_conv3x3<Arch>(x, pw, Tensor::dense(ys.data(), Shape{2, 8, 8, cout}), m, false).is_ok());
  CHECK(m.peak() <= kernels::winograd_workspace_bytes(cin, cout));
  Workspace m2 = Workspace::measure();
  REQUIRE(kernels::winograd_weight_grad<Arch>(x, ConstTensor::dense(ys.data(), Shape{2, 8, 8, cout}), w.data(), nullptr, m2).is_ok());
  CHECK(m2.peak() <= kernels::winograd_weight_grad_workspace_bytes<Arch>(cin, cout));
  test::OwnedWorkspace ws(kernels::winograd_workspace_bytes(cin, cout));
  CHECK(kernels::winograd_conv3x3<Arch>(x, pw, Tensor::dense(bad.data(), Shape{2, 8, 8, 8}), ws.ws, false).code() ==
        Error::shape_mismatch);
  CHECK(kernels::winograd_conv3x3<Arch>(x, pw, Tensor::dense(ys.data(), Shape{2, 4, 16, cout}), ws.ws, false).code() ==
        Error::shape_mismatch);
  test::OwnedWorkspace small(64);
  CHECK_FALSE(kernels::winograd_conv3x3<Arch>(x, pw, Tensor::dense(ys.data(), Shape{2, 8, 8, cout}), small.ws, false).is_ok());
  CHECK(kernels::winograd_applies(Conv2dParams::square(3, 1, 1)));
  CHECK_FALSE(kernels::winograd_applies(Conv2dParams::square(3, 2, 1)));
  CHECK_FALSE(kernels::winograd_applies(Conv2dParams::square(3, 1, 1, 2)));
  CHECK_FALSE(kernels::winograd_applies(Conv2dParams::square(1, 1, 0)));
}

}  // namespace test_winograd
