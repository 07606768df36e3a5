// Backward kernels against the double-precision references on random shapes, for every
// backend; and the references themselves against central finite differences of the double
// forward references (on the scalar loss L = sum r * y with a random r, dL/dy = r).
#include <cstring>

#include "edgenn/kernels/reference/backward.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_backward {

using namespace edgenn;
using kernels::Conv2dParams;
using kernels::Pool2dParams;
using kernels::TileOrigin;

namespace {

// ---------------------------------------------------------------------------------------------
// Helpers: double copies of float views, comparisons with tolerances from the computation.
// ---------------------------------------------------------------------------------------------

struct DBuffer {
  std::vector<double> storage;
  TensorView<double> view;
  explicit DBuffer(Shape s) : storage(std::size_t(s.size()), 0.0) { view = TensorView<double>::dense(storage.data(), s); }
};

DBuffer to_double(ConstTensor v) {
  DBuffer d(v.shape);
  const auto f = test::to_dense(v);
  for (std::size_t i = 0; i < f.size(); ++i) d.storage[i] = f[i];
  return d;
}

DBuffer abs_double(ConstTensor v) {
  DBuffer d = to_double(v);
  for (auto& x : d.storage) x = std::fabs(x);
  return d;
}

std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }
std::vector<double> abs_double(const std::vector<float>& v) {
  std::vector<double> d(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) d[i] = std::fabs(v[i]);
  return d;
}

std::vector<float> as_float(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

// |got - want| <= atol + rtol * scale, element-wise; INFO names the first failure.
bool check_close(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& scale,
                 double rtol, double atol, const std::string& what) {
  std::string where;
  const bool ok = test::close(got, as_float(want), as_float(scale), rtol, atol, &where);
  CHECK_MESSAGE(ok, what, ": ", where);
  return ok;
}

std::string describe(const Conv2dParams& p, Shape in, int cout) {
  return "in " + std::to_string(in.n) + "x" + std::to_string(in.h) + "x" + std::to_string(in.w) + "x" +
         std::to_string(in.c) + " cout " + std::to_string(cout) + " k " + std::to_string(p.kernel_h) + "x" +
         std::to_string(p.kernel_w) + " s " + std::to_string(p.stride_h) + "x" + std::to_string(p.stride_w) +
         " d " + std::to_string(p.dilation_h) + "x" + std::to_string(p.dilation_w) + " pad " +
         std::to_string(p.pad_top) + "," + std::to_string(p.pad_left) + "," + std::to_string(p.pad_bottom) + "," +
         std::to_string(p.pad_right) + " g " + std::to_string(p.groups);
}

// ---------------------------------------------------------------------------------------------
// Convolution
// ---------------------------------------------------------------------------------------------

struct ConvCase {
  Conv2dParams p;
  Shape in;
  int cout = 1;
  bool strided = false;
  bool accumulate = false;
  bool split_rows = false;
};

ConvCase random_conv_case(test::Rng& r) {
  ConvCase c;
  const int kind = r.uniform_int(0, 7);
  const int groups = r.pick(std::vector<int>{1, 1, 1, 2, 3});
  int cin = groups * r.uniform_int(1, 13), cout = groups * r.uniform_int(1, 13);
  switch (kind) {
    case 0: c.p = Conv2dParams::square(3, 1, 1, groups); break;
    case 1: c.p = Conv2dParams::square(3, 2, 1, groups); break;
    case 2:
      c.p = Conv2dParams::square(1, 1, 0, groups);
      cin = groups * r.uniform_int(1, 40);
      cout = groups * r.uniform_int(1, 40);
      break;
    case 3: c.p = Conv2dParams::square(1, 2, 0, groups); break;
    default:
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
  // Channels per group that are multiples of every SIMD width select the weight-gradient
  // paths: cin -> direct, small cin with such a cout -> small-input, others -> packed.
  if (r.coin(0.3)) cin = groups * r.pick(std::vector<int>{16, 32});
  if (r.coin(0.3)) cout = groups * r.pick(std::vector<int>{16, 32});
  const int hw = r.uniform_int(0, 9);
  const int h = hw == 0 ? 1 : hw == 1 ? 7 : r.uniform_int(1, 13);
  const int w = hw == 0 ? 1 : hw == 1 ? 7 : r.uniform_int(1, 13);
  c.in = Shape{r.uniform_int(1, 3), h, w, cin};
  c.cout = cout;
  c.strided = r.coin(0.3);
  c.accumulate = r.coin(0.3);
  c.split_rows = r.coin(0.2);
  return c;
}

// Double reference gradients of one convolution and their magnitude scales (the same
// computation on absolute values).
struct ConvRef {
  DBuffer dx, dx_scale;
  std::vector<double> dw, db, dw_scale, db_scale;
  ConvRef(const Conv2dParams& p, ConstTensor x, const std::vector<float>& w, ConstTensor dy)
      : dx(x.shape), dx_scale(x.shape) {
    const std::size_t wn = w.size();
    dw.assign(wn, 0);
    dw_scale.assign(wn, 0);
    db.assign(std::size_t(dy.c()), 0);
    db_scale.assign(std::size_t(dy.c()), 0);
    const DBuffer xd = to_double(x), dyd = to_double(dy), xa = abs_double(x), dya = abs_double(dy);
    const auto wd = to_double(w), wa = abs_double(w);
    ref::conv2d_backward<double>(p, xd.view, wd.data(), dyd.view, dx.view, dw.data(), db.data());
    ref::conv2d_backward<double>(p, xa.view, wa.data(), dya.view, dx_scale.view, dw_scale.data(), db_scale.data());
  }
};

template <class Arch>
void run_conv_case(const ConvCase& c, test::Rng& r) {
  if (!c.p.validate(c.in, c.cout).is_ok()) return;
  INFO("arch ", Arch::name(), " ", describe(c.p, c.in, c.cout), " strided ", c.strided, " acc ", c.accumulate);
  const Shape os = c.p.output_shape(c.in, c.cout);
  const int cin_g = c.in.c / c.p.groups;
  auto x = test::Buffer::make(c.in, &r, c.strided, &r);
  auto dy = test::Buffer::make(os, &r, c.strided, &r);
  auto w = r.vec(std::size_t(c.cout) * c.p.taps() * cin_g);
  const ConvRef ref(c.p, x.view, w, dy.view);

  // Input gradient (written, or accumulated onto random values).
  auto dx = test::Buffer::make(c.in, &r, c.strided, &r);
  const auto dx_before = to_double(test::to_dense(dx.view));
  std::vector<float> packed(std::size_t(kernels::conv_input_grad_packed_floats<Arch>(c.p, c.in.c, c.cout)));
  const auto pw = kernels::pack_conv_input_grad_weights<Arch>(c.p, c.in.c, c.cout, w.data(), packed.data());
  test::OwnedWorkspace wsi(kernels::conv2d_backward_input_workspace_bytes(c.p, c.cout));
  if (c.split_rows && c.in.h > 1) {
    const int mid = r.uniform_int(1, c.in.h - 1);
    REQUIRE(kernels::conv2d_backward_input<Arch>(c.p, dy.view, pw, dx.view, wsi.ws, c.accumulate, {mid, c.in.h}).is_ok());
    REQUIRE(kernels::conv2d_backward_input<Arch>(c.p, dy.view, pw, dx.view, wsi.ws, c.accumulate, {0, mid}).is_ok());
  } else {
    REQUIRE(kernels::conv2d_backward_input<Arch>(c.p, dy.view, pw, dx.view, wsi.ws, c.accumulate).is_ok());
  }
  std::vector<double> dx_want = ref.dx.storage, dx_scale = ref.dx_scale.storage;
  if (c.accumulate)
    for (std::size_t i = 0; i < dx_want.size(); ++i) {
      dx_want[i] += dx_before[i];
      dx_scale[i] += std::fabs(dx_before[i]);
    }
  check_close(test::to_dense(dx.view), dx_want, dx_scale, 4e-6, 1e-6, "dx");

  // Weight and bias gradients.
  std::vector<float> dw(w.size()), db(std::size_t(c.cout));
  std::vector<double> dw_want = ref.dw, db_want = ref.db, dw_scale = ref.dw_scale, db_scale = ref.db_scale;
  if (c.accumulate) {
    dw = r.vec(w.size());
    db = r.vec(db.size());
    for (std::size_t i = 0; i < dw.size(); ++i) {
      dw_want[i] += dw[i];
      dw_scale[i] += std::fabs(dw[i]);
    }
    for (std::size_t i = 0; i < db.size(); ++i) {
      db_want[i] += db[i];
      db_scale[i] += std::fabs(db[i]);
    }
  }
  test::OwnedWorkspace wsw(kernels::conv2d_backward_weights_workspace_bytes<Arch>(c.p, c.in.c, c.cout));
  REQUIRE(kernels::conv2d_backward_weights<Arch>(c.p, x.view, dy.view, dw.data(), db.data(), wsw.ws, c.accumulate).is_ok());
  check_close(dw, dw_want, dw_scale, 1e-5, 1e-6, "dw");
  check_close(db, db_want, db_scale, 1e-5, 1e-6, "db");
}

// Global input interval [lo, hi] of one axis an output interval reads (forward rule).
struct Interval {
  int lo, hi;
};
Interval dx_needs_dy(int i1, int i2, int k, int s, int d, int p, int out) {
  // Outputs o with o*s - p + t*d in [i1, i2] for some tap t: [ceil((i1 + p - d(k-1))/s), floor((i2 + p)/s)].
  auto floor_div = [](int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); };
  int lo = -floor_div(-(i1 + p - d * (k - 1)), s), hi = floor_div(i2 + p, s);
  lo = lo < 0 ? 0 : lo;
  hi = hi > out - 1 ? out - 1 : hi;
  return {lo, hi};
}

// Tiles: dx on a random sub-rectangle from the dy region it needs (TileOrigin), and dW as the
// sum over a 2x2 partition of dy of partial gradients, each from its dy core and x region.
template <class Arch>
void run_conv_tile_case(const ConvCase& c, test::Rng& r) {
  if (!c.p.validate(c.in, c.cout).is_ok()) return;
  INFO("tile arch ", Arch::name(), " ", describe(c.p, c.in, c.cout));
  const auto& p = c.p;
  const Shape os = p.output_shape(c.in, c.cout);
  auto x = test::Buffer::make(c.in, &r);
  auto dy = test::Buffer::make(os, &r);
  auto w = r.vec(std::size_t(c.cout) * p.taps() * (c.in.c / p.groups));
  const ConvRef ref(p, x.view, w, dy.view);

  // dx tile [y1, y2] x [x1, x2] (global), from dy over the needed rows and columns.
  const int y1 = r.uniform_int(0, c.in.h - 1), y2 = r.uniform_int(y1, c.in.h - 1);
  const int x1 = r.uniform_int(0, c.in.w - 1), x2 = r.uniform_int(x1, c.in.w - 1);
  const Interval ny = dx_needs_dy(y1, y2, p.kernel_h, p.stride_h, p.dilation_h, p.pad_top, os.h);
  const Interval nx = dx_needs_dy(x1, x2, p.kernel_w, p.stride_w, p.dilation_w, p.pad_left, os.w);
  std::vector<float> packed(std::size_t(kernels::conv_input_grad_packed_floats<Arch>(p, c.in.c, c.cout)));
  const auto pw = kernels::pack_conv_input_grad_weights<Arch>(p, c.in.c, c.cout, w.data(), packed.data());
  auto dx_tile = test::Buffer::make(Shape{c.in.n, y2 - y1 + 1, x2 - x1 + 1, c.in.c}, &r, true, &r);
  test::OwnedWorkspace wsi(kernels::conv2d_backward_input_workspace_bytes(p, c.cout));
  if (ny.lo <= ny.hi && nx.lo <= nx.hi) {
    const TileOrigin t{y1, x1, ny.lo, nx.lo};
    const ConstTensor dy_view = ConstTensor(dy.view).region(ny.lo, nx.lo, ny.hi - ny.lo + 1, nx.hi - nx.lo + 1);
    REQUIRE(kernels::conv2d_backward_input<Arch>(p, dy_view, pw, dx_tile.view, wsi.ws, false, {}, &t).is_ok());
    std::vector<double> wv, sv;
    for (int b = 0; b < c.in.n; ++b)
      for (int i = y1; i <= y2; ++i)
        for (int j = x1; j <= x2; ++j)
          for (int ch = 0; ch < c.in.c; ++ch) {
            wv.push_back(ref.dx.view.at(b, i, j, ch));
            sv.push_back(ref.dx_scale.view.at(b, i, j, ch));
          }
    check_close(test::to_dense(dx_tile.view), wv, sv, 4e-6, 1e-6, "dx tile");
  }

  // dW: 2x2 partition of the output map; each part reads x on its (clamped) input window.
  const int cy = r.uniform_int(0, os.h), cx = r.uniform_int(0, os.w);
  std::vector<float> dw(w.size()), db(std::size_t(c.cout));
  test::OwnedWorkspace wsw(kernels::conv2d_backward_weights_workspace_bytes<Arch>(p, c.in.c, c.cout));
  bool first = true;
  const int ys[3] = {0, cy, os.h}, xs[3] = {0, cx, os.w};
  for (int a = 0; a < 2; ++a)
    for (int bb = 0; bb < 2; ++bb) {
      const int o1 = ys[a], o2 = ys[a + 1], q1 = xs[bb], q2 = xs[bb + 1];
      if (o1 == o2 || q1 == q2) continue;
      int iy1 = o1 * p.stride_h - p.pad_top, iy2 = (o2 - 1) * p.stride_h - p.pad_top + p.dilation_h * (p.kernel_h - 1);
      int ix1 = q1 * p.stride_w - p.pad_left, ix2 = (q2 - 1) * p.stride_w - p.pad_left + p.dilation_w * (p.kernel_w - 1);
      iy1 = iy1 < 0 ? 0 : iy1;
      ix1 = ix1 < 0 ? 0 : ix1;
      iy2 = iy2 > c.in.h - 1 ? c.in.h - 1 : iy2;
      ix2 = ix2 > c.in.w - 1 ? c.in.w - 1 : ix2;
      if (iy1 > iy2 || ix1 > ix2) {
        // The part reads only padding: its dW share is zero, its db share is not.
        iy1 = iy2 = ix1 = ix2 = 0;
      }
      const TileOrigin t{iy1, ix1, o1, q1};
      const ConstTensor xv = ConstTensor(x.view).region(iy1, ix1, iy2 - iy1 + 1, ix2 - ix1 + 1);
      const ConstTensor dyv = ConstTensor(dy.view).region(o1, q1, o2 - o1, q2 - q1);
      REQUIRE(kernels::conv2d_backward_weights<Arch>(p, xv, dyv, dw.data(), db.data(), wsw.ws, !first, &t).is_ok());
      first = false;
    }
  check_close(dw, ref.dw, ref.dw_scale, 2e-5, 1e-6, "dw from tiles");
  check_close(db, ref.db, ref.db_scale, 2e-5, 1e-6, "db from tiles");
}

}  // namespace

