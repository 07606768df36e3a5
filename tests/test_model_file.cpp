// Weights files: a saved model loads back with identical outputs, and every kind of
// corruption (truncation, bad header, wrong shapes/dtypes, missing or unexpected tensors,
// non-finite values, bad metadata, random byte flips) is a clear error, never a crash.
#include <filesystem>

#include "edgenn/io.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_model_file {

using namespace edgenn;
using nlohmann::json;

namespace {

std::string tmp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("edgenn_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

io::ModelInfo resnet_info(int depth, int width) {
  io::ModelInfo info;
  info.arch = "resnet_cifar";
  info.hparams = {{"depth", depth}, {"width", width}, {"in_ch", 1}, {"num_classes", 10}};
  info.input.mean = {0.286f};
  info.input.std = {0.353f};
  for (int i = 0; i < 10; ++i) info.classes.push_back("class" + std::to_string(i));
  info.provenance = {{"note", "unit test"}};
  return info;
}

template <class Model>
void randomize(Model& m, test::Rng& r) {
  m.visit_layers([&](auto& layer) {
    layer.visit_params([&](const nn::ParamRef& p) {
      const bool var = p.name.find("running_var") != std::string::npos;
      for (auto& v : *p.data) v = var ? r.uniform(0.5f, 1.5f) : r.uniform(-0.5f, 0.5f);
    });
  });
}

// A valid file: ResNet-8 of width 4 with random parameters. Returns its bytes.
std::vector<unsigned char> make_valid_file(const std::string& path) {
  test::Rng r(11);
  auto model = nn::build_resnet_cifar(nn::ResNetCifarConfig{8, 4, 1, 10});
  randomize(model, r);
  auto ok = io::save_model(path, resnet_info(8, 4), model);
  REQUIRE_MESSAGE(ok.ok(), ok.error());
  return *io::read_file(path);
}

struct Parsed {
  json header;
  std::vector<unsigned char> data;
};

Parsed split(const std::vector<unsigned char>& bytes) {
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[std::size_t(i)];
  Parsed p;
  p.header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + std::ptrdiff_t(n));
  p.data.assign(bytes.begin() + 8 + std::ptrdiff_t(n), bytes.end());
  return p;
}

std::vector<unsigned char> join(const json& header, const std::vector<unsigned char>& data) {
  const std::string h = header.dump();
  std::vector<unsigned char> out(8 + h.size());
  const std::uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[std::size_t(i)] = static_cast<unsigned char>(n >> (8 * i));
  std::memcpy(out.data() + 8, h.data(), h.size());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Load `bytes` as a model; returns the error message ("" when it loaded).
std::string load_error(const std::vector<unsigned char>& bytes) {
  const std::string path = tmp_path("corrupt.safetensors");
  REQUIRE(io::write_file_atomic(path, bytes.data(), bytes.size()).ok());
  auto m = io::load_model(path);
  std::filesystem::remove(path);
  return m.ok() ? std::string() : m.error();
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("a saved model loads back and computes the same logits") {
  const std::string path = tmp_path("roundtrip.safetensors");
  test::Rng r(3);
  auto model = nn::build_resnet_cifar(nn::ResNetCifarConfig{8, 4, 1, 10});
  randomize(model, r);
  REQUIRE(io::save_model(path, resnet_info(8, 4), model).ok());
  REQUIRE(model.prepare().is_ok());
  auto loaded = io::load_model(path);
  REQUIRE_MESSAGE(loaded.ok(), loaded.error());
  CHECK(loaded->info.arch == "resnet_cifar");
  CHECK(loaded->info.classes.size() == 10);
  CHECK(loaded->info.provenance["note"] == "unit test");
  const Shape is{3, 28, 28, 1};
  auto x = r.vec(std::size_t(is.size()));
  std::vector<float> a(30), b(30);
  std::vector<unsigned char> mem(model.workspace_bytes(is) + kAlignment);
  Workspace ws(mem.data(), mem.size());
  REQUIRE(model.forward(ConstTensor::dense(x.data(), is), a.data(), 10, ws).is_ok());
  REQUIRE(loaded->classifier->forward(ConstTensor::dense(x.data(), is), b.data(), 10, ws).is_ok());
  CHECK(a == b);
  std::filesystem::remove(path);
}

TEST_CASE("every truncation of a weights file is rejected with a message") {
  const std::string path = tmp_path("valid.safetensors");
  const auto bytes = make_valid_file(path);
  std::filesystem::remove(path);
  CHECK(load_error(bytes).empty());
  // All short prefixes, then a stride through the rest.
  for (std::size_t len = 0; len < bytes.size(); len += (len < 200 ? 1 : 97)) {
    const std::string err = load_error(std::vector<unsigned char>(bytes.begin(), bytes.begin() + std::ptrdiff_t(len)));
    INFO("truncated to ", len, " of ", bytes.size(), " bytes");
    CHECK(!err.empty());
    CHECK((contains(err, "truncated") || contains(err, "bytes") || contains(err, "header")));
  }
}

TEST_CASE("malformed headers and tensor tables are rejected, naming the problem") {
  const std::string path = tmp_path("valid2.safetensors");
  const auto bytes = make_valid_file(path);
  std::filesystem::remove(path);
  const Parsed p = split(bytes);

  std::vector<unsigned char> huge = bytes;
  huge[7] = 0x7f;  // header length ~ 2^63
  CHECK(contains(load_error(huge), "header length"));

  std::vector<unsigned char> garbage = bytes;
  for (int i = 8; i < 40; ++i) garbage[std::size_t(i)] = '#';
  CHECK(contains(load_error(garbage), "not valid JSON"));

  auto with = [&](auto edit) {
    json h = p.header;
    std::vector<unsigned char> d = p.data;
    edit(h, d);
    return load_error(join(h, d));
  };
  CHECK(contains(with([](json& h, auto&) { h["conv1.weight"]["dtype"] = "Q4"; }), "conv1.weight"));
  CHECK(contains(with([](json& h, auto&) { h["conv1.weight"]["dtype"] = "I32"; }), "dtype I32"));
  CHECK(contains(with([](json& h, auto&) { h["fc.bias"]["data_offsets"][1] = 1u << 30; }), "fc.bias"));
  CHECK(contains(with([](json& h, auto&) { h["fc.bias"]["shape"] = {11}; }), "fc.bias"));
  CHECK(contains(with([](json& h, auto&) { h["fc.bias"]["shape"] = {-1}; }), "non-negative"));
  CHECK(contains(with([](json& h, auto&) { h["fc.bias"]["shape"] = {1 << 20, 1 << 20, 1 << 20}; }), "overflow"));
  CHECK(contains(with([](json& h, auto&) {
                   auto o = h["fc.weight"]["data_offsets"];
                   h["fc.bias"]["data_offsets"] = {o[0], o[0].get<std::uint64_t>() + 40};
                 }),
                 "overlaps"));
  CHECK(contains(with([](json&, std::vector<unsigned char>& d) { d.insert(d.end(), 16, 0); }), "trailing bytes"));
  CHECK(contains(with([](json& h, auto&) { h["__metadata__"]["edgenn.format"] = "7"; }), "version '7'"));
  CHECK(contains(with([](json& h, auto&) { h["__metadata__"].erase("edgenn.format"); }), "not an edgenn weights file"));
  CHECK(contains(with([](json& h, auto&) { h["__metadata__"]["edgenn.model"] = "{not json"; }), "edgenn.model"));
  CHECK(contains(with([](json& h, auto&) {
                   auto m = json::parse(h["__metadata__"]["edgenn.model"].get<std::string>());
                   m["arch"] = "transformer";
                   h["__metadata__"]["edgenn.model"] = m.dump();
                 }),
                 "unknown architecture 'transformer'"));
  CHECK(contains(with([](json& h, auto&) {
                   auto m = json::parse(h["__metadata__"]["edgenn.model"].get<std::string>());
                   m["hparams"]["depth"] = 21;
                   h["__metadata__"]["edgenn.model"] = m.dump();
                 }),
                 "depth must be 6n+2"));
  CHECK(contains(with([](json& h, auto&) {
                   auto m = json::parse(h["__metadata__"]["edgenn.model"].get<std::string>());
                   m["hparams"].erase("width");
                   h["__metadata__"]["edgenn.model"] = m.dump();
                 }),
                 "missing key 'width'"));
  CHECK(contains(with([](json& h, auto&) {
                   auto m = json::parse(h["__metadata__"]["edgenn.model"].get<std::string>());
                   m["classes"].erase(0);
                   h["__metadata__"]["edgenn.model"] = m.dump();
                 }),
                 "class names"));
}

TEST_CASE("missing, unexpected, misshapen and non-finite tensors are named") {
  const std::string path = tmp_path("valid3.safetensors");
  make_valid_file(path);
  auto st = io::SafeTensors::load(path);
  REQUIRE(st.ok());
  std::filesystem::remove(path);

  // Rebuild the file from its tensors with one change.
  auto rebuild = [&](auto edit) {
    std::vector<io::TensorData> ts;
    for (const auto& t : st->tensors()) {
      io::TensorData d;
      d.name = t.name;
      d.dtype = t.dtype;
      d.shape = t.shape;
      d.bytes.assign(st->bytes(t), st->bytes(t) + (t.end - t.begin));
      ts.push_back(std::move(d));
    }
    edit(ts);
    return load_error(io::serialize_safetensors(ts, st->metadata()));
  };
  auto find = [](std::vector<io::TensorData>& ts, const std::string& n) -> io::TensorData& {
    for (auto& t : ts)
      if (t.name == n) return t;
    FAIL("no tensor ", n);
    return ts[0];
  };
  CHECK(rebuild([](auto&) {}).empty());
  CHECK(contains(rebuild([&](auto& ts) { ts.erase(ts.begin() + 3); }), "is missing"));
  CHECK(contains(rebuild([&](auto& ts) {
                   float z[2] = {0, 0};
                   ts.push_back(io::TensorData::from_f32("layer9.extra", {2}, z));
                 }),
                 "unexpected tensor 'layer9.extra'"));
  CHECK(contains(rebuild([&](auto& ts) {
                   auto& t = find(ts, "layer1.0.conv1.weight");
                   t.shape = {4, 3, 3, 2};
                   t.bytes.resize(4 * 3 * 3 * 2 * 4);
                 }),
                 "layer1.0.conv1.weight' has shape [4, 3, 3, 2], expected [4, 3, 3, 4]"));
  CHECK(contains(rebuild([&](auto& ts) {
                   auto& t = find(ts, "fc.weight");
                   const float nan = std::nanf("");
                   std::memcpy(t.bytes.data() + 8, &nan, 4);
                 }),
                 "fc.weight' has a non-finite value at index 2"));
  CHECK(contains(rebuild([&](auto& ts) {
                   auto& t = find(ts, "bn1.running_var");
                   const float neg = -1.0f;
                   std::memcpy(t.bytes.data(), &neg, 4);
                 }),
                 "negative variance"));
  CHECK(contains(rebuild([&](auto& ts) {
                   for (std::size_t i = 0; i < ts.size(); ++i)
                     if (ts[i].name == "bn1.running_mean") ts.erase(ts.begin() + std::ptrdiff_t(i));
                 }),
                 "bn1.running_mean' is missing"));
}

TEST_CASE("random byte flips never crash the loader") {
  const std::string path = tmp_path("valid4.safetensors");
  const auto bytes = make_valid_file(path);
  std::filesystem::remove(path);
  test::Rng r(99);
  int rejected = 0;
  const int trials = test::scaled(300);
  for (int i = 0; i < trials; ++i) {
    auto b = bytes;
    const int flips = r.uniform_int(1, 8);
    for (int f = 0; f < flips; ++f) {
      // Half the flips hit the header, where they matter most.
      const std::size_t limit = r.coin() ? std::min<std::size_t>(b.size(), 4096) : b.size();
      b[std::size_t(r.uniform_int(0, int(limit) - 1))] ^= static_cast<unsigned char>(1 << r.uniform_int(0, 7));
    }
    rejected += !load_error(b).empty();
  }
  // Flips inside weight values can leave a valid file; most must be caught.
  CHECK(rejected > trials / 4);
}

}  // namespace test_model_file
