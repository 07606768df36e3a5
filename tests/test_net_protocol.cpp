// The edge–cloud message format without sockets (docs/protocol.md): header round trips,
// the documented example bytes, every rejection of the decoder and of the request and
// reply validators, CURVE key files, and the dynamic batching policy.
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "edgenn/net/batcher.hpp"
#include "edgenn/net/curve_keys.hpp"
#include "edgenn/net/protocol.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_net_protocol {

using namespace edgenn;
using namespace edgenn::net;

namespace {

std::vector<unsigned char> bytes_of(const HeaderBytes& h) { return std::vector<unsigned char>(h.begin(), h.end()); }

std::vector<unsigned char> hex(const std::string& text) {
  std::vector<unsigned char> out;
  std::istringstream in(text);
  std::string tok;
  while (in >> tok) out.push_back(static_cast<unsigned char>(std::stoi(tok, nullptr, 16)));
  return out;
}

Decoded decode(const std::vector<unsigned char>& b) { return decode_header(b.data(), b.size()); }

RequestLimits limits() {
  RequestLimits l;
  l.height = 28;
  l.width = 28;
  l.channels = 1;
  l.max_images = 16;
  l.max_request_bytes = 10 * 784;
  return l;
}

std::string tmp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("edgenn_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

}  // namespace

TEST_CASE("protocol: every message type survives encode/decode with random fields") {
  test::Rng rng(3);
  const MessageType types[] = {MessageType::classify_request, MessageType::classify_reply, MessageType::error_reply,
                               MessageType::stats_request, MessageType::stats_reply};
  for (int i = 0; i < test::scaled(500); ++i) {
    Header h;
    h.type = types[rng.uniform_int(0, 4)];
    h.flags = rng.coin() ? flags::retry : 0;
    h.error = ErrorCode(rng.uniform_int(0, kNumErrorCodes - 1));
    h.dtype = DType(rng.uniform_int(0, 3));
    h.request_id = rng.engine()();
    for (auto& d : h.dims) d = std::uint32_t(rng.engine()());
    h.payload_bytes = rng.engine()();
    const HeaderBytes b = encode_header(h);
    const Decoded d = decode_header(b.data(), b.size());
    REQUIRE(d.ok());
    CHECK(d.id_known);
    CHECK(d.header.version == kProtocolVersion);
    CHECK(d.header.type == h.type);
    CHECK(d.header.flags == h.flags);
    CHECK(d.header.error == h.error);
    CHECK(d.header.dtype == h.dtype);
    CHECK(d.header.request_id == h.request_id);
    CHECK(d.header.dims == h.dims);
    CHECK(d.header.payload_bytes == h.payload_bytes);
  }
}

TEST_CASE("protocol: the documented example bytes (docs/protocol.md section 9)") {
  const auto request = hex(
      "45 4e 4e 31  01 00  01 00  00 00  00 00  01  00 00 00"
      " 01 00 00 00 00 00 00 00"
      " 01 00 00 00  1c 00 00 00  1c 00 00 00  01 00 00 00"
      " 10 03 00 00 00 00 00 00");
  const auto reply = hex(
      "45 4e 4e 31  01 00  02 00  00 00  00 00  02  00 00 00"
      " 01 00 00 00 00 00 00 00"
      " 01 00 00 00  0a 00 00 00  01 00 00 00  01 00 00 00"
      " 28 00 00 00 00 00 00 00");
  CHECK(bytes_of(encode_header(classify_request_header(1, DType::uint8, 1, 28, 28, 1))) == request);
  CHECK(bytes_of(encode_header(classify_reply_header(1, 1, 10))) == reply);
  CHECK(request.size() == kHeaderBytes);
  // Field offsets as documented.
  Header h = classify_request_header(0x0102030405060708ull, DType::float32, 2, 3, 4, 5, flags::retry);
  const HeaderBytes b = encode_header(h);
  CHECK(b[offsets::request_id] == 0x08);
  CHECK(b[offsets::request_id + 7] == 0x01);
  CHECK(b[offsets::dtype] == 2);
  CHECK(b[offsets::flags] == 1);
  CHECK(b[offsets::dims + 12] == 5);
  CHECK(b[offsets::payload_bytes] == (480 & 0xff));  // 2 * 3 * 4 * 5 float32 = 480 bytes
  CHECK(b[offsets::payload_bytes + 1] == (480 >> 8));
}

TEST_CASE("protocol: the decoder rejects malformed headers with the documented codes") {
  const HeaderBytes good = encode_header(classify_request_header(42, DType::uint8, 1, 28, 28, 1));
  auto with = [&](std::size_t at, unsigned char v) {
    auto b = bytes_of(good);
    b[at] = v;
    return b;
  };
  SUBCASE("wrong sizes") {
    for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(47), std::size_t(49), std::size_t(4096)}) {
      std::vector<unsigned char> b(n, 0);
      std::copy(good.begin(), good.begin() + std::ptrdiff_t(std::min(n, good.size())), b.begin());
      const Decoded d = decode(b);
      CHECK(d.check.error == ErrorCode::bad_header);
      CHECK_FALSE(d.id_known);
    }
  }
  SUBCASE("bad magic") {
    const Decoded d = decode(with(0, 'X'));
    CHECK(d.check.error == ErrorCode::bad_header);
    CHECK_FALSE(d.id_known);
    CHECK(decode(with(3, '2')).check.error == ErrorCode::bad_header);
  }
  SUBCASE("unsupported version: no id, the text names ours") {
    for (unsigned char v : {0, 2, 255}) {
      const Decoded d = decode(with(offsets::version, v));
      CHECK(d.check.error == ErrorCode::unsupported_version);
      CHECK_FALSE(d.id_known);
      CHECK(d.check.detail.find("version 1") != std::string::npos);
    }
  }
  SUBCASE("unknown type, id echoed") {
    for (unsigned char t : {0, 6, 200}) {
      const Decoded d = decode(with(offsets::type, t));
      CHECK(d.check.error == ErrorCode::unknown_type);
      CHECK(d.id_known);
      CHECK(d.header.request_id == 42);
    }
  }
  SUBCASE("reserved bytes and unknown flags") {
    for (std::size_t at : {offsets::reserved, offsets::reserved + 1, offsets::reserved + 2})
      CHECK(decode(with(at, 1)).check.error == ErrorCode::bad_header);
    CHECK(decode(with(offsets::flags, 2)).check.error == ErrorCode::bad_header);
    CHECK(decode(with(offsets::flags + 1, 0x80)).check.error == ErrorCode::bad_header);
    CHECK(decode(with(offsets::flags, flags::retry)).ok());
  }
  SUBCASE("unknown dtype") {
    CHECK(decode(with(offsets::dtype, 4)).check.error == ErrorCode::bad_dtype);
    CHECK(decode(with(offsets::dtype, 255)).check.error == ErrorCode::bad_dtype);
  }
  SUBCASE("random garbage never crashes and is never accepted without the magic") {
    test::Rng rng(9);
    for (int i = 0; i < test::scaled(2000); ++i) {
      std::vector<unsigned char> b(std::size_t(rng.uniform_int(0, 96)));
      for (auto& x : b) x = static_cast<unsigned char>(rng.uniform_int(0, 255));
      const Decoded d = decode(b);
      if (b.size() != kHeaderBytes || !std::equal(kMagic.begin(), kMagic.end(), b.begin())) CHECK_FALSE(d.ok());
    }
  }
}