TEST_CASE_TEMPLATE("conv2d backward matches the double reference on random shapes", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(0xBAC4);
  const int cases = test::scaled(250);
  for (int i = 0; i < cases; ++i) run_conv_case<Arch>(random_conv_case(r), r);
}

TEST_CASE_TEMPLATE("conv2d backward covers the ResNet layer shapes", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(11);
  struct L {
    int h, cin, cout, k, s;
  };
  const L layers[] = {{28, 1, 16, 3, 1}, {28, 16, 16, 3, 1}, {28, 16, 32, 3, 2}, {14, 32, 32, 3, 1},
                      {14, 32, 64, 3, 2}, {7, 64, 64, 3, 1}, {28, 16, 32, 1, 2}, {9, 17, 33, 3, 1}};
  for (const L& l : layers) {
    ConvCase c;
    c.p = Conv2dParams::square(l.k, l.s, l.k / 2);
    c.in = Shape{2, l.h, l.h, l.cin};
    c.cout = l.cout;
    run_conv_case<Arch>(c, r);
  }
}

TEST_CASE_TEMPLATE("conv2d backward runs on tiles", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(0x711E);
  const int cases = test::scaled(150);
  for (int i = 0; i < cases; ++i) run_conv_tile_case<Arch>(random_conv_case(r), r);
}

// ---------------------------------------------------------------------------------------------
// Depthwise convolution
// ---------------------------------------------------------------------------------------------

