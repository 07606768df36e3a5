// Result<T>: a value or an error message (Linux-side API: file loading, networking).
// These parts may allocate; they report failures as values with a message that names
// what is wrong, and never throw across the API.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "edgenn/core/status.hpp"

namespace edgenn::io {

struct Failure {
  Error code = Error::invalid_argument;
  std::string message;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Failure f) : failure_(std::move(f)) {}  // NOLINT
  static Result fail(Error code, std::string message) { return Result(Failure{code, std::move(message)}); }

  bool ok() const { return value_.has_value(); }
  explicit operator bool() const { return ok(); }
  const std::string& error() const { return failure_.message; }
  Error code() const { return ok() ? Error::none : failure_.code; }
  const Failure& failure() const { return failure_; }

  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }

 private:
  std::optional<T> value_;
  Failure failure_;
};

// Result of an operation that yields nothing.
struct Done {};
using Outcome = Result<Done>;
inline Outcome success() { return Outcome(Done{}); }

inline Failure fail(Error code, std::string message) { return Failure{code, std::move(message)}; }

// Inside a function returning Result<T>: return the failure of a core Status.
#define EDGENN_RESULT_TRY(expr)                                                   \
  do {                                                                            \
    const ::edgenn::Status edgenn_rs_ = (expr);                                   \
    if (!edgenn_rs_.is_ok()) return ::edgenn::io::fail(edgenn_rs_.code(), edgenn_rs_.message()); \
  } while (0)

}  // namespace edgenn::io
