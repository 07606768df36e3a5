// Backward kernels against PyTorch autograd golden vectors (tests/golden/backward/*.safetensors,
// made by tools/gen_golden_backward.py), for every backend.
#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "edgenn/io/safetensors.hpp"
#include "support/golden_support.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_golden_backward {

using namespace edgenn;

namespace {

// float32 sums of up to a few hundred O(1) products, on both sides: a few 1e-6.
constexpr double kTolerance = 2e-5;

void expect(const io::SafeTensors& st, const std::string& name, const std::vector<float>& got) {
  const double err = test::max_rel_err(got, test::read_f32(st, name));
  CHECK_MESSAGE(err < kTolerance, name, ": max relative error ", err);
}

template <class Arch>
void run_conv(const io::SafeTensors& st, const nlohmann::json& params) {
  kernels::Conv2dParams p;
  p.kernel_h = params["kernel_h"];
  p.kernel_w = params["kernel_w"];
  p.stride_h = params["stride_h"];
  p.stride_w = params["stride_w"];
  p.dilation_h = params["dilation_h"];
  p.dilation_w = params["dilation_w"];
  p.pad_top = params["pad_top"];
  p.pad_left = params["pad_left"];
  p.pad_bottom = params["pad_bottom"];
  p.pad_right = params["pad_right"];
  p.groups = params["groups"];
  const Shape in = test::shape4(*st.find("x")), out = test::shape4(*st.find("dy"));
  auto x = test::read_f32(st, "x"), w = test::read_f32(st, "weight"), dy = test::read_f32(st, "dy");
  const bool has_bias = st.contains("dbias");
  std::vector<float> dx(x.size()), dw(w.size()), db(std::size_t(out.c));
  const auto xv = ConstTensor::dense(x.data(), in);
  const auto dyv = ConstTensor::dense(dy.data(), out);
  const auto dxv = Tensor::dense(dx.data(), in);
  if (p.groups == in.c && out.c == in.c) {
    std::vector<float> packed(std::size_t(kernels::depthwise_packed_floats<Arch>(p, in.c)));
    const auto pw = kernels::pack_depthwise_weights<Arch>(p, in.c, w.data(), nullptr, packed.data());
    Workspace none;
    REQUIRE(kernels::depthwise_backward_input<Arch>(p, dyv, pw, dxv, none).is_ok());
    test::OwnedWorkspace ws(kernels::depthwise_backward_weights_workspace_bytes<Arch>(p, in.c));
    REQUIRE(kernels::depthwise_backward_weights<Arch>(p, xv, dyv, dw.data(), has_bias ? db.data() : nullptr, ws.ws).is_ok());
  } else {
    std::vector<float> packed(std::size_t(kernels::conv_input_grad_packed_floats<Arch>(p, in.c, out.c)));
    const auto pw = kernels::pack_conv_input_grad_weights<Arch>(p, in.c, out.c, w.data(), packed.data());
    test::OwnedWorkspace wsi(kernels::conv2d_backward_input_workspace_bytes(p, out.c));
    REQUIRE(kernels::conv2d_backward_input<Arch>(p, dyv, pw, dxv, wsi.ws).is_ok());
    test::OwnedWorkspace wsw(kernels::conv2d_backward_weights_workspace_bytes<Arch>(p, in.c, out.c));
    REQUIRE(kernels::conv2d_backward_weights<Arch>(p, xv, dyv, dw.data(), has_bias ? db.data() : nullptr, wsw.ws).is_ok());
  }
  expect(st, "dx", dx);
  expect(st, "dweight", dw);
  if (has_bias) expect(st, "dbias", db);
}

template <class Arch>
void run_linear(const io::SafeTensors& st) {
  const auto& xi = *st.find("x");
  const int batch = int(xi.shape[0]), in_f = int(xi.shape[1]), out_f = int(st.find("weight")->shape[0]);
  auto x = test::read_f32(st, "x"), w = test::read_f32(st, "weight"), dy = test::read_f32(st, "dy");
  std::vector<float> dx(x.size()), dw(w.size()), db(static_cast<std::size_t>(out_f));
  std::vector<float> packed(std::size_t(kernels::fc_input_grad_packed_floats<Arch>(in_f, out_f)));
  const auto pw = kernels::pack_fc_input_grad_weights<Arch>(in_f, out_f, w.data(), packed.data());
  test::OwnedWorkspace wsi(kernels::fc_backward_input_workspace_bytes(out_f));
  REQUIRE(kernels::fully_connected_backward_input<Arch>(batch, dy.data(), out_f, pw, dx.data(), in_f, wsi.ws).is_ok());
  test::OwnedWorkspace wsw(kernels::fc_backward_weights_workspace_bytes<Arch>(in_f, out_f));
  REQUIRE(kernels::fully_connected_backward_weights<Arch>(batch, in_f, out_f, x.data(), in_f, dy.data(), out_f, dw.data(),
                                                          db.data(), wsw.ws)
              .is_ok());
  expect(st, "dx", dx);
  expect(st, "dweight", dw);
  expect(st, "dbias", db);
}

template <class Arch>
void run_batchnorm(const io::SafeTensors& st, const nlohmann::json& params) {
  const Shape s = test::shape4(*st.find("x"));
  const Activation act = test::parse_act(params["activation"]);
  auto x = test::read_f32(st, "x"), gamma = test::read_f32(st, "gamma"), beta = test::read_f32(st, "beta"), dy = test::read_f32(st, "dy");
  auto rm = test::read_f32(st, "running_mean"), rv = test::read_f32(st, "running_var");
  kernels::BatchNormTrainParams bn;
  bn.gamma = gamma.data();
  bn.beta = beta.data();
  bn.eps = params["eps"].get<float>();
  bn.momentum = params["momentum"].get<float>();
  std::vector<float> y(x.size()), mean(std::size_t(s.c)), invstd(std::size_t(s.c));
  test::OwnedWorkspace ws(kernels::batchnorm_train_workspace_bytes(s.c));
  REQUIRE(kernels::batchnorm_train_forward<Arch>(ConstTensor::dense(x.data(), s), bn, Tensor::dense(y.data(), s), mean.data(),
                                                 invstd.data(), rm.data(), rv.data(), ws.ws, act)
              .is_ok());
  expect(st, "y", y);
  expect(st, "mean", mean);
  expect(st, "invstd", invstd);
  expect(st, "running_mean_after", rm);
  expect(st, "running_var_after", rv);
  // The fused activation's backward first (in place on dy), then batch norm's.
  const auto dyv = Tensor::dense(dy.data(), s);
  REQUIRE(kernels::activation_backward<Arch>(ConstTensor::dense(y.data(), s), dyv, dyv, act).is_ok());
  std::vector<float> dx(x.size()), dgamma(std::size_t(s.c)), dbeta(std::size_t(s.c));
  REQUIRE(kernels::batchnorm_train_backward<Arch>(ConstTensor::dense(x.data(), s), dyv, gamma.data(), mean.data(),
                                                  invstd.data(), Tensor::dense(dx.data(), s), dgamma.data(), dbeta.data(),
                                                  ws.ws)
              .is_ok());
  expect(st, "dx", dx);
  expect(st, "dgamma", dgamma);
  expect(st, "dbeta", dbeta);
}

template <class Arch>
void run_golden(const std::string& path) {
  auto loaded = io::SafeTensors::load(path);
  REQUIRE_MESSAGE(loaded.ok(), loaded.error());
  const io::SafeTensors& st = *loaded;
  const std::string op = st.metadata().at("op");
  const auto params = nlohmann::json::parse(st.metadata().at("params"));
  INFO("golden case ", path, " op ", op, " arch ", Arch::name());

  if (op == "conv2d") {
    run_conv<Arch>(st, params);
  } else if (op == "linear") {
    run_linear<Arch>(st);
  } else if (op == "batchnorm_train") {
    run_batchnorm<Arch>(st, params);
  } else if (op == "activation") {
    const Shape s = test::shape4(*st.find("x"));
    auto y = test::read_f32(st, "y"), dy = test::read_f32(st, "dy");
    std::vector<float> dx(y.size());
    REQUIRE(kernels::activation_backward<Arch>(ConstTensor::dense(y.data(), s), ConstTensor::dense(dy.data(), s),
                                               Tensor::dense(dx.data(), s), test::parse_act(params["activation"]))
                .is_ok());
    expect(st, "dx", dx);
  } else if (op == "add") {
    const Shape s = test::shape4(*st.find("a"));
    auto y = test::read_f32(st, "y"), dy = test::read_f32(st, "dy");
    std::vector<float> da(y.size()), db(y.size());
    REQUIRE(kernels::add_backward<Arch>(ConstTensor::dense(y.data(), s), ConstTensor::dense(dy.data(), s),
                                        test::parse_act(params["activation"]), Tensor::dense(da.data(), s),
                                        Tensor::dense(db.data(), s))
                .is_ok());
    expect(st, "da", da);
    expect(st, "db", db);
  } else if (op == "max_pool2d" || op == "avg_pool2d") {
    const Shape s = test::shape4(*st.find("x")), os = test::shape4(*st.find("dy"));
    auto x = test::read_f32(st, "x"), dy = test::read_f32(st, "dy");
    auto p = kernels::Pool2dParams::square(params["kernel"], params["stride"], params["pad"]);
    p.count_include_pad = params["count_include_pad"];
    std::vector<float> dx(x.size());
    test::OwnedWorkspace ws(kernels::max_pool2d_backward_workspace_bytes(s.c));
    if (op == "max_pool2d") {
      REQUIRE(kernels::max_pool2d_backward<Arch>(p, ConstTensor::dense(x.data(), s), ConstTensor::dense(dy.data(), os),
                                                 Tensor::dense(dx.data(), s), ws.ws)
                  .is_ok());
    } else {
      REQUIRE(kernels::avg_pool2d_backward<Arch>(p, ConstTensor::dense(dy.data(), os), Tensor::dense(dx.data(), s)).is_ok());
    }
    expect(st, "dx", dx);
  } else if (op == "global_avg_pool") {
    const Shape s = test::shape4(*st.find("x"));
    auto dy = test::read_f32(st, "dy");
    std::vector<float> dx(std::size_t(s.size()));
    REQUIRE(kernels::global_avg_pool_backward<Arch>(dy.data(), s.c, Tensor::dense(dx.data(), s)).is_ok());
    expect(st, "dx", dx);
  } else if (op == "cross_entropy") {
    const auto& zi = *st.find("logits");
    const int batch = int(zi.shape[0]), classes = int(zi.shape[1]);
    auto z = test::read_f32(st, "logits");
    auto labels64 = st.ints("labels");
    REQUIRE_MESSAGE(labels64.ok(), labels64.error());
    std::vector<int> labels(labels64->begin(), labels64->end());
    float loss = 0;
    std::vector<float> dz(z.size());
    REQUIRE(kernels::softmax_cross_entropy(batch, classes, z.data(), classes, labels.data(),
                                           params["label_smoothing"].get<float>(), &loss, dz.data(), classes)
                .is_ok());
    expect(st, "loss", {loss});
    expect(st, "dlogits", dz);
  } else {
    FAIL("unknown golden op ", op);
  }
}

}  // namespace

TEST_CASE_TEMPLATE("backward kernels reproduce the PyTorch autograd golden vectors", Arch, EDGENN_TEST_ARCHS) {
  const auto files = test::golden_files("golden/backward");
  REQUIRE(files.size() >= 23);
  for (const auto& f : files) run_golden<Arch>(f);
}

}  // namespace test_golden_backward