namespace {

Conv2dParams random_depthwise_params(test::Rng& r, int channels) {
  Conv2dParams p;
  switch (r.uniform_int(0, 3)) {
    case 0: p = Conv2dParams::square(3, 1, 1); break;
    case 1: p = Conv2dParams::square(3, 2, 1); break;
    case 2:  // the 3x3 fast paths with unusual padding
      p = Conv2dParams::square(3, r.uniform_int(1, 2), 0);
      p.pad_top = r.uniform_int(0, 2);
      p.pad_left = r.uniform_int(0, 2);
      p.pad_bottom = r.uniform_int(0, 2);
      p.pad_right = r.uniform_int(0, 2);
      break;
    default:
      p.kernel_h = r.uniform_int(1, 5);
      p.kernel_w = r.uniform_int(1, 5);
      p.stride_h = r.uniform_int(1, 3);
      p.stride_w = r.uniform_int(1, 3);
      p.dilation_h = r.uniform_int(1, 2);
      p.dilation_w = r.uniform_int(1, 2);
      p.pad_top = r.uniform_int(0, p.kernel_h);
      p.pad_bottom = r.uniform_int(0, p.kernel_h);
      p.pad_left = r.uniform_int(0, p.kernel_w);
      p.pad_right = r.uniform_int(0, p.kernel_w);
      break;
  }
  p.groups = channels;
  return p;
}

template <class Arch>
void run_depthwise_case(const Conv2dParams& p, Shape in, bool strided, bool accumulate, bool split, bool as_tile,
                        test::Rng& r) {
  if (!p.validate(in, in.c).is_ok()) return;
  INFO("depthwise arch ", Arch::name(), " ", describe(p, in, in.c), " strided ", strided, " acc ", accumulate,
       " tile ", as_tile);
  const Shape os = p.output_shape(in, in.c);
  auto x = test::Buffer::make(in, &r, strided, &r);
  auto dy = test::Buffer::make(os, &r, strided, &r);
  auto w = r.vec(std::size_t(in.c) * p.taps());
  const ConvRef ref(p, x.view, w, dy.view);
  std::vector<float> packed(std::size_t(kernels::depthwise_packed_floats<Arch>(p, in.c)));
  const auto pw = kernels::pack_depthwise_weights<Arch>(p, in.c, w.data(), nullptr, packed.data());
  Workspace none;

  // dx: whole, split in two row ranges, or one random tile from the dy region it needs.
  auto dx = test::Buffer::make(in, &r, strided, &r);
  const auto before = to_double(test::to_dense(dx.view));
  std::vector<double> want = ref.dx.storage, scale = ref.dx_scale.storage;
  if (accumulate)
    for (std::size_t i = 0; i < want.size(); ++i) {
      want[i] += before[i];
      scale[i] += std::fabs(before[i]);
    }
  if (as_tile) {
    const int y1 = r.uniform_int(0, in.h - 1), y2 = r.uniform_int(y1, in.h - 1);
    const int x1 = r.uniform_int(0, in.w - 1), x2 = r.uniform_int(x1, in.w - 1);
    const Interval ny = dx_needs_dy(y1, y2, p.kernel_h, p.stride_h, p.dilation_h, p.pad_top, os.h);
    const Interval nx = dx_needs_dy(x1, x2, p.kernel_w, p.stride_w, p.dilation_w, p.pad_left, os.w);
    if (ny.lo > ny.hi || nx.lo > nx.hi) return;
    const TileOrigin t{y1, x1, ny.lo, nx.lo};
    const ConstTensor dyv = ConstTensor(dy.view).region(ny.lo, nx.lo, ny.hi - ny.lo + 1, nx.hi - nx.lo + 1);
    const Tensor dxv = dx.view.region(y1, x1, y2 - y1 + 1, x2 - x1 + 1);
    REQUIRE(kernels::depthwise_backward_input<Arch>(p, dyv, pw, dxv, none, accumulate, {}, &t).is_ok());
    std::vector<double> wv, sv;
    for (int b = 0; b < in.n; ++b)
      for (int i = y1; i <= y2; ++i)
        for (int j = x1; j <= x2; ++j)
          for (int c = 0; c < in.c; ++c) {
            const std::size_t k = std::size_t(((index_t(b) * in.h + i) * in.w + j) * in.c + c);
            wv.push_back(want[k]);
            sv.push_back(scale[k]);
          }
    check_close(test::to_dense(dxv), wv, sv, 4e-6, 1e-6, "depthwise dx tile");
  } else {
    if (split && in.h > 1) {
      const int mid = r.uniform_int(1, in.h - 1);
      REQUIRE(kernels::depthwise_backward_input<Arch>(p, dy.view, pw, dx.view, none, accumulate, {0, mid}).is_ok());
      REQUIRE(kernels::depthwise_backward_input<Arch>(p, dy.view, pw, dx.view, none, accumulate, {mid, in.h}).is_ok());
    } else {
      REQUIRE(kernels::depthwise_backward_input<Arch>(p, dy.view, pw, dx.view, none, accumulate).is_ok());
    }
    check_close(test::to_dense(dx.view), want, scale, 4e-6, 1e-6, "depthwise dx");
  }

  // dw, db
  std::vector<float> dw = r.vec(w.size()), db = r.vec(std::size_t(in.c));
  std::vector<double> dw_want = ref.dw, db_want = ref.db, dw_scale = ref.dw_scale, db_scale = ref.db_scale;
  if (accumulate) {
    for (std::size_t i = 0; i < dw.size(); ++i) {
      dw_want[i] += dw[i];
      dw_scale[i] += std::fabs(dw[i]);
    }
    for (std::size_t i = 0; i < db.size(); ++i) {
      db_want[i] += db[i];
      db_scale[i] += std::fabs(db[i]);
    }
  }
  test::OwnedWorkspace ws(kernels::depthwise_backward_weights_workspace_bytes<Arch>(p, in.c));
  REQUIRE(kernels::depthwise_backward_weights<Arch>(p, x.view, dy.view, dw.data(), db.data(), ws.ws, accumulate).is_ok());
  check_close(dw, dw_want, dw_scale, 1e-5, 1e-6, "depthwise dw");
  check_close(db, db_want, db_scale, 1e-5, 1e-6, "depthwise db");
}

}  // namespace

TEST_CASE_TEMPLATE("depthwise backward matches the double reference on random shapes", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(0xD3E7);
  const int cases = test::scaled(300);
  for (int i = 0; i < cases; ++i) {
    const int c = r.coin(0.5) ? r.uniform_int(1, 40) : 8 * r.uniform_int(1, 8);
    const int hw = r.uniform_int(0, 9);
    const int h = hw == 0 ? 1 : hw == 1 ? 7 : r.uniform_int(1, 17);
    const int w = hw == 0 ? 1 : hw == 1 ? 7 : r.uniform_int(1, 17);
    const Shape in{r.uniform_int(1, 3), h, w, c};
    const Conv2dParams p = random_depthwise_params(r, c);
    run_depthwise_case<Arch>(p, in, r.coin(0.3), r.coin(0.3), r.coin(0.2), r.coin(0.2), r);
  }
}

TEST_CASE_TEMPLATE("depthwise backward weights from tiles sum to the whole", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(0xD711);
  for (int it = 0; it < test::scaled(60); ++it) {
    const int c = r.uniform_int(1, 40);
    const Shape in{r.uniform_int(1, 2), r.uniform_int(3, 14), r.uniform_int(3, 14), c};
    const Conv2dParams p = random_depthwise_params(r, c);
    if (!p.validate(in, c).is_ok()) continue;
    INFO("depthwise tiles ", describe(p, in, c));
    const Shape os = p.output_shape(in, c);
    auto x = test::Buffer::make(in, &r);
    auto dy = test::Buffer::make(os, &r);
    auto w = r.vec(std::size_t(c) * p.taps());
    const ConvRef ref(p, x.view, w, dy.view);
    std::vector<float> dw(w.size()), db(static_cast<std::size_t>(c));
    test::OwnedWorkspace ws(kernels::depthwise_backward_weights_workspace_bytes<Arch>(p, c));
    const int cut = r.uniform_int(0, os.h);
    const int ys[3] = {0, cut, os.h};
    bool first = true;
    for (int a = 0; a < 2; ++a) {
      const int o1 = ys[a], o2 = ys[a + 1];
      if (o1 == o2) continue;
      int iy1 = o1 * p.stride_h - p.pad_top, iy2 = (o2 - 1) * p.stride_h - p.pad_top + p.dilation_h * (p.kernel_h - 1);
      iy1 = iy1 < 0 ? 0 : iy1;
      iy2 = iy2 > in.h - 1 ? in.h - 1 : iy2;
      if (iy1 > iy2) iy1 = iy2 = 0;  // only padding is read
      const TileOrigin t{iy1, 0, o1, 0};
      const ConstTensor xv = ConstTensor(x.view).region(iy1, 0, iy2 - iy1 + 1, in.w);
      const ConstTensor dyv = ConstTensor(dy.view).region(o1, 0, o2 - o1, os.w);
      REQUIRE(kernels::depthwise_backward_weights<Arch>(p, xv, dyv, dw.data(), db.data(), ws.ws, !first, &t).is_ok());
      first = false;
    }
    check_close(dw, ref.dw, ref.dw_scale, 2e-5, 1e-6, "depthwise dw from tiles");
    check_close(db, ref.db, ref.db_scale, 2e-5, 1e-6, "depthwise db from tiles");
  }
}

