// The edge side of the edge–cloud hop (docs/protocol.md section 7): a ZeroMQ DEALER that
// gives exactly one result per request — the cloud's logits, or a fallback marker saying
// the cloud did not answer and why (the caller then uses the edge's own best answer).
//
// - Every request has a unique id, a per-attempt timeout and a bounded number of resends.
// - After a timeout the socket is closed with linger 0 and reopened (lazy pirate): queued
//   messages to a dead server are discarded, replies meant for the old connection can never
//   arrive, and the client reconnects when the cloud comes back. Connecting before the
//   server starts works: ZeroMQ queues the request until the connection is up.
// - Replies are matched by request id; late and duplicate replies are dropped and counted.
// - Several requests may be in flight (submit/poll), so one client keeps a pipeline full.
// - With CURVE, a socket monitor reports a refused handshake (the server does not know our
//   key): requests then fall back at once as "unauthenticated" instead of waiting.
//
// Not thread-safe: one client per thread (ZeroMQ sockets belong to one thread). Linux-side
// API: allocates; never throws for network conditions (only for a broken ZeroMQ install).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "edgenn/io/result.hpp"
#include "edgenn/net/protocol.hpp"
#include "edgenn/net/zmq_io.hpp"

namespace edgenn::net {

struct CurveClientOptions {
  std::string server_public_key;  // Z85, from the server's .pub file
  std::string public_key;         // this client's keypair, Z85
  std::string secret_key;
};

struct ClientOptions {
  std::string endpoint = "tcp://127.0.0.1:5555";
  std::chrono::milliseconds timeout{2000};  // per attempt
  int retries = 1;                          // resends after the first attempt
  std::optional<CurveClientOptions> curve;
  std::uint32_t expected_classes = 0;  // 0: accept any class count in replies
  int send_queue = 10000;              // ZMQ_SNDHWM: requests queued while the server is away
};

// Why a request was answered by the fallback instead of the cloud.
enum class Fallback : std::uint8_t {
  none = 0,         // the cloud answered
  timeout,          // no reply after every attempt
  error_reply,      // the server refused the request (server_error says why)
  unauthenticated,  // CURVE handshake refused: this client's key is not authorised
  malformed_reply,  // a reply with this id that breaks the protocol
  send_failed,      // the local send queue was full
};

inline constexpr const char* fallback_name(Fallback f) {
  switch (f) {
    case Fallback::none: return "none";
    case Fallback::timeout: return "timeout";
    case Fallback::error_reply: return "error_reply";
    case Fallback::unauthenticated: return "unauthenticated";
    case Fallback::malformed_reply: return "malformed_reply";
    case Fallback::send_failed: return "send_failed";
  }
  return "unknown";
}

struct CloudResult {
  std::uint64_t request_id = 0;
  MessageType kind = MessageType::classify_request;  // what was asked
  int images = 0, classes = 0;
  std::vector<float> logits;  // images x classes, when ok()
  std::string text;           // stats JSON (stats requests) or the server's error message
  Fallback fallback = Fallback::none;
  ErrorCode server_error = ErrorCode::none;  // with Fallback::error_reply
  std::string detail;                        // human-readable reason of a fallback
  int attempts = 0;
  double latency_ms = 0;  // submit to result
  std::uint64_t bytes_sent = 0, bytes_received = 0;

  bool ok() const { return fallback == Fallback::none; }
  const float* row(int i) const { return logits.data() + std::size_t(i) * std::size_t(classes); }
  int top(int i = 0) const {
    const float* r = row(i);
    return int(std::max_element(r, r + classes) - r);
  }
  // "ok", or "fallback: timeout (no reply after 2 attempts of 2000 ms)".
  std::string describe() const { return ok() ? "ok" : std::string("fallback: ") + fallback_name(fallback) + " (" + detail + ")"; }
};

struct ClientCounters {
  std::uint64_t requests = 0, sends = 0, resends = 0, replies = 0;
  std::uint64_t late_or_duplicate = 0;  // replies for ids no longer outstanding (dropped)
  std::uint64_t unattributable = 0;     // replies whose header could not be read (dropped)
  std::uint64_t socket_recreations = 0, auth_failures = 0;
  std::uint64_t fallbacks = 0;
};

class CloudClient {
 public:
  using Clock = std::chrono::steady_clock;