TEST_CASE("protocol: request validation against the model input and the limits") {
  const RequestLimits lim = limits();
  auto req = [](DType dt, std::uint32_t n, std::uint32_t h = 28, std::uint32_t w = 28, std::uint32_t c = 1) {
    return classify_request_header(7, dt, n, h, w, c);
  };
  auto check = [&](const Header& h, std::size_t payload) { return validate_request(h, payload, lim).error; };

  CHECK(check(req(DType::uint8, 1), 784) == ErrorCode::none);
  CHECK(check(req(DType::uint8, 10), 7840) == ErrorCode::none);
  CHECK(check(req(DType::float32, 2), 2 * 784 * 4) == ErrorCode::none);
  CHECK(check(req(DType::float32, 3), 3 * 784 * 4) == ErrorCode::too_large);  // 9408 > 7840 bytes

  CHECK(check(stats_request_header(1), 0) == ErrorCode::none);
  Header s = stats_request_header(1);
  CHECK(check(s, 3) == ErrorCode::bad_size);
  s.dims[0] = 1;
  CHECK(check(s, 0) == ErrorCode::bad_size);
  s = stats_request_header(1);
  s.dtype = DType::uint8;
  CHECK(check(s, 0) == ErrorCode::bad_dtype);

  CHECK(check(classify_reply_header(1, 1, 10), 40) == ErrorCode::unknown_type);
  CHECK(check(error_reply_header(1, ErrorCode::internal, 0), 0) == ErrorCode::unknown_type);
  Header e = req(DType::uint8, 1);
  e.error = ErrorCode::internal;
  CHECK(check(e, 784) == ErrorCode::bad_header);

  CHECK(check(req(DType::none, 1), 0) == ErrorCode::bad_dtype);
  CHECK(check(req(DType::utf8, 1), 784) == ErrorCode::bad_dtype);
  CHECK(check(req(DType::uint8, 11), 11 * 784) == ErrorCode::too_large);
  CHECK(check(req(DType::uint8, 1), 783) == ErrorCode::bad_size);  // header says 784
  CHECK(check(req(DType::uint8, 0), 0) == ErrorCode::bad_count);
  Header big = req(DType::uint8, 17);
  big.payload_bytes = 784;
  CHECK(check(big, 784) == ErrorCode::bad_count);
  Header shape = req(DType::uint8, 1, 32, 32, 1);
  shape.payload_bytes = 784;
  CHECK(check(shape, 784) == ErrorCode::bad_shape);
  CHECK(check(req(DType::uint8, 1, 28, 28, 3), 784 * 3) == ErrorCode::bad_shape);
  // Dims and dtype disagree with a payload whose header size is consistent with the frame.
  Header f32 = req(DType::float32, 1);
  f32.payload_bytes = 784;
  CHECK(check(f32, 784) == ErrorCode::bad_size);
  // Dims whose product overflows 64 bits saturate instead of wrapping to a valid size.
  Header huge = req(DType::uint8, 1, 28, 28, 1);
  huge.dims = {16, 0xffffffffu, 0xffffffffu, 0xffffffffu};
  CHECK(huge.elements() == UINT64_MAX);
  CHECK(huge.tensor_bytes() == UINT64_MAX);
  huge.payload_bytes = 784;
  CHECK(check(huge, 784) == ErrorCode::bad_shape);
  Header zero = req(DType::uint8, 1, 0, 28, 1);
  CHECK(zero.elements() == 0);
}

