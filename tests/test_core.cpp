// Core: shapes, tensor views, workspace planning, status values.
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_core {

using namespace edgenn;

TEST_CASE("window output sizes follow the convolution arithmetic") {
  CHECK(window_output_size(28, 3, 1, 1, 1, 1) == 28);
  CHECK(window_output_size(28, 3, 2, 1, 1, 1) == 14);
  CHECK(window_output_size(7, 3, 2, 1, 1, 1) == 4);
  CHECK(window_output_size(5, 3, 1, 2, 0, 0) == 1);   // dilated span 5
  CHECK(window_output_size(4, 3, 1, 2, 0, 0) == 0);   // does not fit
  CHECK(window_output_size(1, 1, 1, 1, 0, 0) == 1);
  CHECK(window_output_size(6, 2, 2, 1, 0, 1) == 3);   // asymmetric padding
}

TEST_CASE("tensor views address channel slices, regions and batch items") {
  std::vector<float> buf(2 * 4 * 5 * 6);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = float(i);
  const Tensor t = Tensor::dense(buf.data(), {2, 4, 5, 6});
  CHECK(t.is_dense());
  CHECK(t.at(1, 2, 3, 4) == float(((1 * 4 + 2) * 5 + 3) * 6 + 4));
  const Tensor c = t.channels(2, 3);
  CHECK(!c.is_dense());
  CHECK(c.at(1, 2, 3, 0) == t.at(1, 2, 3, 2));
  const Tensor r = t.region(1, 2, 2, 3);
  CHECK(r.shape == Shape{2, 2, 3, 6});
  CHECK(r.at(1, 1, 2, 5) == t.at(1, 2, 4, 5));
  const Tensor b = t.items(1, 1);
  CHECK(b.at(0, 0, 0, 0) == t.at(1, 0, 0, 0));
  CHECK(may_alias(t, c));
  CHECK(!may_alias(t.items(0, 1), t.items(1, 1)));
}

TEST_CASE("workspace hands out aligned slices and reports exhaustion") {
  alignas(64) unsigned char mem[1000];
  Workspace ws(mem + 3, 997);  // misaligned start is realigned
  float* a = ws.take<float>(10);
  REQUIRE(a != nullptr);
  CHECK(reinterpret_cast<std::uintptr_t>(a) % kAlignment == 0);
  float* b = ws.take<float>(10);
  CHECK(reinterpret_cast<std::uintptr_t>(b) % kAlignment == 0);
  CHECK(b - a >= 10);
  {
    WorkspaceScope scope(ws);
    CHECK(ws.take<float>(100) != nullptr);
    CHECK(ws.used() > 128);
  }
  CHECK(ws.used() == 128);
  CHECK(ws.take<float>(1000) == nullptr);
  CHECK(ws.exhausted());
  CHECK(ws.status().code() == Error::workspace_too_small);

  Workspace m = Workspace::measure();
  CHECK(m.take<double>(3) == nullptr);
  CHECK(m.take<float>(17) == nullptr);
  CHECK(m.peak() == aligned_bytes<double>(3) + aligned_bytes<float>(17));
  CHECK(!m.exhausted());
}

TEST_CASE("status values carry a code and a message") {
  const Status ok;
  CHECK(ok.is_ok());
  CHECK(std::string(ok.message()) == "ok");
  const Status bad(Error::shape_mismatch, "conv2d: channels differ");
  CHECK(!bad);
  CHECK(bad.code() == Error::shape_mismatch);
  CHECK(std::string(bad.message()) == "conv2d: channels differ");
  auto f = []() -> Status {
    EDGENN_CHECK(1 + 1 == 3, Error::invalid_argument, "arithmetic");
    return Status::ok();
  };
  CHECK(f().code() == Error::invalid_argument);
}

}  // namespace test_core