// ---------------------------------------------------------------------------------------------
// Fully connected
// ---------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("fully connected backward matches the double reference", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(0xFC);
  for (int it = 0; it < test::scaled(100); ++it) {
    const int batch = r.uniform_int(1, 40), in_f = r.uniform_int(1, 300), out_f = r.uniform_int(1, 70);
    const int ldx = in_f + r.uniform_int(0, 3), lddy = out_f + r.uniform_int(0, 3);
    const bool accumulate = r.coin(0.3);
    INFO("fc ", batch, "x", in_f, "->", out_f, " acc ", accumulate);
    auto x = r.vec(std::size_t(batch) * ldx), dy = r.vec(std::size_t(batch) * lddy), w = r.vec(std::size_t(out_f) * in_f);
    std::vector<double> xd(std::size_t(batch) * in_f), xa(xd.size()), dyd(std::size_t(batch) * out_f), dya(dyd.size());
    for (int b = 0; b < batch; ++b) {
      for (int i = 0; i < in_f; ++i) xd[std::size_t(b * in_f + i)] = x[std::size_t(b * ldx + i)];
      for (int o = 0; o < out_f; ++o) dyd[std::size_t(b * out_f + o)] = dy[std::size_t(b * lddy + o)];
    }
    for (std::size_t i = 0; i < xd.size(); ++i) xa[i] = std::fabs(xd[i]);
    for (std::size_t i = 0; i < dyd.size(); ++i) dya[i] = std::fabs(dyd[i]);
    const auto wd = to_double(w), wa = abs_double(w);
    std::vector<double> dx_ref(xd.size()), dw_ref(w.size()), db_ref(static_cast<std::size_t>(out_f));
    std::vector<double> dx_sc(xd.size()), dw_sc(w.size()), db_sc(static_cast<std::size_t>(out_f));
    ref::linear_backward<double>(batch, in_f, out_f, xd.data(), wd.data(), dyd.data(), dx_ref.data(), dw_ref.data(), db_ref.data());
    ref::linear_backward<double>(batch, in_f, out_f, xa.data(), wa.data(), dya.data(), dx_sc.data(), dw_sc.data(), db_sc.data());

    const int lddx = in_f + r.uniform_int(0, 3);
    std::vector<float> dx = r.vec(std::size_t(batch) * lddx);
    std::vector<float> packed(std::size_t(kernels::fc_input_grad_packed_floats<Arch>(in_f, out_f)));
    const auto pw = kernels::pack_fc_input_grad_weights<Arch>(in_f, out_f, w.data(), packed.data());
    std::vector<float> dx_before = dx;
    test::OwnedWorkspace wsi(kernels::fc_backward_input_workspace_bytes(out_f));
    REQUIRE(kernels::fully_connected_backward_input<Arch>(batch, dy.data(), lddy, pw, dx.data(), lddx, wsi.ws, accumulate).is_ok());
    std::vector<float> got;
    std::vector<double> want, sc;
    for (int b = 0; b < batch; ++b)
      for (int i = 0; i < in_f; ++i) {
        const std::size_t k = std::size_t(b * in_f + i), kk = std::size_t(b * lddx + i);
        got.push_back(dx[kk]);
        want.push_back(dx_ref[k] + (accumulate ? dx_before[kk] : 0.0));
        sc.push_back(dx_sc[k] + (accumulate ? std::fabs(dx_before[kk]) : 0.0));
      }
    check_close(got, want, sc, 4e-6, 1e-6, "fc dx");

    std::vector<float> dw = r.vec(w.size()), db = r.vec(std::size_t(out_f));
    if (accumulate) {
      for (std::size_t i = 0; i < dw.size(); ++i) {
        dw_ref[i] += dw[i];
        dw_sc[i] += std::fabs(dw[i]);
      }
      for (std::size_t i = 0; i < db.size(); ++i) {
        db_ref[i] += db[i];
        db_sc[i] += std::fabs(db[i]);
      }
    }
    test::OwnedWorkspace wsw(kernels::fc_backward_weights_workspace_bytes<Arch>(in_f, out_f));
    REQUIRE(kernels::fully_connected_backward_weights<Arch>(batch, in_f, out_f, x.data(), ldx, dy.data(), lddy, dw.data(),
                                                            db.data(), wsw.ws, accumulate)
                .is_ok());
    check_close(dw, dw_ref, dw_sc, 1e-5, 1e-6, "fc dw");
    check_close(db, db_ref, db_sc, 1e-5, 1e-6, "fc db");
  }
}

// ---------------------------------------------------------------------------------------------
// Batch norm (training mode)
// ---------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("batch norm training forward and backward match the double reference", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(0xB4);
  for (int it = 0; it < test::scaled(60); ++it) {
    // Some wide layers: the kernels run over groups of 64 channels (kChannelGroup).
    const int channels = r.coin(0.2) ? r.uniform_int(60, 150) : r.uniform_int(1, 37);
    const Shape s{r.uniform_int(1, 4), r.uniform_int(1, 9), r.uniform_int(1, 9), channels};
    if (s.n * s.pixels() < 2) continue;
    // Some channels far from zero: the statistics must not cancel catastrophically.
    const float offset = r.coin(0.3) ? r.uniform(-1000.0f, 1000.0f) : 0.0f;
    const bool strided = r.coin(0.3), accumulate = r.coin(0.3), with_residual = r.coin(0.3);
    const auto act = static_cast<Activation>(r.uniform_int(0, 2));
    INFO("bn ", s.n, "x", s.h, "x", s.w, "x", s.c, " offset ", offset, " act ", int(act), " acc ", accumulate,
         " residual ", with_residual);
    auto x = test::Buffer::make(s, &r, strided, &r);
    for (int b = 0; b < s.n; ++b)
      for (int i = 0; i < s.h; ++i)
        for (int j = 0; j < s.w; ++j)
          for (int c = 0; c < s.c; ++c) x.view.at(b, i, j, c) = offset + 3.0f * x.view.at(b, i, j, c);
    auto gamma = r.vec(std::size_t(s.c), 0.5f, 2.0f), beta = r.vec(std::size_t(s.c));
    auto rmean = r.vec(std::size_t(s.c)), rvar = r.vec(std::size_t(s.c), 0.5f, 2.0f);
    kernels::BatchNormTrainParams bn;
    bn.gamma = gamma.data();
    bn.beta = beta.data();

    // Double reference.
    const DBuffer xd = to_double(x.view);
    DBuffer yd(s);
    const auto gd = to_double(gamma), bd = to_double(beta);
    std::vector<double> mean_d(std::size_t(s.c)), invstd_d(std::size_t(s.c)), rmean_d = to_double(rmean), rvar_d = to_double(rvar);
    ref::batchnorm_train_forward<double>(xd.view, gd.data(), bd.data(), 1e-5, 0.1, yd.view, mean_d.data(), invstd_d.data(),
                                         rmean_d.data(), rvar_d.data());
    // y = act(BN(x) [+ residual]), the residual added before the activation.
    auto res = test::Buffer::make(s, &r, strided, &r);
    if (with_residual) {
      for (int b = 0; b < s.n; ++b)
        for (int i = 0; i < s.h; ++i)
          for (int j = 0; j < s.w; ++j)
            for (int c = 0; c < s.c; ++c) yd.view.at(b, i, j, c) += double(res.view.at(b, i, j, c));
    }
    for (auto& v : yd.storage) v = ref::activation_value(v, act);

    auto y = test::Buffer::make(s, &r, strided, &r);
    std::vector<float> mean(std::size_t(s.c)), invstd(std::size_t(s.c));
    test::OwnedWorkspace ws(kernels::batchnorm_train_workspace_bytes(s.c));
    REQUIRE(kernels::batchnorm_train_forward<Arch>(x.view, bn, y.view, mean.data(), invstd.data(), rmean.data(), rvar.data(),
                                                   ws.ws, act, with_residual ? ConstTensor(res.view) : ConstTensor())
                .is_ok());
    // The float mean is off by up to half an ulp of |mean|, which moves x - mean by that much:
    // `ulp_effect[c]` is that error relative to the channel's standard deviation.
    std::vector<double> ulp_effect(std::size_t(s.c));
    for (int c = 0; c < s.c; ++c)
      ulp_effect[std::size_t(c)] = invstd_d[std::size_t(c)] * std::fabs(mean_d[std::size_t(c)]) * 1.2e-7;
    std::vector<double> y_sc;
    for (int b = 0; b < s.n; ++b)
      for (int i = 0; i < s.h; ++i)
        for (int j = 0; j < s.w; ++j)
          for (int c = 0; c < s.c; ++c)
            y_sc.push_back(std::fabs(yd.view.at(b, i, j, c)) + 1.0 + gd[std::size_t(c)] * ulp_effect[std::size_t(c)] / 2e-6);
    check_close(test::to_dense(y.view), yd.storage, y_sc, 2e-6, 0, "bn y");
    std::vector<double> mean_sc(mean_d.size());
    for (std::size_t i = 0; i < mean_sc.size(); ++i) mean_sc[i] = std::fabs(mean_d[i]) + 1;
    check_close(mean, mean_d, mean_sc, 1e-6, 0, "bn mean");
    check_close(invstd, invstd_d, abs_double(as_float(invstd_d)), 2e-6, 0, "bn invstd");
    check_close(rmean, rmean_d, abs_double(as_float(rmean_d)), 1e-6, 1e-6, "bn running mean");
    check_close(rvar, rvar_d, abs_double(as_float(rvar_d)), 4e-6, 1e-6, "bn running var");

    // Backward (dy already through the activation's backward).
    auto dy = test::Buffer::make(s, &r, strided, &r);
    const DBuffer dyd = to_double(dy.view);
    DBuffer dx_d(s);
    std::vector<double> dg_d(std::size_t(s.c)), db_d(std::size_t(s.c));
    ref::batchnorm_train_backward<double>(xd.view, gd.data(), 1e-5, dyd.view, dx_d.view, dg_d.data(), db_d.data());
    auto dx = test::Buffer::make(s, &r, strided, &r);
    const auto dx_before = to_double(test::to_dense(dx.view));
    std::vector<float> dg = r.vec(std::size_t(s.c)), dbt = r.vec(std::size_t(s.c));
    const auto dg_before = dg, db_before = dbt;
    REQUIRE(kernels::batchnorm_train_backward<Arch>(x.view, dy.view, gamma.data(), mean.data(), invstd.data(), dx.view,
                                                    dg.data(), dbt.data(), ws.ws, accumulate, accumulate)
                .is_ok());
    // dx is a difference of O(|dy| * gamma * invstd) terms, each off by ulp_effect.
    std::vector<double> dx_want = dx_d.storage, dx_sc(dx_want.size());
    for (int b = 0, k = 0; b < s.n; ++b)
      for (int i = 0; i < s.h; ++i)
        for (int j = 0; j < s.w; ++j)
          for (int c = 0; c < s.c; ++c, ++k) {
            const std::size_t ck = std::size_t(c);
            dx_sc[std::size_t(k)] = 3.0 * gd[ck] * invstd_d[ck] * (1.0 + ulp_effect[ck] / 2e-6) +
                                    (accumulate ? std::fabs(dx_before[std::size_t(k)]) : 0.0);
            if (accumulate) dx_want[std::size_t(k)] += dx_before[std::size_t(k)];
          }
    check_close(test::to_dense(dx.view), dx_want, dx_sc, 2e-6, 1e-6, "bn dx");
    const double m = double(s.n * s.pixels());
    std::vector<double> sc(std::size_t(s.c)), sc_g(std::size_t(s.c));
    for (int c = 0; c < s.c; ++c) {
      const std::size_t ck = std::size_t(c);
      sc[ck] = m + (accumulate ? std::fabs(db_before[ck]) : 0.0);
      sc_g[ck] = m * (1.0 + ulp_effect[ck] / 2e-6) + (accumulate ? std::fabs(dg_before[ck]) : 0.0);
      if (accumulate) {
        dg_d[ck] += dg_before[ck];
        db_d[ck] += db_before[ck];
      }
    }
    check_close(dg, dg_d, sc_g, 2e-6, 1e-6, "bn dgamma");
    check_close(dbt, db_d, sc, 1e-6, 1e-6, "bn dbeta");
  }
}