  // `shared`: an existing context (several clients in one process may share one); by
  // default the client owns its own.
  explicit CloudClient(ClientOptions opt, zmq::context_t* shared = nullptr) : opt_(std::move(opt)) {
    if (shared) {
      ctx_ = shared;
    } else {
      own_ctx_ = std::make_unique<zmq::context_t>(1);
      ctx_ = own_ctx_.get();
    }
    open_socket();
  }
  ~CloudClient() {
    close_socket();
    if (own_ctx_) own_ctx_->close();
  }
  CloudClient(const CloudClient&) = delete;
  CloudClient& operator=(const CloudClient&) = delete;

  const ClientOptions& options() const { return opt_; }
  const ClientCounters& counters() const { return counters_; }
  std::size_t in_flight() const { return pending_.size(); }

  // --- asynchronous: submit now, collect with poll() ----------------------------------------

  // n images of h x w x c uint8 pixels (the server normalises them). Returns the request id;
  // its result comes from poll() exactly once.
  std::uint64_t submit(const unsigned char* pixels, int n, int h, int w, int c) {
    return submit_tensor(DType::uint8, pixels, n, h, w, c);
  }
  // n already normalised float32 inputs, NHWC.
  std::uint64_t submit_normalized(const float* x, int n, int h, int w, int c) {
    return submit_tensor(DType::float32, x, n, h, w, c);
  }
  std::uint64_t submit_stats() {
    Outstanding o;
    o.header = stats_request_header(next_id_++);
    return start(std::move(o));
  }

  // Results completed within max_wait (returns as soon as there is at least one, or at
  // once when nothing is in flight). Each submitted id appears exactly once over all calls.
  std::vector<CloudResult> poll(std::chrono::milliseconds max_wait) {
    pump(Clock::now() + max_wait, nullptr);
    std::vector<CloudResult> out;
    out.swap(completed_);
    return out;
  }

  // --- synchronous ---------------------------------------------------------------------------

  CloudResult classify(const unsigned char* pixels, int n, int h, int w, int c) { return wait(submit(pixels, n, h, w, c)); }

  // The result of one submitted request (other results stay for poll()).
  CloudResult wait(std::uint64_t id) { return wait_for(id); }

  // One request per image, up to `window` in flight; results in image order.
  std::vector<CloudResult> classify_each(const unsigned char* pixels, int count, int h, int w, int c, int window = 32) {
    std::vector<CloudResult> out(std::size_t(std::max(count, 0)));
    std::map<std::uint64_t, std::size_t> index;
    const std::size_t per = std::size_t(h) * std::size_t(w) * std::size_t(c);
    int next = 0, done = 0;
    while (done < count) {
      while (next < count && int(index.size()) < std::max(window, 1)) {
        index[submit(pixels + std::size_t(next) * per, 1, h, w, c)] = std::size_t(next);
        ++next;
      }
      for (CloudResult& r : poll(opt_.timeout)) {
        auto it = index.find(r.request_id);
        if (it == index.end()) {
          stash_.push_back(std::move(r));  // a request of an earlier submit(): keep it for poll()
          continue;
        }
        out[it->second] = std::move(r);
        index.erase(it);
        ++done;
      }
    }
    restore_stash();
    return out;
  }

