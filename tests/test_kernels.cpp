// Fully connected, batch norm (and folding), activations, residual add, concat, pooling,
// softmax, log-softmax and entropy against the naive references.
#include "edgenn/kernels/reference.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_kernels {

using namespace edgenn;

TEST_CASE_TEMPLATE("fully connected matches the reference", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(1);
  for (int it = 0; it < test::scaled(100); ++it) {
    // Batches of 1-2 rows take the split-reduction kernels; out_f past 64 the narrow last panel.
    const int batch = r.uniform_int(1, 9), in_f = r.uniform_int(1, 300), out_f = r.uniform_int(1, it % 2 ? 70 : 200);
    const auto act = static_cast<Activation>(r.uniform_int(0, 2));
    const int ldx = in_f + r.uniform_int(0, 3), ldy = out_f + r.uniform_int(0, 3);
    auto x = r.vec(std::size_t(batch) * ldx), w = r.vec(std::size_t(in_f) * out_f), b = r.vec(std::size_t(out_f));
    std::vector<float> packed(std::size_t(kernels::fc_packed_floats<Arch>(in_f, out_f)));
    const auto pw = kernels::pack_fc_weights<Arch>(in_f, out_f, w.data(), b.data(), packed.data());
    std::vector<float> y(std::size_t(batch) * ldy, 9.0f), xd(std::size_t(batch) * in_f), yr(std::size_t(batch) * out_f);
    for (int i = 0; i < batch; ++i)
      for (int j = 0; j < in_f; ++j) xd[std::size_t(i * in_f + j)] = x[std::size_t(i * ldx + j)];
    REQUIRE(kernels::fully_connected<Arch>(batch, x.data(), ldx, pw, y.data(), ldy, act).is_ok());
    ref::fully_connected(batch, in_f, out_f, xd.data(), w.data(), b.data(), yr.data(), act);
    for (int i = 0; i < batch; ++i)
      for (int o = 0; o < out_f; ++o) CHECK(y[std::size_t(i * ldy + o)] == doctest::Approx(yr[std::size_t(i * out_f + o)]).epsilon(1e-4).scale(in_f));
  }
}

TEST_CASE_TEMPLATE("batch norm inference and folding match the reference", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(2);
  for (int it = 0; it < test::scaled(30); ++it) {
    const Shape s{r.uniform_int(1, 3), r.uniform_int(1, 9), r.uniform_int(1, 9), r.uniform_int(1, 37)};
    auto x = test::Buffer::make(s, &r, r.coin(), &r);
    auto gamma = r.vec(std::size_t(s.c)), beta = r.vec(std::size_t(s.c)), mean = r.vec(std::size_t(s.c));
    auto var = r.vec(std::size_t(s.c), 0.1f, 2.0f);
    const auto act = static_cast<Activation>(r.uniform_int(0, 2));
    std::vector<float> scale(std::size_t(s.c)), shift(std::size_t(s.c));
    kernels::BatchNormParams bn{gamma.data(), beta.data(), mean.data(), var.data(), 1e-5f};
    REQUIRE(kernels::batchnorm_scale_shift(bn, s.c, scale.data(), shift.data()).is_ok());
    auto y = test::Buffer::make(s, &r, r.coin(), &r), yr = test::Buffer::make(s, nullptr);
    REQUIRE(kernels::batchnorm_inference<Arch>(x.view, scale.data(), shift.data(), y.view, act).is_ok());
    ref::batchnorm_inference(x.view, gamma.data(), beta.data(), mean.data(), var.data(), 1e-5f, yr.view, act);
    CHECK(test::close(test::to_dense(y.view), test::to_dense(yr.view), {}, 1e-5, 1e-5));

    // conv followed by BN == conv with the BN folded into weights and bias.
    const int cout = s.c, cin = r.uniform_int(1, 9);
    const auto p = kernels::Conv2dParams::square(3, 1, 1);
    const Shape is{s.n, s.h, s.w, cin};
    auto xi = test::Buffer::make(is, &r);
    auto w = r.vec(std::size_t(cout) * 9 * cin), cb = r.vec(std::size_t(cout));
    auto conv_out = test::Buffer::make(s, nullptr), bn_out = test::Buffer::make(s, nullptr), folded_out = test::Buffer::make(s, nullptr);
    ref::conv2d(p, xi.view, w.data(), cb.data(), conv_out.view);
    ref::batchnorm_inference(conv_out.view, gamma.data(), beta.data(), mean.data(), var.data(), 1e-5f, bn_out.view);
    auto wf = w, bf = cb;
    REQUIRE(kernels::fold_batchnorm(bn, cout, 9 * cin, wf.data(), bf.data()).is_ok());
    ref::conv2d(p, xi.view, wf.data(), bf.data(), folded_out.view);
    CHECK(test::close(test::to_dense(folded_out.view), test::to_dense(bn_out.view), {}, 1e-4, 1e-4));
  }
}