// A BN layer without a residual recomputes its activation's mask from the BN input in the
// backward sums instead of reading the output y: the sums and the masked dy must be those
// taken with the y batchnorm_normalize wrote, to the bit, also for values exactly on the
// kink (x = mean with beta = 0 gives v = 0: y = 0, no gradient).
TEST_CASE_TEMPLATE("batch norm backward sums with the mask from the input equal those from the output",
                   Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(0xB5);
  for (int it = 0; it < test::scaled(40); ++it) {
    const int channels = r.coin(0.2) ? r.uniform_int(60, 150) : r.uniform_int(1, 37);
    const Shape s{r.uniform_int(1, 4), r.uniform_int(1, 7), r.uniform_int(1, 7), channels};
    const bool strided = r.coin(0.3);
    const auto act = static_cast<Activation>(r.uniform_int(0, 2));
    const bool no_gamma = r.coin(0.2), no_beta = r.coin(0.2);
    INFO("bn ", s.n, "x", s.h, "x", s.w, "x", s.c, " act ", int(act), " strided ", strided, " no gamma ", no_gamma,
         " no beta ", no_beta);
    auto x = test::Buffer::make(s, &r, strided, &r);
    auto gamma = r.vec(std::size_t(s.c), -2.0f, 2.0f), beta = r.vec(std::size_t(s.c), -1.0f, 7.0f);
    auto mean = r.vec(std::size_t(s.c)), invstd = r.vec(std::size_t(s.c), 0.5f, 2.0f);
    for (int c = 0; c < s.c; c += 3) beta[std::size_t(c)] = 0.0f;
    for (int b = 0; b < s.n; ++b)  // some values on the kink
      for (int i = 0; i < s.h; i += 2)
        for (int c = 0; c < s.c; c += 3) x.view.at(b, i, 0, c) = mean[std::size_t(c)];
    const float* g = no_gamma ? nullptr : gamma.data();
    const float* bt = no_beta ? nullptr : beta.data();
    auto y = test::Buffer::make(s, &r, strided, &r);
    REQUIRE(kernels::batchnorm_normalize<Arch>(x.view, mean.data(), invstd.data(), g, bt, y.view, act).is_ok());
    auto dy_a = test::Buffer::make(s, &r, strided, &r);
    auto dy_b = test::Buffer::make(s, &r, strided, &r);
    for (int b = 0; b < s.n; ++b)
      for (int i = 0; i < s.h; ++i)
        for (int j = 0; j < s.w; ++j)
          for (int c = 0; c < s.c; ++c) dy_b.view.at(b, i, j, c) = dy_a.view.at(b, i, j, c);
    const std::vector<float> dy_before = test::to_dense(dy_a.view);
    std::vector<double> sa(std::size_t(s.c)), qa(std::size_t(s.c)), sb(std::size_t(s.c)), qb(std::size_t(s.c));
    REQUIRE(kernels::batchnorm_backward_sums<Arch>(x.view, y.view, act, dy_a.view, mean.data(), invstd.data(),
                                                   sa.data(), qa.data())
                .is_ok());
    REQUIRE(kernels::batchnorm_backward_sums_from_input<Arch>(x.view, g, bt, act, dy_b.view, mean.data(),
                                                              invstd.data(), sb.data(), qb.data())
                .is_ok());
    const std::vector<float> ga = test::to_dense(dy_a.view), gb = test::to_dense(dy_b.view);
    CHECK(std::memcmp(ga.data(), gb.data(), ga.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(sa.data(), sb.data(), sa.size() * sizeof(double)) == 0);
    CHECK(std::memcmp(qa.data(), qb.data(), qa.size() * sizeof(double)) == 0);
    if (act != Activation::none) {
      // The mask did something: some gradients zeroed, among them those on the kink.
      std::size_t zeroed = 0;
      for (std::size_t k = 0; k < ga.size(); ++k) zeroed += ga[k] == 0.0f && dy_before[k] != 0.0f;
      CHECK(zeroed > 0);
    }
  }
}

TEST_CASE("batch norm statistics survive a large mean") {
  // 1e4 + N(0, 1e-2): naive float sum-of-squares would lose every digit of the variance.
  test::Rng r(5);
  const Shape s{4, 8, 8, 3};
  std::vector<float> x(std::size_t(s.size()));
  for (auto& v : x) v = 1e4f + 1e-2f * r.uniform();
  std::vector<double> xd(x.begin(), x.end());
  std::vector<float> mean(3), invstd(3);
  std::vector<double> mean_d(3), invstd_d(3);
  DBuffer yd(s);
  ref::batchnorm_train_forward<double>(TensorView<const double>::dense(xd.data(), s), nullptr, nullptr, 1e-8, 0.1,
                                       yd.view, mean_d.data(), invstd_d.data(), nullptr, nullptr);
  std::vector<float> y(x.size());
  test::OwnedWorkspace ws(kernels::batchnorm_train_workspace_bytes(3));
  kernels::BatchNormTrainParams bn;
  bn.eps = 1e-8f;
  REQUIRE(kernels::batchnorm_train_forward(ConstTensor::dense(x.data(), s), bn, Tensor::dense(y.data(), s), mean.data(),
                                           invstd.data(), nullptr, nullptr, ws.ws)
              .is_ok());
  for (int c = 0; c < 3; ++c) CHECK(invstd[std::size_t(c)] == doctest::Approx(invstd_d[std::size_t(c)]).epsilon(1e-3));
}

// ---------------------------------------------------------------------------------------------
// Activations, residual add, concat
// ---------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("activation, residual add and concat backward match the reference", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(0xE1);
  for (int it = 0; it < test::scaled(60); ++it) {
    const Shape s{r.uniform_int(1, 3), r.uniform_int(1, 7), r.uniform_int(1, 7), r.uniform_int(1, 37)};
    const auto act = static_cast<Activation>(r.uniform_int(0, 2));
    const bool strided = r.coin(0.5), accumulate = r.coin(0.3);
    INFO("elementwise act ", int(act), " acc ", accumulate);
    // y = act(x) with values on both sides of the kinks, and exactly on them.
    auto y = test::Buffer::make(s, &r, strided, &r);
    for (int b = 0; b < s.n; ++b)
      for (int i = 0; i < s.h; ++i)
        for (int j = 0; j < s.w; ++j)
          for (int c = 0; c < s.c; ++c) {
            float v = 8.0f * y.view.at(b, i, j, c);
            if (r.coin(0.1)) v = r.coin() ? 0.0f : 6.0f;
            y.view.at(b, i, j, c) = ref::activation_value(v, act);
          }
    auto dy = test::Buffer::make(s, &r, strided, &r);
    const auto yv = test::to_dense(y.view), gv = test::to_dense(dy.view);
    std::vector<double> want(gv.size());
    for (std::size_t i = 0; i < gv.size(); ++i) want[i] = gv[i] * ref::activation_derivative_from_output<double>(yv[i], act);

    auto dx = test::Buffer::make(s, &r, strided, &r);
    auto before = to_double(test::to_dense(dx.view));
    REQUIRE(kernels::activation_backward<Arch>(y.view, dy.view, dx.view, act, accumulate).is_ok());
    std::vector<double> w1 = want;
    if (accumulate)
      for (std::size_t i = 0; i < w1.size(); ++i) w1[i] += before[i];
    check_close(test::to_dense(dx.view), w1, {}, 1e-6, 0, "activation dx");

    // In place (dx aliases dy).
    auto g2 = test::Buffer::make(s, nullptr);
    for (int b = 0; b < s.n; ++b)
      for (int i = 0; i < s.h; ++i)
        for (int j = 0; j < s.w; ++j)
          for (int c = 0; c < s.c; ++c) g2.view.at(b, i, j, c) = dy.view.at(b, i, j, c);
    REQUIRE(kernels::activation_backward<Arch>(y.view, g2.view, g2.view, act).is_ok());
    check_close(test::to_dense(g2.view), want, {}, 0, 0, "activation dx in place");

    // Residual add: both operands, or only one.
    auto da = test::Buffer::make(s, &r, strided, &r), db = test::Buffer::make(s, &r, strided, &r);
    const auto da0 = to_double(test::to_dense(da.view)), db0 = to_double(test::to_dense(db.view));
    const bool skip_b = r.coin(0.2);
    REQUIRE(kernels::add_backward<Arch>(y.view, dy.view, act, da.view, skip_b ? Tensor() : db.view, accumulate, !accumulate)
                .is_ok());
    std::vector<double> wa = want, wb = want;
    for (std::size_t i = 0; i < want.size(); ++i) {
      if (accumulate) wa[i] += da0[i];
      if (!accumulate) wb[i] += db0[i];
      if (skip_b) wb[i] = db0[i];
    }
    check_close(test::to_dense(da.view), wa, {}, 1e-6, 0, "add da");
    check_close(test::to_dense(db.view), wb, {}, 1e-6, 0, "add db");

    // Concat: dy of a + b channels back into the two parts.
    const int ca = r.uniform_int(0, s.c), cb = s.c - ca;
    if (ca == 0 || cb == 0) continue;
    auto pa = test::Buffer::make(Shape{s.n, s.h, s.w, ca}, &r, strided, &r);
    auto pb = test::Buffer::make(Shape{s.n, s.h, s.w, cb}, &r, strided, &r);
    const auto pa0 = test::to_dense(pa.view), pb0 = test::to_dense(pb.view);
    REQUIRE(kernels::concat_channels_backward<Arch>(dy.view, pa.view, pb.view, accumulate).is_ok());
    std::vector<double> want_a, want_b;
    for (int b = 0, ka = 0, kb = 0; b < s.n; ++b)
      for (int i = 0; i < s.h; ++i)
        for (int j = 0; j < s.w; ++j)
          for (int c = 0; c < s.c; ++c) {
            const double g = dy.view.at(b, i, j, c);
            if (c < ca) {
              want_a.push_back(g + (accumulate ? pa0[std::size_t(ka++)] : 0.0));
            } else {
              want_b.push_back(g + (accumulate ? pb0[std::size_t(kb++)] : 0.0));
            }
          }
    check_close(test::to_dense(pa.view), want_a, {}, 1e-6, 0, "concat da");
    check_close(test::to_dense(pb.view), want_b, {}, 1e-6, 0, "concat db");
  }
}

