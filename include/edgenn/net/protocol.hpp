// The edge–cloud message format, version 1 (docs/protocol.md): the 48-byte little-endian
// header, message types, error codes, and the validation every receiver runs. Pure
// encoding and checking over bytes — no sockets — so it is testable on its own and shared by
// the server, the edge client and the tests.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

// Tensor payloads are little-endian and copied as raw bytes: every supported target (x86-64,
// AArch64, ARMv7 Linux) is little-endian. A big-endian port would byte-swap payloads here.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "edgenn::net copies little-endian payloads as raw bytes");

namespace edgenn::net {

inline constexpr std::uint16_t kProtocolVersion = 1;
inline constexpr std::size_t kHeaderBytes = 48;
inline constexpr std::array<unsigned char, 4> kMagic = {'E', 'N', 'N', '1'};
inline constexpr std::size_t kMaxErrorMessageBytes = 1024;

enum class MessageType : std::uint16_t {
  classify_request = 1,
  classify_reply = 2,
  error_reply = 3,
  stats_request = 4,
  stats_reply = 5,
};

enum class DType : std::uint8_t { none = 0, uint8 = 1, float32 = 2, utf8 = 3 };

namespace flags {
inline constexpr std::uint16_t retry = 1u << 0;  // a resend of a request id sent before
inline constexpr std::uint16_t known = retry;
}  // namespace flags

enum class ErrorCode : std::uint16_t {
  none = 0,
  bad_frames = 1,
  bad_header = 2,
  unsupported_version = 3,
  unknown_type = 4,
  bad_dtype = 5,
  bad_size = 6,
  bad_shape = 7,
  bad_count = 8,
  too_large = 9,
  overloaded = 10,
  shutting_down = 11,
  internal = 12,
};
inline constexpr int kNumErrorCodes = 13;

inline constexpr const char* error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::none: return "none";
    case ErrorCode::bad_frames: return "bad_frames";
    case ErrorCode::bad_header: return "bad_header";
    case ErrorCode::unsupported_version: return "unsupported_version";
    case ErrorCode::unknown_type: return "unknown_type";
    case ErrorCode::bad_dtype: return "bad_dtype";
    case ErrorCode::bad_size: return "bad_size";
    case ErrorCode::bad_shape: return "bad_shape";
    case ErrorCode::bad_count: return "bad_count";
    case ErrorCode::too_large: return "too_large";
    case ErrorCode::overloaded: return "overloaded";
    case ErrorCode::shutting_down: return "shutting_down";
    case ErrorCode::internal: return "internal";
  }
  return "unknown_error";
}

inline constexpr const char* message_type_name(MessageType t) {
  switch (t) {
    case MessageType::classify_request: return "classify_request";
    case MessageType::classify_reply: return "classify_reply";
    case MessageType::error_reply: return "error_reply";
    case MessageType::stats_request: return "stats_request";
    case MessageType::stats_reply: return "stats_reply";
  }
  return "unknown";
}

inline constexpr std::size_t dtype_bytes(DType d) {
  return d == DType::uint8 ? 1 : d == DType::float32 ? 4 : 0;
}

struct Header {
  std::uint16_t version = kProtocolVersion;
  MessageType type = MessageType::classify_request;
  std::uint16_t flags = 0;
  ErrorCode error = ErrorCode::none;
  DType dtype = DType::none;
  std::uint64_t request_id = 0;
  std::array<std::uint32_t, 4> dims{0, 0, 0, 0};
  std::uint64_t payload_bytes = 0;

  // Elements the dims describe (product of the dims; 0 when any is 0), without overflow:
  // four 32-bit dims fit in 128 bits, so saturate at UINT64_MAX.
  std::uint64_t elements() const {
    std::uint64_t n = 1;
    for (std::uint32_t d : dims) {
      if (d == 0) return 0;
      if (n > UINT64_MAX / d) return UINT64_MAX;
      n *= d;
    }
    return n;
  }
  // Bytes a tensor payload of these dims and dtype takes (saturating).
  std::uint64_t tensor_bytes() const {
    const std::uint64_t e = elements(), b = dtype_bytes(dtype);
    return e > UINT64_MAX / (b ? b : 1) ? UINT64_MAX : e * b;
  }
};