TEST_CASE("protocol: reply validation on the client side") {
  CHECK(validate_classify_reply(classify_reply_header(1, 3, 10), 120, 3).ok());
  CHECK(validate_classify_reply(classify_reply_header(1, 3, 10), 120, 3, 10).ok());
  CHECK(validate_classify_reply(classify_reply_header(1, 3, 10), 120, 3, 7).error == ErrorCode::bad_shape);
  CHECK(validate_classify_reply(classify_reply_header(1, 2, 10), 80, 3).error == ErrorCode::bad_shape);
  CHECK(validate_classify_reply(classify_reply_header(1, 3, 10), 119, 3).error == ErrorCode::bad_size);
  Header h = classify_reply_header(1, 3, 10);
  h.dtype = DType::uint8;
  CHECK(validate_classify_reply(h, 120, 3).error == ErrorCode::bad_dtype);
  CHECK(validate_classify_reply(stats_reply_header(1, 2), 2, 3).error == ErrorCode::unknown_type);

  CHECK(validate_text_reply(error_reply_header(1, ErrorCode::bad_shape, 5), 5).ok());
  CHECK(validate_text_reply(error_reply_header(1, ErrorCode::none, 5), 5).error == ErrorCode::bad_header);
  CHECK(validate_text_reply(stats_reply_header(1, 9), 8).error == ErrorCode::bad_size);
  CHECK(validate_text_reply(classify_reply_header(1, 1, 1), 4).error == ErrorCode::unknown_type);
}

TEST_CASE("protocol: names, limits and helpers") {
  std::set<std::string> names;
  for (int c = 0; c < kNumErrorCodes; ++c) names.insert(error_code_name(ErrorCode(c)));
  CHECK(names.size() == std::size_t(kNumErrorCodes));
  CHECK(std::string(error_code_name(ErrorCode::too_large)) == "too_large");
  CHECK(std::string(message_type_name(MessageType::stats_reply)) == "stats_reply");
  // Error messages are cut to the limit on a UTF-8 character boundary.
  std::string s(kMaxErrorMessageBytes - 1, 'a');
  s += "\xc3\xa9\xc3\xa9";  // two 2-byte characters straddling the limit
  const std::string clipped = clip_error_message(s);
  CHECK(clipped.size() == kMaxErrorMessageBytes - 1);
  CHECK(clip_error_message("short") == "short");
}