// ---------------------------------------------------------------------------------------------
// Pooling
// ---------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("pooling backward matches the double reference", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(0x9001);
  for (int it = 0; it < test::scaled(150); ++it) {
    Pool2dParams p;
    p.kernel_h = r.uniform_int(1, 4);
    p.kernel_w = r.uniform_int(1, 4);
    p.stride_h = r.uniform_int(1, 3);
    p.stride_w = r.uniform_int(1, 3);
    p.pad_top = r.uniform_int(0, p.kernel_h - 1);
    p.pad_bottom = r.uniform_int(0, p.kernel_h - 1);
    p.pad_left = r.uniform_int(0, p.kernel_w - 1);
    p.pad_right = r.uniform_int(0, p.kernel_w - 1);
    p.count_include_pad = r.coin();
    const Shape s{r.uniform_int(1, 3), r.uniform_int(1, 12), r.uniform_int(1, 12), r.uniform_int(1, 37)};
    if (!p.validate(s).is_ok()) continue;
    const bool strided = r.coin(0.3), accumulate = r.coin(0.3);
    INFO("pool k ", p.kernel_h, "x", p.kernel_w, " s ", p.stride_h, "x", p.stride_w, " pad ", p.pad_top, ",", p.pad_left, ",",
         p.pad_bottom, ",", p.pad_right, " cip ", p.count_include_pad, " acc ", accumulate);
    const Shape os = p.output_shape(s);
    auto x = test::Buffer::make(s, &r, strided, &r);
    // Quantised values: ties in most windows, so the first-maximum rule is exercised.
    for (int b = 0; b < s.n; ++b)
      for (int i = 0; i < s.h; ++i)
        for (int j = 0; j < s.w; ++j)
          for (int c = 0; c < s.c; ++c) x.view.at(b, i, j, c) = std::round(x.view.at(b, i, j, c) * 2.0f);
    auto dy = test::Buffer::make(os, &r, strided, &r);
    const DBuffer xd = to_double(x.view), dyd = to_double(dy.view);
    DBuffer max_ref(s), avg_ref(s);
    ref::max_pool2d_backward<double>(p, xd.view, dyd.view, max_ref.view);
    ref::avg_pool2d_backward<double>(p, dyd.view, avg_ref.view);

    auto dx = test::Buffer::make(s, &r, strided, &r);
    const auto before = to_double(test::to_dense(dx.view));
    test::OwnedWorkspace ws(kernels::max_pool2d_backward_workspace_bytes(s.c));
    REQUIRE(kernels::max_pool2d_backward<Arch>(p, x.view, dy.view, dx.view, ws.ws, accumulate).is_ok());
    std::vector<double> want = max_ref.storage;
    if (accumulate)
      for (std::size_t i = 0; i < want.size(); ++i) want[i] += before[i];
    check_close(test::to_dense(dx.view), want, abs_double(as_float(want)), 1e-6, 1e-6, "max pool dx");

    auto dx2 = test::Buffer::make(s, &r, strided, &r);
    const auto before2 = to_double(test::to_dense(dx2.view));
    REQUIRE(kernels::avg_pool2d_backward<Arch>(p, dy.view, dx2.view, accumulate).is_ok());
    want = avg_ref.storage;
    if (accumulate)
      for (std::size_t i = 0; i < want.size(); ++i) want[i] += before2[i];
    check_close(test::to_dense(dx2.view), want, abs_double(as_float(want)), 1e-6, 1e-6, "avg pool dx");

    // Global average pooling.
    std::vector<float> gdy = r.vec(std::size_t(s.n) * (s.c + 2));
    std::vector<double> gdyd(std::size_t(s.n) * s.c);
    for (int b = 0; b < s.n; ++b)
      for (int c = 0; c < s.c; ++c) gdyd[std::size_t(b * s.c + c)] = gdy[std::size_t(b * (s.c + 2) + c)];
    DBuffer gref(s);
    ref::global_avg_pool_backward<double>(gdyd.data(), gref.view);
    auto dx3 = test::Buffer::make(s, &r, strided, &r);
    const auto before3 = to_double(test::to_dense(dx3.view));
    REQUIRE(kernels::global_avg_pool_backward<Arch>(gdy.data(), s.c + 2, dx3.view, accumulate).is_ok());
    want = gref.storage;
    if (accumulate)
      for (std::size_t i = 0; i < want.size(); ++i) want[i] += before3[i];
    check_close(test::to_dense(dx3.view), want, abs_double(as_float(want)), 1e-6, 1e-7, "global pool dx");
  }
}