using HeaderBytes = std::array<unsigned char, kHeaderBytes>;

namespace detail {
inline void put_u16(unsigned char* p, std::uint16_t v) {
  p[0] = static_cast<unsigned char>(v);
  p[1] = static_cast<unsigned char>(v >> 8);
}
inline void put_u32(unsigned char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
inline void put_u64(unsigned char* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
inline std::uint16_t get_u16(const unsigned char* p) { return static_cast<std::uint16_t>(p[0] | (p[1] << 8)); }
inline std::uint32_t get_u32(const unsigned char* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline std::uint64_t get_u64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
}  // namespace detail

// Byte offsets of the header fields (docs/protocol.md section 2).
namespace offsets {
inline constexpr std::size_t magic = 0, version = 4, type = 6, flags = 8, error = 10, dtype = 12, reserved = 13,
                             request_id = 16, dims = 24, payload_bytes = 40;
}

// Byte-by-byte little-endian encoding: identical on every host, no struct packing.
inline HeaderBytes encode_header(const Header& h) {
  HeaderBytes b{};
  for (std::size_t i = 0; i < kMagic.size(); ++i) b[offsets::magic + i] = kMagic[i];
  detail::put_u16(&b[offsets::version], h.version);
  detail::put_u16(&b[offsets::type], static_cast<std::uint16_t>(h.type));
  detail::put_u16(&b[offsets::flags], h.flags);
  detail::put_u16(&b[offsets::error], static_cast<std::uint16_t>(h.error));
  b[offsets::dtype] = static_cast<unsigned char>(h.dtype);
  detail::put_u64(&b[offsets::request_id], h.request_id);
  for (std::size_t i = 0; i < 4; ++i) detail::put_u32(&b[offsets::dims + 4 * i], h.dims[i]);
  detail::put_u64(&b[offsets::payload_bytes], h.payload_bytes);
  return b;
}

// Outcome of decoding or validating: ok, or the error code to answer with and why.
struct Check {
  ErrorCode error = ErrorCode::none;
  std::string detail;
  bool ok() const { return error == ErrorCode::none; }
  explicit operator bool() const { return ok(); }
};
inline Check rejected(ErrorCode e, std::string why) { return Check{e, std::move(why)}; }

struct Decoded {
  Header header;
  Check check;
  // The request id could be read (right size, magic and version): an error reply can echo it.
  bool id_known = false;
  bool ok() const { return check.ok(); }
};

inline bool is_request(MessageType t) { return t == MessageType::classify_request || t == MessageType::stats_request; }
inline bool is_reply(MessageType t) {
  return t == MessageType::classify_reply || t == MessageType::error_reply || t == MessageType::stats_reply;
}
inline bool known_type(std::uint16_t t) { return t >= 1 && t <= 5; }
inline bool known_dtype(std::uint8_t d) { return d <= 3; }

// Decode a header frame and check what does not depend on the direction or the model:
// size, magic, version, known type, reserved bytes and flags, known dtype.
inline Decoded decode_header(const void* data, std::size_t size) {
  Decoded d;
  const auto* p = static_cast<const unsigned char*>(data);
  if (size != kHeaderBytes) {
    d.check = rejected(ErrorCode::bad_header, "header frame is " + std::to_string(size) + " bytes, expected " +
                                                  std::to_string(kHeaderBytes));
    return d;
  }
  for (std::size_t i = 0; i < kMagic.size(); ++i)
    if (p[offsets::magic + i] != kMagic[i]) {
      d.check = rejected(ErrorCode::bad_header, "bad magic (expected \"ENN1\")");
      return d;
    }
  d.header.version = detail::get_u16(p + offsets::version);
  if (d.header.version != kProtocolVersion) {
    d.check = rejected(ErrorCode::unsupported_version, "protocol version " + std::to_string(d.header.version) +
                                                           " is not supported (this server speaks version " +
                                                           std::to_string(kProtocolVersion) + ")");
    return d;
  }
  d.header.request_id = detail::get_u64(p + offsets::request_id);
  d.id_known = true;
  const std::uint16_t type = detail::get_u16(p + offsets::type);
  d.header.flags = detail::get_u16(p + offsets::flags);
  const std::uint16_t error = detail::get_u16(p + offsets::error);
  const std::uint8_t dtype = p[offsets::dtype];
  for (std::size_t i = 0; i < 4; ++i) d.header.dims[i] = detail::get_u32(p + offsets::dims + 4 * i);
  d.header.payload_bytes = detail::get_u64(p + offsets::payload_bytes);
  if (!known_type(type)) {
    d.check = rejected(ErrorCode::unknown_type, "unknown message type " + std::to_string(type));
    return d;
  }
  d.header.type = static_cast<MessageType>(type);
  d.header.error = static_cast<ErrorCode>(error);
  if (p[offsets::reserved] != 0 || p[offsets::reserved + 1] != 0 || p[offsets::reserved + 2] != 0) {
    d.check = rejected(ErrorCode::bad_header, "reserved header bytes 13..15 are not zero");
    return d;
  }
  if ((d.header.flags & ~flags::known) != 0) {
    d.check = rejected(ErrorCode::bad_header, "unknown flag bits set: " + std::to_string(d.header.flags & ~flags::known));
    return d;
  }
  if (!known_dtype(dtype)) {
    d.check = rejected(ErrorCode::bad_dtype, "unknown dtype " + std::to_string(dtype));
    return d;
  }
  d.header.dtype = static_cast<DType>(dtype);
  return d;
}

// What the server expects of a classify request (from the model and the configured limits).
struct RequestLimits {
  int height = 28, width = 28, channels = 1;
  std::uint32_t max_images = 1024;
  std::uint64_t max_request_bytes = 8u << 20;
};

// Server-side checks of a decoded request against its payload frame size and the limits,
// in the order docs/protocol.md section 5 gives. `h` must come from a successful decode.
inline Check validate_request(const Header& h, std::size_t payload_size, const RequestLimits& lim) {
  if (!is_request(h.type))
    return rejected(ErrorCode::unknown_type,
                    std::string("message type ") + message_type_name(h.type) + " is not a request");
  if (h.error != ErrorCode::none) return rejected(ErrorCode::bad_header, "error_code must be 0 in a request");
  if (h.type == MessageType::stats_request) {
    if (h.dtype != DType::none) return rejected(ErrorCode::bad_dtype, "a stats request has dtype 0 (none)");
    if (payload_size != 0 || h.payload_bytes != 0 || h.dims != std::array<std::uint32_t, 4>{0, 0, 0, 0})
      return rejected(ErrorCode::bad_size, "a stats request has no payload and zero dims");
    return {};
  }
  if (h.dtype != DType::uint8 && h.dtype != DType::float32)
    return rejected(ErrorCode::bad_dtype, "a classify request carries uint8 (1) or float32 (2) pixels");
  if (payload_size > lim.max_request_bytes)
    return rejected(ErrorCode::too_large, "payload of " + std::to_string(payload_size) + " bytes exceeds the limit of " +
                                              std::to_string(lim.max_request_bytes));
  if (h.payload_bytes != payload_size)
    return rejected(ErrorCode::bad_size, "header says " + std::to_string(h.payload_bytes) + " payload bytes, frame has " +
                                             std::to_string(payload_size));
  const std::uint32_t n = h.dims[0];
  if (n == 0 || n > lim.max_images)
    return rejected(ErrorCode::bad_count,
                    "N = " + std::to_string(n) + " images, allowed 1.." + std::to_string(lim.max_images));
  if (h.dims[1] != std::uint32_t(lim.height) || h.dims[2] != std::uint32_t(lim.width) ||
      h.dims[3] != std::uint32_t(lim.channels))
    return rejected(ErrorCode::bad_shape, "image shape " + std::to_string(h.dims[1]) + "x" + std::to_string(h.dims[2]) +
                                              "x" + std::to_string(h.dims[3]) + ", the model takes " +
                                              std::to_string(lim.height) + "x" + std::to_string(lim.width) + "x" +
                                              std::to_string(lim.channels));
  if (h.tensor_bytes() != payload_size)
    return rejected(ErrorCode::bad_size, "dims and dtype give " + std::to_string(h.tensor_bytes()) +
                                             " bytes, payload has " + std::to_string(payload_size));
  return {};
}

// Client-side checks of a reply to a classify request of `images` images. `classes` 0
// accepts any class count. Finite-ness of the logits is the caller's check (needs the data).
inline Check validate_classify_reply(const Header& h, std::size_t payload_size, std::uint32_t images,
                                     std::uint32_t classes = 0) {
  if (h.type != MessageType::classify_reply)
    return rejected(ErrorCode::unknown_type, std::string("expected a classify reply, got ") + message_type_name(h.type));
  if (h.dtype != DType::float32) return rejected(ErrorCode::bad_dtype, "logits must be float32");
  if (h.dims[0] != images || h.dims[1] == 0 || h.dims[2] != 1 || h.dims[3] != 1 || (classes && h.dims[1] != classes))
    return rejected(ErrorCode::bad_shape, "reply dims " + std::to_string(h.dims[0]) + "x" + std::to_string(h.dims[1]) +
                                              "x" + std::to_string(h.dims[2]) + "x" + std::to_string(h.dims[3]) +
                                              " do not fit " + std::to_string(images) + " images");
  if (h.payload_bytes != payload_size || h.tensor_bytes() != payload_size)
    return rejected(ErrorCode::bad_size, "reply payload size does not match its header");
  return {};
}

// Checks of a text reply (error or stats) as a client sees it.
inline Check validate_text_reply(const Header& h, std::size_t payload_size) {
  if (h.type != MessageType::error_reply && h.type != MessageType::stats_reply)
    return rejected(ErrorCode::unknown_type, std::string("expected a text reply, got ") + message_type_name(h.type));
  if (h.dtype != DType::utf8) return rejected(ErrorCode::bad_dtype, "text replies have dtype 3 (utf8)");
  if (h.payload_bytes != payload_size || h.dims != std::array<std::uint32_t, 4>{0, 0, 0, 0})
    return rejected(ErrorCode::bad_size, "text reply size does not match its header");
  if (h.type == MessageType::error_reply && h.error == ErrorCode::none)
    return rejected(ErrorCode::bad_header, "error reply without an error code");
  return {};
}

// --- headers of each message type ------------------------------------------------------------

inline Header classify_request_header(std::uint64_t id, DType dtype, std::uint32_t n, std::uint32_t h, std::uint32_t w,
                                      std::uint32_t c, std::uint16_t flag_bits = 0) {
  Header hd;
  hd.type = MessageType::classify_request;
  hd.flags = flag_bits;
  hd.dtype = dtype;
  hd.request_id = id;
  hd.dims = {n, h, w, c};
  hd.payload_bytes = hd.tensor_bytes();
  return hd;
}

inline Header classify_reply_header(std::uint64_t id, std::uint32_t n, std::uint32_t classes) {
  Header hd;
  hd.type = MessageType::classify_reply;
  hd.dtype = DType::float32;
  hd.request_id = id;
  hd.dims = {n, classes, 1, 1};
  hd.payload_bytes = hd.tensor_bytes();
  return hd;
}

inline Header error_reply_header(std::uint64_t id, ErrorCode code, std::size_t message_bytes) {
  Header hd;
  hd.type = MessageType::error_reply;
  hd.error = code;
  hd.dtype = DType::utf8;
  hd.request_id = id;
  hd.payload_bytes = message_bytes;
  return hd;
}

inline Header stats_request_header(std::uint64_t id, std::uint16_t flag_bits = 0) {
  Header hd;
  hd.type = MessageType::stats_request;
  hd.flags = flag_bits;
  hd.request_id = id;
  return hd;
}

inline Header stats_reply_header(std::uint64_t id, std::size_t json_bytes) {
  Header hd;
  hd.type = MessageType::stats_reply;
  hd.dtype = DType::utf8;
  hd.request_id = id;
  hd.payload_bytes = json_bytes;
  return hd;
}

// Error messages are bounded (docs/protocol.md section 3); cut on a UTF-8 boundary.
inline std::string clip_error_message(std::string msg) {
  if (msg.size() <= kMaxErrorMessageBytes) return msg;
  std::size_t n = kMaxErrorMessageBytes;
  while (n > 0 && (static_cast<unsigned char>(msg[n]) & 0xC0) == 0x80) --n;
  msg.resize(n);
  return msg;
}

}  // namespace edgenn::net