TEST_CASE_TEMPLATE("activation, residual add and concat match the reference", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(3);
  for (int it = 0; it < test::scaled(40); ++it) {
    const Shape s{r.uniform_int(1, 3), r.uniform_int(1, 8), r.uniform_int(1, 8), r.uniform_int(1, 40)};
    const auto act = static_cast<Activation>(r.uniform_int(0, 2));
    auto a = test::Buffer::make(s, &r, r.coin(), &r), b = test::Buffer::make(s, &r, r.coin(), &r);
    for (auto& v : a.storage) v *= 8.0f;  // reach the ReLU6 ceiling
    auto y = test::Buffer::make(s, &r, r.coin(), &r), yr = test::Buffer::make(s, nullptr);
    REQUIRE(kernels::activation<Arch>(a.view, y.view, act).is_ok());
    ref::activation(a.view, yr.view, act);
    CHECK(test::to_dense(y.view) == test::to_dense(yr.view));
    REQUIRE(kernels::add<Arch>(a.view, b.view, y.view, act).is_ok());
    ref::add(a.view, b.view, yr.view, act);
    CHECK(test::close(test::to_dense(y.view), test::to_dense(yr.view), {}, 1e-6, 1e-6));
    // In place: y = a + y.
    auto acc = test::Buffer::make(s, &r);
    const auto before = test::to_dense(acc.view);
    REQUIRE(kernels::add<Arch>(a.view, acc.view, acc.view).is_ok());
    const auto ad = test::to_dense(a.view), after = test::to_dense(acc.view);
    for (std::size_t i = 0; i < after.size(); ++i) CHECK(after[i] == doctest::Approx(ad[i] + before[i]));

    const Shape sb{s.n, s.h, s.w, r.uniform_int(1, 20)};
    auto c = test::Buffer::make(sb, &r);
    const Shape sc{s.n, s.h, s.w, s.c + sb.c};
    auto cat = test::Buffer::make(sc, nullptr), catr = test::Buffer::make(sc, nullptr);
    REQUIRE(kernels::concat_channels(a.view, c.view, cat.view).is_ok());
    ref::concat_channels(a.view, c.view, catr.view);
    CHECK(cat.storage == catr.storage);
    CHECK(kernels::concat_channels(a.view, c.view, a.view).code() == Error::shape_mismatch);
  }
}

TEST_CASE_TEMPLATE("pooling matches the reference", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(4);
  for (int it = 0; it < test::scaled(150); ++it) {
    kernels::Pool2dParams p;
    p.kernel_h = r.uniform_int(1, 4);
    p.kernel_w = r.uniform_int(1, 4);
    p.stride_h = r.uniform_int(1, 3);
    p.stride_w = r.uniform_int(1, 3);
    p.pad_top = r.uniform_int(0, p.kernel_h - 1);
    p.pad_bottom = r.uniform_int(0, p.kernel_h - 1);
    p.pad_left = r.uniform_int(0, p.kernel_w - 1);
    p.pad_right = r.uniform_int(0, p.kernel_w - 1);
    p.count_include_pad = r.coin();
    const Shape s{r.uniform_int(1, 2), r.uniform_int(1, 11), r.uniform_int(1, 11), r.uniform_int(1, 37)};
    if (!p.validate(s).is_ok()) continue;
    const Shape os = p.output_shape(s);
    auto x = test::Buffer::make(s, &r, r.coin(), &r);
    auto y = test::Buffer::make(os, &r, r.coin(), &r), yr = test::Buffer::make(os, nullptr);
    REQUIRE(kernels::max_pool2d<Arch>(p, x.view, y.view).is_ok());
    ref::max_pool2d(p, x.view, yr.view);
    CHECK(test::to_dense(y.view) == test::to_dense(yr.view));
    REQUIRE(kernels::avg_pool2d<Arch>(p, x.view, y.view).is_ok());
    ref::avg_pool2d(p, x.view, yr.view);
    CHECK(test::close(test::to_dense(y.view), test::to_dense(yr.view), {}, 1e-5, 1e-6));
    std::vector<float> g(std::size_t(s.n) * s.c), gr(std::size_t(s.n) * s.c);
    REQUIRE(kernels::global_avg_pool<Arch>(x.view, g.data(), s.c).is_ok());
    ref::global_avg_pool(x.view, gr.data());
    CHECK(test::close(g, gr, {}, 1e-5, 1e-6));
  }
}

TEST_CASE_TEMPLATE("softmax, log-softmax and entropy are stable and match the reference", Arch, EDGENN_TEST_ARCHS) {
  test::Rng r(5);
  for (int it = 0; it < test::scaled(50); ++it) {
    // Rows up to 40 classes, and every fourth case up to 1100 (ImageNet-size heads).
    const int rows = r.uniform_int(1, 5), n = r.uniform_int(1, it % 4 == 3 ? 1100 : 40);
    auto x = r.vec(std::size_t(rows) * n, -20.0f, 20.0f);
    if (it % 5 == 0) x[0] = 1e4f;  // would overflow a naive exp
    std::vector<float> p(x.size()), lp(x.size()), pr(x.size()), lpr(x.size());
    REQUIRE(kernels::softmax<Arch>(rows, n, x.data(), n, p.data(), n).is_ok());
    REQUIRE(kernels::log_softmax(rows, n, x.data(), n, lp.data(), n).is_ok());
    ref::softmax(rows, n, x.data(), pr.data());
    ref::softmax(rows, n, x.data(), lpr.data(), true);
    CHECK(test::close(p, pr, {}, 1e-5, 1e-7));
    CHECK(test::close(lp, lpr, {}, 1e-5, 1e-4));
    for (int i = 0; i < rows; ++i) {
      const float* pi = p.data() + i * n;
      CHECK(kernels::entropy(pi, n) == doctest::Approx(ref::entropy(pi, n)).epsilon(1e-5));
      const float hn = kernels::normalized_entropy(pi, n);
      CHECK(hn >= 0.0f);
      CHECK(hn <= 1.0f + 1e-6f);
    }
  }
  const float uniform[4] = {0.25f, 0.25f, 0.25f, 0.25f}, onehot[4] = {0, 1, 0, 0};
  CHECK(kernels::entropy(uniform, 4) == doctest::Approx(std::log(4.0)));
  CHECK(kernels::normalized_entropy(uniform, 4) == doctest::Approx(1.0));
  CHECK(kernels::entropy(onehot, 4) == 0.0f);
}

}  // namespace test_kernels