// ---------------------------------------------------------------------------------------------
// Loss
// ---------------------------------------------------------------------------------------------

TEST_CASE("softmax cross-entropy matches the double reference, with and without label smoothing") {
  test::Rng r(0x10);
  for (int it = 0; it < test::scaled(100); ++it) {
    const int batch = r.uniform_int(1, 33), classes = r.uniform_int(1, 120);
    const float eps = r.pick(std::vector<float>{0.0f, 0.0f, 0.1f, 0.3f, 1.0f});
    const float spread = r.pick(std::vector<float>{1.0f, 10.0f, 100.0f});
    const index_t ld = classes + r.uniform_int(0, 3);
    auto z = r.vec(std::size_t(batch) * ld, -spread, spread);
    std::vector<int> labels(static_cast<std::size_t>(batch));
    for (auto& l : labels) l = r.uniform_int(0, classes - 1);
    std::vector<double> zd(std::size_t(batch) * classes), dz_ref(zd.size());
    for (int b = 0; b < batch; ++b)
      for (int k = 0; k < classes; ++k) zd[std::size_t(b * classes + k)] = z[std::size_t(b * ld + k)];
    const double loss_ref = ref::softmax_cross_entropy<double>(batch, classes, zd.data(), labels.data(), eps, dz_ref.data());
    float loss = 0;
    std::vector<float> dz(std::size_t(batch) * ld, 7.0f);
    REQUIRE(kernels::softmax_cross_entropy(batch, classes, z.data(), ld, labels.data(), eps, &loss, dz.data(), ld).is_ok());
    INFO("ce ", batch, "x", classes, " eps ", eps, " spread ", spread);
    CHECK(loss == doctest::Approx(loss_ref).epsilon(1e-6).scale(1.0));
    std::vector<float> got;
    for (int b = 0; b < batch; ++b)
      for (int k = 0; k < classes; ++k) got.push_back(dz[std::size_t(b * ld + k)]);
    check_close(got, dz_ref, {}, 1e-5, 1e-7, "ce dlogits");
    // In place: the gradient overwrites the logits.
    float loss2 = 0;
    REQUIRE(kernels::softmax_cross_entropy(batch, classes, z.data(), ld, labels.data(), eps, &loss2, z.data(), ld).is_ok());
    CHECK(loss2 == loss);
    for (int b = 0; b < batch; ++b)
      for (int k = 0; k < classes; ++k) CHECK(z[std::size_t(b * ld + k)] == dz[std::size_t(b * ld + k)]);
  }
}

// ---------------------------------------------------------------------------------------------
// The double references against central finite differences of the double forwards.
// L = sum r * forward(...) for a random r, so dL/d(output) = r.
// ---------------------------------------------------------------------------------------------