TEST_CASE("curve keys: generate, derive, write and read key files") {
  if (!curve_available()) {
    MESSAGE("libzmq without CURVE: skipped");
    return;
  }
  auto kp = generate_curve_keypair();
  REQUIRE(kp.ok());
  CHECK(is_z85_key(kp->public_key));
  CHECK(is_z85_key(kp->secret_key));
  CHECK(*curve_public_from_secret(kp->secret_key) == kp->public_key);
  CHECK_FALSE(is_z85_key("too short"));
  CHECK_FALSE(is_z85_key(std::string(40, ' ')));
  CHECK_FALSE(curve_public_from_secret("nope").ok());

  const std::string sec = tmp_path("k.key"), list = tmp_path("authorized.txt");
  REQUIRE(write_key_file(sec, kp->secret_key, "secret", true).ok());
  CHECK((std::filesystem::status(sec).permissions() & std::filesystem::perms::others_read) == std::filesystem::perms::none);
  CHECK(*read_key_file(sec) == kp->secret_key);

  auto other = generate_curve_keypair();
  {
    std::ofstream f(list);
    f << "# edge devices\n\n" << kp->public_key << "\n  " << other->public_key << "  \n";
  }
  auto keys = read_key_list(list);
  REQUIRE(keys.ok());
  CHECK(*keys == std::vector<std::string>{kp->public_key, other->public_key});
  CHECK_FALSE(read_key_file(list).ok());  // two keys where one is expected
  {
    std::ofstream f(list, std::ios::app);
    f << "not-a-key\n";
  }
  auto bad = read_key_list(list);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().find(":5:") != std::string::npos);  // names the line
  CHECK_FALSE(read_key_list(tmp_path("missing.txt")).ok());
  std::filesystem::remove(sec);
  std::filesystem::remove(list);
}

TEST_CASE("batcher: due on size, on the oldest request's wait, or when flushing") {
  using B = DynamicBatcher<int>;
  using namespace std::chrono_literals;
  const auto t0 = B::Clock::now();
  B b(8, 5ms);
  CHECK_FALSE(b.due(t0, true));  // empty: nothing to do
  b.push(1, 3, t0);
  b.push(2, 3, t0 + 1ms);
  CHECK(b.queued_images() == 6);
  CHECK_FALSE(b.due(t0 + 4ms, false));
  CHECK(b.due(t0 + 4ms, true));  // flushing (shutdown)
  CHECK(b.due(t0 + 5ms, false));  // the oldest waited max_wait
  CHECK(b.deadline() == t0 + 5ms);
  b.push(3, 2, t0 + 2ms);
  CHECK(b.due(t0 + 2ms, false));  // 8 images: full
  auto batch = b.take();
  REQUIRE(batch.size() == 3);
  CHECK(batch[0].item == 1);
  CHECK(batch[2].item == 3);
  CHECK(b.empty());
  CHECK(b.queued_images() == 0);
}

TEST_CASE("batcher: whole requests up to max_batch in arrival order, a large request alone") {
  using B = DynamicBatcher<int>;
  const auto t = B::Clock::now();
  B b(4, std::chrono::milliseconds(1));
  b.push(1, 3, t);
  b.push(2, 2, t);  // does not fit after 1
  b.push(3, 9, t);  // larger than max_batch
  b.push(4, 1, t);
  auto first = b.take();
  REQUIRE(first.size() == 1);
  CHECK(first[0].item == 1);
  auto second = b.take();
  REQUIRE(second.size() == 1);
  CHECK(second[0].item == 2);  // 2 + 9 > 4
  auto third = b.take();
  REQUIRE(third.size() == 1);
  CHECK(third[0].images == 9);
  auto fourth = b.take();
  REQUIRE(fourth.size() == 1);
  CHECK(fourth[0].item == 4);
  CHECK(b.take().empty());
  B one(1, std::chrono::milliseconds(100));  // max_batch 1: no batching at all
  one.push(1, 1, t);
  one.push(2, 1, t);
  CHECK(one.due(t, false));
  CHECK(one.take().size() == 1);
}

}  // namespace test_net_protocol