  // The server's stats (docs/protocol.md section 4), with the same timeout and retries.
  io::Result<nlohmann::json> stats() {
    CloudResult r = wait_for(submit_stats());
    if (!r.ok()) return io::fail(Error::timeout, "stats request: " + r.describe());
    auto j = nlohmann::json::parse(r.text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return io::fail(Error::corrupt_data, "stats reply is not a JSON object");
    return j;
  }

 private:
  struct Outstanding {
    Header header;
    std::vector<unsigned char> payload;  // kept for resends
    int attempts = 0;
    Clock::time_point submitted, deadline;
    std::uint64_t bytes_sent = 0;
    bool send_failed = false;
  };

  std::uint64_t submit_tensor(DType dtype, const void* data, int n, int h, int w, int c) {
    Outstanding o;
    o.header = classify_request_header(next_id_++, dtype, std::uint32_t(std::max(n, 0)), std::uint32_t(std::max(h, 0)),
                                       std::uint32_t(std::max(w, 0)), std::uint32_t(std::max(c, 0)));
    const auto* p = static_cast<const unsigned char*>(data);
    if (p) o.payload.assign(p, p + o.header.payload_bytes);
    return start(std::move(o));
  }

  std::uint64_t start(Outstanding o) {
    ++counters_.requests;
    o.submitted = Clock::now();
    const std::uint64_t id = o.header.request_id;
    if (auth_denied_ && o.submitted - last_auth_failure_ < opt_.timeout) {
      // The last handshake was refused just now and none succeeded since: do not wait for
      // nothing. (Past the window the request is sent: the server may know our key by now.)
      complete(o, Fallback::unauthenticated, "the server refused this client's CURVE key");
      return id;
    }
    auto& slot = pending_[id];
    slot = std::move(o);
    send(slot);
    return id;
  }

  void send(Outstanding& o) {
    Header h = o.header;
    if (o.attempts > 0) h.flags |= flags::retry;
    ++o.attempts;
    o.deadline = Clock::now() + opt_.timeout;
    const HeaderBytes hb = encode_header(h);
    std::vector<zmq::message_t> frames;
    frames.emplace_back(hb.data(), hb.size());
    frames.emplace_back(o.payload.data(), o.payload.size());
    ++counters_.sends;
    if (o.attempts > 1) ++counters_.resends;
    int err = 0;
    if (send_message(*sock_, frames, /*dontwait=*/true, &err)) {
      o.bytes_sent += hb.size() + o.payload.size();
    } else {
      // Completing here would erase `o` under the caller: expire it instead, so the next
      // timeout check fails it as send_failed without further attempts.
      o.deadline = Clock::now();
      o.attempts = opt_.retries + 1;
      o.send_failed = true;
    }
  }

  // Process socket events until `until`, or until something completed (or `id` completed
  // when given). Never waits past the earliest request deadline without checking it.
  void pump(Clock::time_point until, const std::uint64_t* id) {
    for (;;) {
      expire(Clock::now());
      if (id ? has_completed(*id) : !completed_.empty()) return;
      if (pending_.empty()) return;
      auto now = Clock::now();
      if (now >= until) return;
      Clock::time_point wake = until;
      for (const auto& kv : pending_) wake = std::min(wake, kv.second.deadline);
      std::vector<zmq_pollitem_t> items{{sock_->handle(), 0, ZMQ_POLLIN, 0}};
      if (monitor_) items.push_back({monitor_->handle(), 0, ZMQ_POLLIN, 0});
      poll_sockets(items, poll_timeout_ms(now, wake, 60000));
      if (monitor_ && (items[1].revents & ZMQ_POLLIN)) read_monitor();
      if (items[0].revents & ZMQ_POLLIN) read_replies();
    }
  }

  CloudResult wait_for(std::uint64_t id) {
    if (!pending_.count(id) && !has_completed(id)) {
      // Never block on an id that cannot complete (already collected, or never submitted).
      CloudResult r;
      r.request_id = id;
      r.fallback = Fallback::send_failed;
      r.detail = "request id " + std::to_string(id) + " is not in flight";
      return r;
    }
    for (;;) {
      if (auto r = take_completed(id)) {
        restore_stash();
        return std::move(*r);
      }
      // Bounded: every request completes within (retries + 1) timeouts of its last send.
      pump(Clock::now() + opt_.timeout, &id);
      // Keep other requests' results for poll(), out of the way of the search.
      for (auto& r : completed_)
        if (r.request_id != id) stash_.push_back(std::move(r));
      completed_.erase(std::remove_if(completed_.begin(), completed_.end(),
                                      [&](const CloudResult& r) { return r.request_id != id; }),
                       completed_.end());
    }
  }

  bool has_completed(std::uint64_t id) const {
    return std::any_of(completed_.begin(), completed_.end(), [&](const CloudResult& r) { return r.request_id == id; });
  }
  std::optional<CloudResult> take_completed(std::uint64_t id) {
    for (auto it = completed_.begin(); it != completed_.end(); ++it)
      if (it->request_id == id) {
        CloudResult r = std::move(*it);
        completed_.erase(it);
        return r;
      }
    return std::nullopt;
  }
  void restore_stash() {
    for (auto& r : stash_) completed_.push_back(std::move(r));
    stash_.clear();
  }

  // Requests past their deadline: give up (fallback) or resend on a fresh socket.
  void expire(Clock::time_point now) {
    bool any = false;
    for (const auto& kv : pending_) any = any || kv.second.deadline <= now;
    if (!any) return;
    for (auto it = pending_.begin(); it != pending_.end();) {
      Outstanding& o = it->second;
      if (o.deadline <= now && o.attempts > opt_.retries) {
        if (o.send_failed) {
          complete(o, Fallback::send_failed, "the local send queue is full");
        } else {
          complete(o, Fallback::timeout,
                   "no reply after " + std::to_string(o.attempts) + " attempt" + (o.attempts > 1 ? "s" : "") + " of " +
                       std::to_string(opt_.timeout.count()) + " ms");
        }
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    // Even with nothing left to resend, drop the old socket so its queue dies with it.
    recreate_socket();
    // Everything still outstanding was queued on the old socket: resend it all. Only the
    // requests that timed out used up an attempt; the others keep their count.
    for (auto& kv : pending_) {
      Outstanding& o = kv.second;
      if (o.deadline > now) --o.attempts;  // send() counts one; this resend is not their fault
      send(o);
    }
  }

  void read_replies() {
    std::vector<zmq::message_t> frames;
    std::size_t total = 0;
    while (recv_message(*sock_, frames, total, 4)) {
      if (total != 2) {
        ++counters_.unattributable;
        continue;
      }
      const Decoded d = decode_header(frames[0].data(), frames[0].size());
      if (!d.ok()) {
        ++counters_.unattributable;
        continue;
      }
      auto it = pending_.find(d.header.request_id);
      if (it == pending_.end()) {
        ++counters_.late_or_duplicate;
        continue;
      }
      ++counters_.replies;
      Outstanding& o = it->second;
      const zmq::message_t& payload = frames[1];
      const std::uint64_t received = frames[0].size() + payload.size();
      CloudResult& r = complete(o, Fallback::none, "");
      r.bytes_received += received;
      accept_reply(r, o, d.header, payload);
      if (!r.ok()) ++counters_.fallbacks;
      pending_.erase(it);
    }
  }

  void accept_reply(CloudResult& r, const Outstanding& o, const Header& h, const zmq::message_t& payload) {
    auto malformed = [&](const std::string& why) {
      r.fallback = Fallback::malformed_reply;
      r.detail = why;
      r.logits.clear();
    };
    if (h.type == MessageType::error_reply) {
      if (const Check c = validate_text_reply(h, payload.size()); !c) return malformed("error reply: " + c.detail);
      r.fallback = Fallback::error_reply;
      r.server_error = h.error;
      r.text = payload.to_string();
      r.detail = std::string(error_code_name(h.error)) + ": " + r.text;
      return;
    }
    if (o.header.type == MessageType::stats_request) {
      if (h.type != MessageType::stats_reply) return malformed("expected a stats reply");
      if (const Check c = validate_text_reply(h, payload.size()); !c) return malformed(c.detail);
      r.text = payload.to_string();
      return;
    }
    const Check c = validate_classify_reply(h, payload.size(), o.header.dims[0], opt_.expected_classes);
    if (!c) return malformed(c.detail);
    r.classes = int(h.dims[1]);
    r.logits.resize(std::size_t(h.dims[0]) * h.dims[1]);
    std::memcpy(r.logits.data(), payload.data(), payload.size());
    for (float v : r.logits)
      if (!std::isfinite(v)) return malformed("non-finite logits");
  }

  // Record the result of `o` (the caller erases it from pending_).
  CloudResult& complete(const Outstanding& o, Fallback f, std::string detail) {
    CloudResult r;
    r.request_id = o.header.request_id;
    r.kind = o.header.type;
    r.images = int(o.header.dims[0]);
    r.fallback = f;
    r.detail = std::move(detail);
    r.attempts = o.attempts;
    r.latency_ms = std::chrono::duration<double, std::milli>(Clock::now() - o.submitted).count();
    r.bytes_sent = o.bytes_sent;
    if (f != Fallback::none) ++counters_.fallbacks;
    completed_.push_back(std::move(r));
    return completed_.back();
  }

  // --- the socket and its monitor ------------------------------------------------------------

  void open_socket() {
    sock_ = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::dealer);
    sock_->set(zmq::sockopt::linger, 0);
    sock_->set(zmq::sockopt::sndhwm, opt_.send_queue);
    sock_->set(zmq::sockopt::rcvhwm, opt_.send_queue);
    sock_->set(zmq::sockopt::reconnect_ivl, 100);
    if (opt_.curve) {
      sock_->set(zmq::sockopt::curve_serverkey, opt_.curve->server_public_key);
      sock_->set(zmq::sockopt::curve_publickey, opt_.curve->public_key);
      sock_->set(zmq::sockopt::curve_secretkey, opt_.curve->secret_key);
      // The monitor must be listening before connect(), or the first handshake's events are lost.
      const std::string ep = "inproc://edgenn-client-monitor-" +
                             std::to_string(reinterpret_cast<std::uintptr_t>(this)) + "-" + std::to_string(generation_);
      if (zmq_socket_monitor(sock_->handle(), ep.c_str(),
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_SUCCEEDED) == 0) {
        monitor_ = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::pair);
        monitor_->set(zmq::sockopt::linger, 0);
        monitor_->connect(ep);
      }
    }
    ++generation_;
    sock_->connect(opt_.endpoint);
  }

  void close_socket() {
    if (!sock_) return;
    if (monitor_) {
      zmq_socket_monitor(sock_->handle(), nullptr, 0);
      monitor_->close();
      monitor_.reset();
    }
    sock_->close();
    sock_.reset();
  }

  void recreate_socket() {
    close_socket();
    open_socket();
    ++counters_.socket_recreations;
  }

  void read_monitor() {
    std::vector<zmq::message_t> frames;
    std::size_t total = 0;
    bool refused = false;
    while (recv_message(*monitor_, frames, total, 2)) {
      if (frames.empty() || frames[0].size() < 6) continue;
      std::uint16_t event;
      std::memcpy(&event, frames[0].data(), sizeof event);  // native byte order (inproc)
      if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
        refused = true;
        auth_denied_ = true;
        last_auth_failure_ = Clock::now();
        ++counters_.auth_failures;
      } else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        refused = false;
        auth_denied_ = false;
      }
    }
    if (!refused || pending_.empty()) return;
    // Waiting is pointless: the server will not talk to this key. Fail what is in flight and
    // drop the socket's queue, so these requests are not delivered later by surprise.
    for (auto& kv : pending_) complete(kv.second, Fallback::unauthenticated, "the server refused this client's CURVE key");
    pending_.clear();
    recreate_socket();
  }

  ClientOptions opt_;
  std::unique_ptr<zmq::context_t> own_ctx_;
  zmq::context_t* ctx_ = nullptr;
  std::unique_ptr<zmq::socket_t> sock_, monitor_;
  std::uint64_t generation_ = 0;
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, Outstanding> pending_;
  std::vector<CloudResult> completed_, stash_;
  bool auth_denied_ = false;
  Clock::time_point last_auth_failure_;
  ClientCounters counters_;
};

}  // namespace edgenn::net