namespace {

using DView = TensorView<double>;
using CDView = TensorView<const double>;

std::vector<double> random_doubles(test::Rng& r, std::size_t n, double lo = -1.0, double hi = 1.0) {
  std::vector<double> v(n);
  for (auto& x : v) x = lo + (hi - lo) * (r.uniform(0.0f, 1.0f) + 1e-4 * r.uniform());
  return v;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Compares the analytic gradient `g` of loss() with respect to `v` with central differences
// at up to `samples` random indices (all of them when v is small).
template <class F>
void check_against_differences(std::vector<double>& v, const std::vector<double>& g, F&& loss, test::Rng& r, double h,
                               const char* what, int samples = 24) {
  REQUIRE(v.size() == g.size());
  const bool all = v.size() <= std::size_t(samples);
  const int count = all ? int(v.size()) : samples;
  for (int k = 0; k < count; ++k) {
    const std::size_t i = all ? std::size_t(k) : std::size_t(r.uniform_int(0, int(v.size()) - 1));
    const double orig = v[i];
    v[i] = orig + h;
    const double lp = loss();
    v[i] = orig - h;
    const double lm = loss();
    v[i] = orig;
    const double fd = (lp - lm) / (2 * h);
    CHECK_MESSAGE(std::fabs(fd - g[i]) <= 1e-6 * (1.0 + std::fabs(g[i])), what, " index ", i, ": analytic ", g[i],
                  " vs finite difference ", fd);
  }
}

}  // namespace

TEST_CASE("the convolution reference gradients are the finite differences of its forward") {
  test::Rng r(0xFD1);
  for (int it = 0; it < test::scaled(25); ++it) {
    ConvCase c = random_conv_case(r);
    c.in.h = c.in.h > 6 ? 6 : c.in.h;
    c.in.w = c.in.w > 6 ? 6 : c.in.w;
    const Conv2dParams& p = c.p;
    if (!p.validate(c.in, c.cout).is_ok()) continue;
    INFO(describe(p, c.in, c.cout));
    const Shape os = p.output_shape(c.in, c.cout);
    auto x = random_doubles(r, std::size_t(c.in.size()));
    auto w = random_doubles(r, std::size_t(c.cout) * p.taps() * (c.in.c / p.groups));
    auto b = random_doubles(r, std::size_t(c.cout));
    const auto rr = random_doubles(r, std::size_t(os.size()));
    std::vector<double> y(rr.size()), dx(x.size()), dw(w.size()), db(b.size());
    auto loss = [&] {
      ref::conv2d_forward<double>(p, CDView::dense(x.data(), c.in), w.data(), b.data(), DView::dense(y.data(), os));
      return dot(rr, y);
    };
    ref::conv2d_backward<double>(p, CDView::dense(x.data(), c.in), w.data(), CDView::dense(rr.data(), os),
                                 DView::dense(dx.data(), c.in), dw.data(), db.data());
    check_against_differences(x, dx, loss, r, 1e-3, "conv dx");
    check_against_differences(w, dw, loss, r, 1e-3, "conv dw");
    check_against_differences(b, db, loss, r, 1e-3, "conv db");
  }
}

TEST_CASE("the fully connected reference gradients are the finite differences of its forward") {
  test::Rng r(0xFD2);
  for (int it = 0; it < test::scaled(10); ++it) {
    const int batch = r.uniform_int(1, 5), in_f = r.uniform_int(1, 20), out_f = r.uniform_int(1, 12);
    auto x = random_doubles(r, std::size_t(batch) * in_f), w = random_doubles(r, std::size_t(out_f) * in_f);
    auto b = random_doubles(r, std::size_t(out_f));
    const auto rr = random_doubles(r, std::size_t(batch) * out_f);
    std::vector<double> y(rr.size()), dx(x.size()), dw(w.size()), db(b.size());
    auto loss = [&] {
      ref::linear_forward<double>(batch, in_f, out_f, x.data(), w.data(), b.data(), y.data());
      return dot(rr, y);
    };
    ref::linear_backward<double>(batch, in_f, out_f, x.data(), w.data(), rr.data(), dx.data(), dw.data(), db.data());
    check_against_differences(x, dx, loss, r, 1e-3, "linear dx");
    check_against_differences(w, dw, loss, r, 1e-3, "linear dw");
    check_against_differences(b, db, loss, r, 1e-3, "linear db");
  }
}

TEST_CASE("the batch norm reference gradients are the finite differences of its training forward") {
  test::Rng r(0xFD3);
  for (int it = 0; it < test::scaled(10); ++it) {
    const Shape s{r.uniform_int(1, 3), r.uniform_int(1, 4), r.uniform_int(1, 4), r.uniform_int(1, 5)};
    if (s.n * s.pixels() < 2) continue;
    auto x = random_doubles(r, std::size_t(s.size()), -2.0, 3.0);
    auto gamma = random_doubles(r, std::size_t(s.c), 0.5, 2.0), beta = random_doubles(r, std::size_t(s.c));
    const auto rr = random_doubles(r, std::size_t(s.size()));
    std::vector<double> y(x.size()), dx(x.size()), dg(gamma.size()), dbt(beta.size());
    auto loss = [&] {
      ref::batchnorm_train_forward<double>(CDView::dense(x.data(), s), gamma.data(), beta.data(), 1e-5, 0.1,
                                           DView::dense(y.data(), s), nullptr, nullptr, nullptr, nullptr);
      return dot(rr, y);
    };
    ref::batchnorm_train_backward<double>(CDView::dense(x.data(), s), gamma.data(), 1e-5, CDView::dense(rr.data(), s),
                                          DView::dense(dx.data(), s), dg.data(), dbt.data());
    check_against_differences(x, dx, loss, r, 1e-5, "bn dx");
    check_against_differences(gamma, dg, loss, r, 1e-5, "bn dgamma");
    check_against_differences(beta, dbt, loss, r, 1e-5, "bn dbeta");
  }
}

TEST_CASE("the activation and pooling reference gradients are the finite differences of their forwards") {
  test::Rng r(0xFD4);
  for (int it = 0; it < test::scaled(10); ++it) {
    const Shape s{r.uniform_int(1, 2), r.uniform_int(1, 7), r.uniform_int(1, 7), r.uniform_int(1, 4)};
    const auto rr_full = random_doubles(r, std::size_t(s.size()));

    // relu / relu6 away from the kinks (0 and 6).
    for (Activation act : {Activation::relu, Activation::relu6}) {
      auto x = random_doubles(r, std::size_t(s.size()), -4.0, 10.0);
      for (auto& v : x)
        if (std::fabs(v) < 0.01 || std::fabs(v - 6.0) < 0.01) v += 0.05;
      std::vector<double> dx(x.size());
      for (std::size_t i = 0; i < x.size(); ++i)
        dx[i] = rr_full[i] * ref::activation_derivative_from_output(ref::activation_value(x[i], act), act);
      auto loss = [&] {
        double l = 0;
        for (std::size_t i = 0; i < x.size(); ++i) l += rr_full[i] * ref::activation_value(x[i], act);
        return l;
      };
      check_against_differences(x, dx, loss, r, 1e-4, act == Activation::relu ? "relu dx" : "relu6 dx");
    }

    // Pooling: continuous random inputs, so no two window values tie.
    Pool2dParams p;
    p.kernel_h = r.uniform_int(1, 3);
    p.kernel_w = r.uniform_int(1, 3);
    p.stride_h = r.uniform_int(1, 2);
    p.stride_w = r.uniform_int(1, 3);
    p.pad_top = r.uniform_int(0, p.kernel_h - 1);
    p.pad_left = r.uniform_int(0, p.kernel_w - 1);
    p.pad_bottom = r.uniform_int(0, p.kernel_h - 1);
    p.pad_right = r.uniform_int(0, p.kernel_w - 1);
    if (!p.validate(s).is_ok()) continue;
    const Shape os = p.output_shape(s);
    const auto rr = random_doubles(r, std::size_t(os.size()));
    auto x = random_doubles(r, std::size_t(s.size()));
    std::vector<double> y(rr.size()), dx(x.size());
    auto max_loss = [&] {
      ref::max_pool2d_forward<double>(p, CDView::dense(x.data(), s), DView::dense(y.data(), os));
      return dot(rr, y);
    };
    ref::max_pool2d_backward<double>(p, CDView::dense(x.data(), s), CDView::dense(rr.data(), os), DView::dense(dx.data(), s));
    check_against_differences(x, dx, max_loss, r, 1e-7, "max pool dx");
    for (bool include_pad : {true, false}) {
      p.count_include_pad = include_pad;
      auto avg_loss = [&] {
        ref::avg_pool2d_forward<double>(p, CDView::dense(x.data(), s), DView::dense(y.data(), os));
        return dot(rr, y);
      };
      ref::avg_pool2d_backward<double>(p, CDView::dense(rr.data(), os), DView::dense(dx.data(), s));
      check_against_differences(x, dx, avg_loss, r, 1e-3, include_pad ? "avg pool dx" : "avg pool (exclude pad) dx");
    }
    const auto rg = random_doubles(r, std::size_t(s.n) * s.c);
    std::vector<double> g(rg.size());
    auto global_loss = [&] {
      ref::global_avg_pool_forward<double>(CDView::dense(x.data(), s), g.data());
      return dot(rg, g);
    };
    ref::global_avg_pool_backward<double>(rg.data(), DView::dense(dx.data(), s));
    check_against_differences(x, dx, global_loss, r, 1e-3, "global pool dx");
  }
}

TEST_CASE("the cross-entropy reference gradient is the finite difference of its loss") {
  test::Rng r(0xFD5);
  for (int it = 0; it < test::scaled(10); ++it) {
    const int batch = r.uniform_int(1, 6), classes = r.uniform_int(1, 12);
    const double eps = r.pick(std::vector<double>{0.0, 0.1, 0.5});
    auto z = random_doubles(r, std::size_t(batch) * classes, -5.0, 5.0);
    std::vector<int> labels(static_cast<std::size_t>(batch));
    for (auto& l : labels) l = r.uniform_int(0, classes - 1);
    std::vector<double> dz(z.size());
    ref::softmax_cross_entropy<double>(batch, classes, z.data(), labels.data(), eps, dz.data());
    auto loss = [&] { return ref::softmax_cross_entropy<double>(batch, classes, z.data(), labels.data(), eps, nullptr); };
    check_against_differences(z, dz, loss, r, 1e-5, "cross-entropy dlogits");
  }
}

// ---------------------------------------------------------------------------------------------
// Arguments and workspace sizes
// ---------------------------------------------------------------------------------------------

TEST_CASE("backward kernels report bad arguments and measure their workspace") {
  const auto p = Conv2dParams::square(3, 2, 1);
  const Shape in{2, 9, 8, 5}, os = p.output_shape(in, 7);
  std::vector<float> x(std::size_t(in.size()), 1.0f), dy(std::size_t(os.size()), 1.0f), dx(x.size());
  std::vector<float> w(std::size_t(7 * 9 * 5), 0.5f), dw(w.size()), db(7);
  std::vector<float> packed(std::size_t(kernels::conv_input_grad_packed_floats(p, 5, 7)));
  const auto pw = kernels::pack_conv_input_grad_weights(p, 5, 7, w.data(), packed.data());
  const auto xv = ConstTensor::dense(x.data(), in);
  const auto dyv = ConstTensor::dense(dy.data(), os);
  const auto dxv = Tensor::dense(dx.data(), in);

  Workspace m = Workspace::measure();
  CHECK(kernels::conv2d_backward_input(p, dyv, pw, dxv, m).is_ok());
  CHECK(m.peak() == kernels::conv2d_backward_input_workspace_bytes(p, 7));
  Workspace m2 = Workspace::measure();
  CHECK(kernels::conv2d_backward_weights(p, xv, dyv, dw.data(), db.data(), m2).is_ok());
  CHECK(m2.peak() == kernels::conv2d_backward_weights_workspace_bytes(p, 5, 7));
  Workspace m3 = Workspace::measure();
  CHECK(kernels::batchnorm_train_forward(xv, {}, dxv, db.data(), db.data(), nullptr, nullptr, m3).is_ok());
  CHECK(m3.peak() == kernels::batchnorm_train_workspace_bytes(5));

  test::OwnedWorkspace ws(1 << 16);
  Workspace tiny(ws.mem.data(), 8);
  CHECK(kernels::conv2d_backward_weights(p, xv, dyv, dw.data(), db.data(), tiny).code() == Error::workspace_too_small);
  auto bad = p;
  bad.dilation_h = 0;
  CHECK(kernels::conv2d_backward_input(bad, dyv, pw, dxv, ws.ws).code() == Error::invalid_argument);
  CHECK(kernels::conv2d_backward_input(p, ConstTensor::dense(dy.data(), {2, 4, 4, 7}), pw, dxv, ws.ws).code() ==
        Error::shape_mismatch);
  const auto pw_other = kernels::pack_conv_input_grad_weights(Conv2dParams::square(3, 1, 1), 5, 7, w.data(), packed.data());
  CHECK(kernels::conv2d_backward_input(p, dyv, pw_other, dxv, ws.ws).code() == Error::shape_mismatch);
  CHECK(kernels::conv2d_backward_input(p, dyv, pw, dxv, ws.ws, false, {4, 10}).code() == Error::invalid_argument);
  CHECK(kernels::conv2d_backward_weights(p, xv, dyv, nullptr, db.data(), ws.ws).code() == Error::invalid_argument);

  const auto pool = Pool2dParams::square(2, 2);
  CHECK(kernels::max_pool2d_backward(pool, xv, dyv, dxv, ws.ws).code() == Error::shape_mismatch);
  CHECK(kernels::avg_pool2d_backward(pool, dyv, dxv).code() == Error::shape_mismatch);
  int labels[2] = {0, 9};
  float logits[2 * 9] = {}, loss = 0;
  CHECK(kernels::softmax_cross_entropy(2, 9, logits, 9, labels, 0.0f, &loss).code() == Error::invalid_argument);
  labels[1] = 8;
  CHECK(kernels::softmax_cross_entropy(2, 9, logits, 9, labels, 0.0f, &loss).is_ok());
  CHECK(loss == doctest::Approx(std::log(9.0)));
  CHECK(kernels::softmax_cross_entropy(2, 9, logits, 9, labels, 1.5f, &loss).code() == Error::invalid_argument);
  float one[3] = {1, 2, 3}, mean = 0, invstd = 0;
  CHECK(kernels::batchnorm_train_forward(ConstTensor::dense(one, {1, 1, 1, 1}), {}, Tensor::dense(one + 1, {1, 1, 1, 1}),
                                         &mean, &invstd, nullptr, nullptr, ws.ws)
            .code() == Error::invalid_argument);
}

}  // namespace test_backward
