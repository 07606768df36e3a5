// CURVE keys as Z85 text (docs/protocol.md section 6): generate keypairs, derive a public
// key from a secret one, read and write key files and the server's authorised-keys list.
// Key files hold one 40-character Z85 key on a line; blank lines and '#' comments are ignored.
#pragma once

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "edgenn/io/result.hpp"

namespace edgenn::net {

inline constexpr std::size_t kZ85KeyChars = 40;  // 32 bytes in Z85

struct CurveKeyPair {
  std::string public_key;  // Z85
  std::string secret_key;  // Z85
};

// libzmq built with libsodium (or tweetnacl) has CURVE.
inline bool curve_available() { return zmq_has("curve") != 0; }

// A 40-character Z85 string that decodes to 32 bytes.
inline bool is_z85_key(const std::string& s) {
  if (s.size() != kZ85KeyChars) return false;
  unsigned char raw[32];
  return zmq_z85_decode(raw, s.c_str()) != nullptr;
}

inline io::Result<CurveKeyPair> generate_curve_keypair() {
  if (!curve_available()) return io::fail(Error::unsupported, "this libzmq has no CURVE support (needs libsodium)");
  char pub[kZ85KeyChars + 1], sec[kZ85KeyChars + 1];
  if (zmq_curve_keypair(pub, sec) != 0)
    return io::fail(Error::io_error, std::string("zmq_curve_keypair failed: ") + zmq_strerror(zmq_errno()));
  return CurveKeyPair{pub, sec};
}

inline io::Result<std::string> curve_public_from_secret(const std::string& secret_z85) {
  if (!is_z85_key(secret_z85)) return io::fail(Error::invalid_argument, "not a 40-character Z85 CURVE key");
  char pub[kZ85KeyChars + 1];
  if (zmq_curve_public(pub, secret_z85.c_str()) != 0)
    return io::fail(Error::unsupported, std::string("zmq_curve_public failed: ") + zmq_strerror(zmq_errno()));
  return std::string(pub);
}

namespace detail {
inline std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}
}  // namespace detail

// Every key of a key file (blank lines and '#' comments skipped); errors name the line.
inline io::Result<std::vector<std::string>> read_key_list(const std::string& path) {
  std::ifstream in(path);
  if (!in) return io::fail(Error::io_error, path + ": cannot open: " + std::strerror(errno));
  std::vector<std::string> keys;
  std::string line;
  for (int no = 1; std::getline(in, line); ++no) {
    const std::string t = detail::trim(line);
    if (t.empty() || t[0] == '#') continue;
    if (!is_z85_key(t))
      return io::fail(Error::corrupt_data,
                      path + ":" + std::to_string(no) + ": not a 40-character Z85 CURVE key");
    keys.push_back(t);
  }
  return keys;
}

// The one key of a key file (a secret or public key written by edgenn-keygen).
inline io::Result<std::string> read_key_file(const std::string& path) {
  auto keys = read_key_list(path);
  if (!keys) return keys.failure();
  if (keys->size() != 1)
    return io::fail(Error::corrupt_data, path + ": expected exactly one Z85 key, found " + std::to_string(keys->size()));
  return keys->front();
}

// Write a key file atomically; secret files are created with mode 0600 from the start.
inline io::Outcome write_key_file(const std::string& path, const std::string& key, const std::string& comment,
                                  bool secret) {
  const std::string text = "# " + comment + "\n" + key + "\n";
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, secret ? 0600 : 0644);
  if (fd < 0) return io::fail(Error::io_error, tmp + ": cannot create: " + std::strerror(errno));
  const bool written = ::write(fd, text.data(), text.size()) == ssize_t(text.size()) && ::fsync(fd) == 0;
  const bool closed = ::close(fd) == 0;
  if (!written || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    return io::fail(Error::io_error, path + ": cannot write: " + why);
  }
  return io::success();
}

}  // namespace edgenn::net
