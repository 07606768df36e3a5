// Errors as values. The core never throws: every fallible call returns a Status.
// A Status is a code plus a static message naming what is wrong (no allocation).
#pragma once

#include "edgenn/core/config.hpp"

namespace edgenn {

enum class Error : std::uint8_t {
  none = 0,
  invalid_argument,    // a parameter is out of its domain (stride 0, negative padding, ...)
  shape_mismatch,      // tensor shapes do not agree with each other or with the layer
  workspace_too_small, // the caller's workspace is smaller than the size query said
  unsupported,         // a valid request this build cannot run
  corrupt_data,        // input bytes do not follow the expected format
  io_error,            // the operating system refused a read or write
  timeout,             // a remote peer did not answer in time
  not_found,           // a named item (tensor, key) does not exist
};

inline constexpr const char* error_name(Error e) {
  switch (e) {
    case Error::none: return "ok";
    case Error::invalid_argument: return "invalid argument";
    case Error::shape_mismatch: return "shape mismatch";
    case Error::workspace_too_small: return "workspace too small";
    case Error::unsupported: return "unsupported";
    case Error::corrupt_data: return "corrupt data";
    case Error::io_error: return "I/O error";
    case Error::timeout: return "timeout";
    case Error::not_found: return "not found";
  }
  return "unknown error";
}

class [[nodiscard]] Status {
 public:
  constexpr Status() = default;
  constexpr Status(Error code, const char* message) : code_(code), message_(message) {}

  static constexpr Status ok() { return Status(); }
  constexpr bool is_ok() const { return code_ == Error::none; }
  constexpr explicit operator bool() const { return is_ok(); }
  constexpr Error code() const { return code_; }
  // Static string; never null.
  constexpr const char* message() const { return message_ ? message_ : error_name(code_); }

 private:
  Error code_ = Error::none;
  const char* message_ = nullptr;
};

// Propagate a failed Status to the caller.
#define EDGENN_TRY(expr)                       \
  do {                                         \
    ::edgenn::Status edgenn_status_ = (expr);  \
    if (!edgenn_status_.is_ok()) return edgenn_status_; \
  } while (0)

// Fail with `code` and `message` unless `cond` holds.
#define EDGENN_CHECK(cond, code, message)                       \
  do {                                                          \
    if (EDGENN_UNLIKELY(!(cond))) return ::edgenn::Status(code, message); \
  } while (0)

}  // namespace edgenn
