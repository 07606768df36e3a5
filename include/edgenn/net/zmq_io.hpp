// Small helpers over cppzmq shared by the server and the edge client: polling and
// non-blocking multipart receive that treat EINTR (a signal arrived) as "nothing yet"
// instead of an exception, multipart send that reports failure as a value, and printable
// peer ids for log lines.
#pragma once

#include <cerrno>
#include <chrono>
#include <string>
#include <vector>

#include <zmq.hpp>

namespace edgenn::net {

// zmq_poll that returns 0 (nothing ready) when a signal interrupts it.
inline int poll_sockets(std::vector<zmq_pollitem_t>& items, long timeout_ms) {
  const int rc = zmq_poll(items.data(), int(items.size()), timeout_ms);
  if (rc < 0) {
    for (auto& it : items) it.revents = 0;
    if (zmq_errno() == EINTR) return 0;
    throw zmq::error_t();
  }
  return rc;
}

// Milliseconds to wait until `deadline` for zmq_poll: rounded up (never spin before it), at
// least 0, at most `cap_ms`.
inline long poll_timeout_ms(std::chrono::steady_clock::time_point now, std::chrono::steady_clock::time_point deadline,
                            long cap_ms) {
  if (deadline <= now) return 0;
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(deadline - now).count();
  const long ms = long((us + 999) / 1000);
  return ms < cap_ms ? ms : cap_ms;
}

// Receive one whole multipart message without blocking. Returns false when none is waiting.
// Only the first `keep` frames are stored (a peer may send millions of tiny frames);
// `total` counts them all.
inline bool recv_message(zmq::socket_t& s, std::vector<zmq::message_t>& frames, std::size_t& total,
                         std::size_t keep = 8) {
  frames.clear();
  total = 0;
  zmq::message_t part;
  for (;;) {
    zmq::recv_result_t got;
    try {
      got = s.recv(part, total == 0 ? zmq::recv_flags::dontwait : zmq::recv_flags::none);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) {
        if (total == 0) return false;
        continue;  // the rest of a multipart message is already queued: retry
      }
      throw;
    }
    if (!got) return false;  // EAGAIN on the first frame
    ++total;
    const bool more = part.more();
    if (frames.size() < keep) frames.push_back(std::move(part));
    part.rebuild();
    if (!more) return true;
  }
}

// Send frames as one multipart message; false (and errno in `err`) when the socket refused
// (EAGAIN: peer's queue full; EHOSTUNREACH: ROUTER peer gone).
inline bool send_message(zmq::socket_t& s, std::vector<zmq::message_t>& frames, bool dontwait, int* err = nullptr) {
  for (std::size_t i = 0; i < frames.size(); ++i) {
    int flags = i + 1 < frames.size() ? ZMQ_SNDMORE : 0;
    if (dontwait) flags |= ZMQ_DONTWAIT;
    for (;;) {
      if (zmq_msg_send(frames[i].handle(), s.handle(), flags) >= 0) break;
      if (zmq_errno() == EINTR) continue;
      if (err) *err = zmq_errno();
      return false;
    }
  }
  return true;
}

// A routing id as hex, for log lines.
inline std::string hex_bytes(const void* data, std::size_t size, std::size_t max_bytes = 8) {
  static const char* digits = "0123456789abcdef";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string s;
  for (std::size_t i = 0; i < size && i < max_bytes; ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  if (size > max_bytes) s += "..";
  return s;
}

}  // namespace edgenn::net
