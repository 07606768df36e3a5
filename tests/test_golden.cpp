// Kernels against PyTorch golden vectors (tests/golden/*.safetensors, made by
// tools/gen_golden.py with torch.nn.functional), for every backend.
#include <filesystem>

#include <nlohmann/json.hpp>

#include "edgenn/io/safetensors.hpp"
#include "support/golden_support.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_golden {

using namespace edgenn;

namespace {

template <class Arch>
void run_golden(const std::string& path) {
  auto loaded = io::SafeTensors::load(path);
  REQUIRE_MESSAGE(loaded.ok(), loaded.error());
  const io::SafeTensors& st = *loaded;
  const std::string op = st.metadata().at("op");
  const auto params = nlohmann::json::parse(st.metadata().at("params"));
  INFO("golden case ", path, " op ", op, " arch ", Arch::name());
  const auto expected = op == "softmax" ? test::read_f32(st, "softmax") : test::read_f32(st, "y");
  std::vector<float> got(expected.size());

  if (op == "conv2d") {
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
    p.activation = test::parse_act(params["activation"]);
    const Shape in = test::shape4(*st.find("x")), out = test::shape4(*st.find("y"));
    auto x = test::read_f32(st, "x"), w = test::read_f32(st, "weight");
    const auto bias = st.contains("bias") ? test::read_f32(st, "bias") : std::vector<float>(std::size_t(out.c), 0.0f);
    std::vector<float> res = st.contains("residual") ? test::read_f32(st, "residual") : std::vector<float>();
    const ConstTensor rv = ConstTensor::dense(res.data(), out);
    std::vector<unsigned char> wsmem(kernels::conv2d_workspace_bytes(p, in) + kAlignment);
    Workspace ws(wsmem.data(), wsmem.size());
    if (p.groups == in.c && out.c == in.c) {
      std::vector<float> packed(std::size_t(kernels::depthwise_packed_floats<Arch>(p, in.c)));
      const auto dw = kernels::pack_depthwise_weights<Arch>(p, in.c, w.data(), bias.data(), packed.data());
      REQUIRE(kernels::depthwise_conv2d<Arch>(p, ConstTensor::dense(x.data(), in), dw, Tensor::dense(got.data(), out), ws,
                                              res.empty() ? nullptr : &rv)
                  .is_ok());
    } else {
      std::vector<float> packed(std::size_t(kernels::conv_packed_floats<Arch>(p, in.c, out.c)));
      const auto pw = kernels::pack_conv_weights<Arch>(p, in.c, out.c, w.data(), bias.data(), packed.data());
      REQUIRE(kernels::conv2d<Arch>(p, ConstTensor::dense(x.data(), in), pw, Tensor::dense(got.data(), out), ws,
                                    res.empty() ? nullptr : &rv)
                  .is_ok());
    }
  } else if (op == "linear") {
    const auto& xi = *st.find("x");
    const int batch = int(xi.shape[0]), in_f = int(xi.shape[1]), out_f = int(st.find("weight")->shape[0]);
    auto x = test::read_f32(st, "x"), w = test::read_f32(st, "weight"), b = test::read_f32(st, "bias");
    std::vector<float> packed(std::size_t(kernels::fc_packed_floats<Arch>(in_f, out_f)));
    const auto pw = kernels::pack_fc_weights<Arch>(in_f, out_f, w.data(), b.data(), packed.data());
    REQUIRE(kernels::fully_connected<Arch>(batch, x.data(), in_f, pw, got.data(), out_f).is_ok());
  } else if (op == "batchnorm") {
    const Shape s = test::shape4(*st.find("x"));
    auto x = test::read_f32(st, "x"), g = test::read_f32(st, "gamma"), b = test::read_f32(st, "beta"), m = test::read_f32(st, "mean"), v = test::read_f32(st, "var");
    std::vector<float> scale(std::size_t(s.c)), shift(std::size_t(s.c));
    kernels::BatchNormParams bn{g.data(), b.data(), m.data(), v.data(), params["eps"].get<float>()};
    REQUIRE(kernels::batchnorm_scale_shift(bn, s.c, scale.data(), shift.data()).is_ok());
    REQUIRE(kernels::batchnorm_inference<Arch>(ConstTensor::dense(x.data(), s), scale.data(), shift.data(),
                                               Tensor::dense(got.data(), s))
                .is_ok());
  } else if (op == "add") {
    const Shape s = test::shape4(*st.find("a"));
    auto a = test::read_f32(st, "a"), b = test::read_f32(st, "b");
    REQUIRE(kernels::add<Arch>(ConstTensor::dense(a.data(), s), ConstTensor::dense(b.data(), s),
                               Tensor::dense(got.data(), s), test::parse_act(params["activation"]))
                .is_ok());
  } else if (op == "max_pool2d" || op == "avg_pool2d") {
    const Shape s = test::shape4(*st.find("x")), os = test::shape4(*st.find("y"));
    auto x = test::read_f32(st, "x");
    auto p = kernels::Pool2dParams::square(params["kernel"], params["stride"], params["pad"]);
    p.count_include_pad = params["count_include_pad"];
    const auto in = ConstTensor::dense(x.data(), s);
    const auto out = Tensor::dense(got.data(), os);
    REQUIRE((op == "max_pool2d" ? kernels::max_pool2d<Arch>(p, in, out) : kernels::avg_pool2d<Arch>(p, in, out)).is_ok());
  } else if (op == "global_avg_pool") {
    const Shape s = test::shape4(*st.find("x"));
    auto x = test::read_f32(st, "x");
    REQUIRE(kernels::global_avg_pool<Arch>(ConstTensor::dense(x.data(), s), got.data(), s.c).is_ok());
  } else if (op == "softmax") {
    const auto& xi = *st.find("x");
    const int rows = int(xi.shape[0]), n = int(xi.shape[1]);
    auto x = test::read_f32(st, "x");
    REQUIRE(kernels::softmax(rows, n, x.data(), n, got.data(), n).is_ok());
    std::vector<float> lsm(got.size());
    REQUIRE(kernels::log_softmax(rows, n, x.data(), n, lsm.data(), n).is_ok());
    CHECK(test::max_rel_err(lsm, test::read_f32(st, "log_softmax")) < 1e-5);
    const auto h = test::read_f32(st, "entropy");
    for (int r = 0; r < rows; ++r) CHECK(kernels::entropy(got.data() + r * n, n) == doctest::Approx(h[std::size_t(r)]).epsilon(1e-5));
  } else {
    FAIL("unknown golden op ", op);
  }
  CHECK(test::max_rel_err(got, expected) < 2e-5);
}

}  // namespace

TEST_CASE_TEMPLATE("kernels reproduce the PyTorch golden vectors", Arch, EDGENN_TEST_ARCHS) {
  const auto files = test::golden_files("golden");
  REQUIRE(files.size() >= 19);
  for (const auto& f : files) run_golden<Arch>(f);
}

}  // namespace test_golden
