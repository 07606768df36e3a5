// The cloud side of the edge–cloud hop (docs/protocol.md): a ZeroMQ ROUTER serving many
// edge clients, validating every message, batching classify requests dynamically and
// running them on worker threads.
//
// Threads: the I/O thread (the caller of run()) owns every socket it polls — the ROUTER,
// the ZAP handler, the PULL end of the workers' "batch done" notifications and a wake-up
// eventfd. Workers never touch the ROUTER (ZeroMQ sockets are not thread-safe): they take
// batches from a queue, run the model and hand the batch back through a locked list plus a
// one-byte message on their own inproc PUSH socket, which wakes the poll.
//
// Linux-side API: allocates; create() reports failures (bind, keys) as io::Result values.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "edgenn/io/model_file.hpp"
#include "edgenn/net/batcher.hpp"
#include "edgenn/net/curve_keys.hpp"
#include "edgenn/net/model_runner.hpp"
#include "edgenn/net/protocol.hpp"
#include "edgenn/net/zmq_io.hpp"
#include "edgenn/version.hpp"

namespace edgenn::net {

using LogFn = std::function<void(const std::string&)>;

struct CurveServerOptions {
  std::string secret_key;  // Z85; the public key is derived from it
  // Enforce the list below through a ZAP handler. Off: any client that knows the server's
  // public key is accepted (encryption without client authentication).
  bool authenticate = false;
  std::vector<std::string> authorized_keys;  // Z85 client public keys
};

struct ServerOptions {
  std::vector<std::string> bind{"tcp://*:5555"};
  std::string model_label;  // shown in the stats and startup line (e.g. the weights path)
  int workers = 2;
  int max_batch = 32;        // images per batch
  double max_wait_ms = 2.0;  // after the oldest queued request
  std::uint64_t max_request_bytes = 8u << 20;
  std::uint32_t max_images_per_request = 1024;
  std::uint64_t max_queue_images = 8192;
  std::optional<CurveServerOptions> curve;
  double stats_interval_s = 0;  // periodic stat lines; 0 = off
  int log_lines_per_second = 20;  // refused-message lines beyond this are counted, not printed
  int drain_linger_ms = 5000;     // how long the shutdown may wait for the last replies to leave
  LogFn log;                      // default: stderr
};

// Counters of a server run (also the body of the stats reply).
struct ServerCounters {
  std::uint64_t requests = 0, retries = 0, images = 0, batches = 0, max_batch_size = 0;
  std::uint64_t replies = 0, replies_dropped = 0, dropped_messages = 0, auth_denied = 0, stats_requests = 0;
  double queue_ms_sum = 0, compute_ms_sum = 0;
  std::array<std::uint64_t, kNumErrorCodes> errors{};
  std::uint64_t error_replies() const {
    std::uint64_t n = 0;
    for (auto e : errors) n += e;
    return n;
  }
  double mean_batch_size() const { return batches ? double(images) / double(batches) : 0.0; }
};

template <class Arch = simd::default_arch>
class CloudServer {
 public:
  using Clock = std::chrono::steady_clock;

  // Validate the options, bind every endpoint and start the workers. Clients may connect
  // as soon as this returns; requests are served once run() is called.
  static io::Result<std::unique_ptr<CloudServer>> create(io::LoadedModel<Arch> model, ServerOptions opt) {
    if (!model.classifier)
      return io::fail(Error::unsupported, "the cloud serves classifier models (resnet_cifar, mobilenet_v2); '" +
                                              model.info.arch + "' is not one");
    if (opt.workers < 1 || opt.max_batch < 1 || !(opt.max_wait_ms >= 0) || opt.max_images_per_request < 1 ||
        opt.max_request_bytes < 1 || opt.bind.empty())
      return io::fail(Error::invalid_argument,
                      "server options: need workers >= 1, max_batch >= 1, max_wait_ms >= 0, limits >= 1 and an endpoint");
    if (opt.curve && !curve_available())
      return io::fail(Error::unsupported, "CURVE requested but this libzmq has no CURVE support (needs libsodium)");
    if (!opt.log) opt.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    std::unique_ptr<CloudServer> s(new CloudServer(std::move(model), std::move(opt)));
    try {
      if (auto ok = s->open(); !ok) return ok.failure();
    } catch (const zmq::error_t& e) {
      return io::fail(Error::io_error, std::string("cloud server: ") + e.what());
    }
    return s;
  }

  ~CloudServer() {
    shutdown();
    if (wake_fd_ >= 0) ::close(wake_fd_);  // only here: request_stop() may still be called until destruction
  }
  CloudServer(const CloudServer&) = delete;
  CloudServer& operator=(const CloudServer&) = delete;

  // The endpoints as bound (an ephemeral "tcp://127.0.0.1:*" shows its port).
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  // After run(): true when a second stop request cut the drain short.
  bool aborted() const { return abort_; }
  std::string curve_public_key() const { return curve_public_; }

  // Serve until a stop is requested; then drain (answer every accepted request), close and
  // return the run's counters. Call once.
  ServerCounters run() {
    opt_.log(startup_line());
    auto next_stat_line = Clock::now() + stat_interval();
    while (true) {
      const int stops = stop_requests_.load();
      if (stops >= 2) {
        opt_.log("edgenn-cloud: second stop request: exiting without draining (" +
                 std::to_string(batcher_.queued_requests()) + " queued requests, " + std::to_string(busy_) +
                 " batches running are not answered)");
        abort_ = true;
        break;
      }
      if (stops >= 1 && !draining_) {
        draining_ = true;
        opt_.log("edgenn-cloud: stopping: no new requests; answering " + std::to_string(batcher_.queued_requests()) +
                 " queued requests and " + std::to_string(busy_) + " running batches");
      }
      dispatch();
      if (draining_ && batcher_.empty() && busy_ == 0) break;

      const auto now = Clock::now();
      auto wake = now + std::chrono::seconds(1);
      if (!batcher_.empty() && busy_ < opt_.workers) wake = std::min(wake, draining_ ? now : batcher_.deadline());
      if (opt_.stats_interval_s > 0) wake = std::min(wake, next_stat_line);
      poll_sockets(items_, poll_timeout_ms(now, wake, 1000));

      if (items_[kWakeItem].revents & ZMQ_POLLIN) {
        std::uint64_t v;
        while (::read(wake_fd_, &v, sizeof v) == sizeof v) {
        }
      }
      if (zap_ && (items_[kZapItem].revents & ZMQ_POLLIN)) serve_zap();
      if (items_[kDoneItem].revents & ZMQ_POLLIN) collect_done();
      if (items_[kRouterItem].revents & ZMQ_POLLIN) read_requests();
      if (opt_.stats_interval_s > 0 && Clock::now() >= next_stat_line) {
        opt_.log("edgenn-cloud: " + stat_line());
        next_stat_line = Clock::now() + stat_interval();
      }
    }
    shutdown();
    opt_.log("edgenn-cloud: stopped. " + stat_line());
    return counters_;
  }

  // Ask run() to drain and return; a second call makes it return at once without draining.
  // Async-signal-safe (an atomic and a write to an eventfd), so signal handlers may call it.
  void request_stop() {
    stop_requests_.fetch_add(1);
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t w = ::write(wake_fd_, &one, sizeof one);
  }

  // Snapshot of the stats reply body (I/O thread only: call from run()'s thread or after it).
  nlohmann::json stats_json() const {
    nlohmann::json errors = nlohmann::json::object();
    for (int c = 1; c < kNumErrorCodes; ++c)
      if (counters_.errors[std::size_t(c)]) errors[error_code_name(ErrorCode(c))] = counters_.errors[std::size_t(c)];
    const auto& info = model_.info;
    nlohmann::json curve = {{"enabled", bool(opt_.curve)}, {"authorized_keys", nullptr}};
    if (opt_.curve && opt_.curve->authenticate) curve["authorized_keys"] = authorized_.size();
    return {
        {"server", "edgenn-cloud"},
        {"edgenn_version", edgenn::version()},
        {"protocol_version", kProtocolVersion},
        {"state", draining_ ? "draining" : "serving"},
        {"uptime_s", std::chrono::duration<double>(Clock::now() - started_).count()},
        {"model",
         {{"path", opt_.model_label},
          {"arch", info.arch},
          {"num_classes", model_.classifier->num_classes()},
          {"classes", info.classes},
          {"input",
           {{"height", info.input.height},
            {"width", info.input.width},
            {"channels", info.input.channels},
            {"mean", info.input.mean},
            {"std", info.input.std}}}}},
        {"workers", opt_.workers},
        {"batching", {{"max_batch", opt_.max_batch}, {"max_wait_ms", opt_.max_wait_ms}}},
        {"limits",
         {{"max_request_bytes", opt_.max_request_bytes},
          {"max_images_per_request", opt_.max_images_per_request},
          {"max_queue_images", opt_.max_queue_images},
          {"max_frame_bytes", max_frame_bytes()}}},
        {"curve", curve},
        {"requests", counters_.requests},
        {"retries", counters_.retries},
        {"images", counters_.images},
        {"batches", counters_.batches},
        {"mean_batch_size", counters_.mean_batch_size()},
        {"max_batch_size", counters_.max_batch_size},
        {"mean_queue_ms", counters_.requests ? counters_.queue_ms_sum / double(counters_.requests) : 0.0},
        {"mean_compute_ms", counters_.batches ? counters_.compute_ms_sum / double(counters_.batches) : 0.0},
        {"replies", counters_.replies},
        {"replies_dropped", counters_.replies_dropped},
        {"errors", errors},
        {"dropped_messages", counters_.dropped_messages},
        {"auth_denied", counters_.auth_denied},
        {"stats_requests", counters_.stats_requests},
        {"queue", {{"requests", batcher_.queued_requests()}, {"images", batcher_.queued_images()}}},
        {"busy_workers", busy_},
    };
  }

 private:
  // An accepted classify request, from arrival to reply.
  struct Pending {
    zmq::message_t peer;     // ROUTER routing id
    bool delimiter = false;  // REQ envelope: echo the empty frame
    std::uint64_t id = 0;
    DType dtype = DType::uint8;
    zmq::message_t payload;  // the request's images, zero-copy from the socket
  };
  using Batcher = DynamicBatcher<Pending>;

  struct Batch {
    std::vector<typename Batcher::Queued> items;
    int images = 0;
    Clock::time_point dispatched;
    std::vector<float> logits;
    Status status;
    double compute_ms = 0;
  };

  static constexpr std::size_t kRouterItem = 0, kDoneItem = 1, kWakeItem = 2, kZapItem = 3;

  CloudServer(io::LoadedModel<Arch> model, ServerOptions opt)
      : model_(std::move(model)),
        opt_(std::move(opt)),
        batcher_(opt_.max_batch, std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double, std::milli>(opt_.max_wait_ms))),
        started_(Clock::now()),
        last_log_second_(started_) {
    limits_.height = model_.info.input.height;
    limits_.width = model_.info.input.width;
    limits_.channels = model_.info.input.channels;
    limits_.max_images = opt_.max_images_per_request;
    limits_.max_request_bytes = opt_.max_request_bytes;
  }

  std::uint64_t max_frame_bytes() const {
    return std::max(2 * opt_.max_request_bytes, opt_.max_request_bytes + (std::uint64_t(64) << 10));
  }
  Clock::duration stat_interval() const {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt_.stats_interval_s));
  }

  io::Outcome open() {
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) return io::fail(Error::io_error, "cloud server: eventfd failed");
    ctx_ = std::make_unique<zmq::context_t>(1);

    // The ZAP handler must exist before the ROUTER accepts a CURVE handshake.
    if (opt_.curve) {
      auto pub = curve_public_from_secret(opt_.curve->secret_key);
      if (!pub) return io::fail(Error::invalid_argument, "CURVE secret key: " + pub.error());
      curve_public_ = *pub;
      if (opt_.curve->authenticate) {
        for (const std::string& k : opt_.curve->authorized_keys) {
          if (!is_z85_key(k)) return io::fail(Error::invalid_argument, "authorised key '" + k + "' is not a Z85 CURVE key");
          unsigned char raw[32];
          zmq_z85_decode(raw, k.c_str());
          authorized_.insert(std::string(reinterpret_cast<const char*>(raw), 32));
        }
        zap_ = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::rep);
        zap_->set(zmq::sockopt::linger, 0);
        zap_->bind("inproc://zeromq.zap.01");
      }
    }

    router_ = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::router);
    router_->set(zmq::sockopt::linger, 0);
    router_->set(zmq::sockopt::router_mandatory, 1);  // learn (and count) replies to vanished clients
    router_->set(zmq::sockopt::maxmsgsize, std::int64_t(max_frame_bytes()));
    router_->set(zmq::sockopt::sndhwm, 100000);
    router_->set(zmq::sockopt::rcvhwm, 100000);
    if (opt_.curve) {
      router_->set(zmq::sockopt::curve_server, 1);
      router_->set(zmq::sockopt::curve_secretkey, opt_.curve->secret_key);
      router_->set(zmq::sockopt::zap_domain, "edgenn");
    }
    for (const std::string& ep : opt_.bind) {
      try {
        router_->bind(ep);
      } catch (const zmq::error_t& e) {
        return io::fail(Error::io_error, "cannot bind " + ep + ": " + e.what());
      }
      endpoints_.push_back(router_->get(zmq::sockopt::last_endpoint));
    }

    done_endpoint_ = "inproc://edgenn-cloud-done-" + std::to_string(reinterpret_cast<std::uintptr_t>(this));
    done_pull_ = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::pull);
    done_pull_->set(zmq::sockopt::linger, 0);
    done_pull_->bind(done_endpoint_);

    items_ = {zmq_pollitem_t{router_->handle(), 0, ZMQ_POLLIN, 0},
              zmq_pollitem_t{done_pull_->handle(), 0, ZMQ_POLLIN, 0}, zmq_pollitem_t{nullptr, wake_fd_, ZMQ_POLLIN, 0}};
    if (zap_) items_.push_back(zmq_pollitem_t{zap_->handle(), 0, ZMQ_POLLIN, 0});

    for (int w = 0; w < opt_.workers; ++w) workers_.emplace_back([this] { worker_loop(); });
    return io::success();
  }

  std::string startup_line() const {
    std::string eps;
    for (const auto& e : endpoints_) eps += (eps.empty() ? "" : ", ") + e;
    const auto& in = model_.info.input;
    char batching[96];
    std::snprintf(batching, sizeof batching, "up to %d images or %.3g ms", opt_.max_batch, opt_.max_wait_ms);
    std::string curve = "off";
    if (opt_.curve)
      curve = "on (server key " + curve_public_ + ", " +
              (opt_.curve->authenticate ? std::to_string(authorized_.size()) + " authorised client keys" : "any client key") +
              ")";
    return "edgenn-cloud: listening on " + eps + " | model " + opt_.model_label + " (" + model_.info.arch + ", " +
           std::to_string(model_.classifier->num_classes()) + " classes, input " + std::to_string(in.height) + "x" +
           std::to_string(in.width) + "x" + std::to_string(in.channels) + ") | workers " + std::to_string(opt_.workers) +
           " | batching " + batching + " | CURVE " + curve;
  }

  std::string stat_line() const {
    char buf[512];
    const double up = std::chrono::duration<double>(Clock::now() - started_).count();
    std::snprintf(buf, sizeof buf,
                  "[%.0f s] %llu requests, %llu images in %llu batches (mean %.2f), %llu error replies, "
                  "%llu replies dropped, queue %zu, busy workers %d",
                  up, (unsigned long long)counters_.requests, (unsigned long long)counters_.images,
                  (unsigned long long)counters_.batches, counters_.mean_batch_size(),
                  (unsigned long long)counters_.error_replies(), (unsigned long long)counters_.replies_dropped,
                  batcher_.queued_requests(), busy_);
    return buf;
  }

  // Lines about refused messages and denied clients: a peer flooding garbage must not flood
  // the log, so at most log_lines_per_second are printed and the rest counted.
  void log_limited(const std::string& line) {
    const auto now = Clock::now();
    if (now - last_log_second_ >= std::chrono::seconds(1)) {
      if (suppressed_ > 0) opt_.log("edgenn-cloud: (" + std::to_string(suppressed_) + " similar lines suppressed)");
      suppressed_ = 0;
      lines_this_second_ = 0;
      last_log_second_ = now;
    }
    if (lines_this_second_ < opt_.log_lines_per_second) {
      ++lines_this_second_;
      opt_.log(line);
    } else {
      ++suppressed_;
    }
  }

  // --- replies -----------------------------------------------------------------------------

  void send_reply(const zmq::message_t& peer, bool delimiter, const Header& h, const void* payload, std::size_t bytes) {
    std::vector<zmq::message_t> frames;
    frames.emplace_back(peer.data(), peer.size());
    if (delimiter) frames.emplace_back();
    const HeaderBytes hb = encode_header(h);
    frames.emplace_back(hb.data(), hb.size());
    frames.emplace_back(payload, bytes);
    int err = 0;
    if (send_message(*router_, frames, /*dontwait=*/true, &err)) {
      ++counters_.replies;
    } else {
      ++counters_.replies_dropped;
      log_limited("edgenn-cloud: reply to peer " + hex_bytes(peer.data(), peer.size()) + " (request id " +
                  std::to_string(h.request_id) + ") dropped: " +
                  (err == EHOSTUNREACH ? "client disconnected" : zmq_strerror(err)));
    }
  }

  void send_error(const zmq::message_t& peer, bool delimiter, std::uint64_t id, ErrorCode code, const std::string& why) {
    ++counters_.errors[std::size_t(code)];
    log_limited("edgenn-cloud: refused a message from peer " + hex_bytes(peer.data(), peer.size()) + " (request id " +
                std::to_string(id) + "): " + error_code_name(code) + ": " + why);
    const std::string text = clip_error_message(why);
    send_reply(peer, delimiter, error_reply_header(id, code, text.size()), text.data(), text.size());
  }

  // --- requests ----------------------------------------------------------------------------

  void read_requests() {
    std::vector<zmq::message_t> frames;
    std::size_t total = 0;
    // Bounded per poll round so finished batches and wake-ups are not starved by a flood.
    for (int k = 0; k < 1024 && recv_message(*router_, frames, total); ++k) handle_message(frames, total);
  }

  void handle_message(std::vector<zmq::message_t>& frames, std::size_t total) {
    if (frames.empty()) return;
    zmq::message_t& peer = frames[0];
    if (total < 2) {  // a ROUTER always adds the routing id; a bare id carries nothing
      ++counters_.dropped_messages;
      log_limited("edgenn-cloud: dropped an empty message from peer " + hex_bytes(peer.data(), peer.size()));
      return;
    }
    std::size_t first = 1;
    const bool delimiter = frames[1].size() == 0;
    if (delimiter) first = 2;
    const std::size_t body = total - first;
    // Read the header (when there is one) first, so even a frame-count error can echo the id.
    Decoded d;
    if (body >= 1) d = decode_header(frames[first].data(), frames[first].size());
    const std::uint64_t id = d.id_known ? d.header.request_id : 0;
    if (body != 2) {
      send_error(peer, delimiter, id, ErrorCode::bad_frames,
                 "expected 2 frames (header, payload), got " + std::to_string(body));
      return;
    }
    if (!d.ok()) {
      send_error(peer, delimiter, id, d.check.error, d.check.detail);
      return;
    }
    zmq::message_t& payload = frames[first + 1];
    const Check c = validate_request(d.header, payload.size(), limits_);
    if (!c) {
      send_error(peer, delimiter, id, c.error, c.detail);
      return;
    }
    if (d.header.type == MessageType::stats_request) {
      ++counters_.stats_requests;
      const std::string text = stats_json().dump();
      send_reply(peer, delimiter, stats_reply_header(id, text.size()), text.data(), text.size());
      return;
    }
    const int n = int(d.header.dims[0]);
    if (draining_) {
      send_error(peer, delimiter, id, ErrorCode::shutting_down, "the server is shutting down");
      return;
    }
    if (batcher_.queued_images() + std::uint64_t(n) > opt_.max_queue_images) {
      send_error(peer, delimiter, id, ErrorCode::overloaded,
                 "queue full (" + std::to_string(batcher_.queued_images()) + " images waiting)");
      return;
    }
    ++counters_.requests;
    if (d.header.flags & flags::retry) ++counters_.retries;
    Pending p;
    p.peer = std::move(peer);
    p.delimiter = delimiter;
    p.id = id;
    p.dtype = d.header.dtype;
    p.payload = std::move(payload);
    batcher_.push(std::move(p), n, Clock::now());
  }

  // --- batches -----------------------------------------------------------------------------

  void dispatch() {
    const auto now = Clock::now();
    while (busy_ < opt_.workers && batcher_.due(now, draining_)) {
      auto b = std::make_unique<Batch>();
      b->items = batcher_.take();
      b->dispatched = now;
      for (const auto& q : b->items) {
        b->images += q.images;
        counters_.queue_ms_sum += std::chrono::duration<double, std::milli>(now - q.arrival).count();
      }
      ++busy_;
      {
        std::lock_guard<std::mutex> lk(jobs_mu_);
        jobs_.push_back(std::move(b));
      }
      jobs_cv_.notify_one();
    }
  }

  void worker_loop() {
    zmq::socket_t notify(*ctx_, zmq::socket_type::push);
    notify.set(zmq::sockopt::linger, 0);
    notify.connect(done_endpoint_);
    ModelRunner<Arch> runner(*model_.classifier, model_.info.input, opt_.max_batch);
    const int classes = runner.num_classes();
    std::vector<ImageBlock> blocks;
    for (;;) {
      std::unique_ptr<Batch> b;
      {
        std::unique_lock<std::mutex> lk(jobs_mu_);
        jobs_cv_.wait(lk, [&] { return stop_workers_ || !jobs_.empty(); });
        if (stop_workers_) break;
        b = std::move(jobs_.front());
        jobs_.pop_front();
      }
      const auto t0 = Clock::now();
      blocks.clear();
      for (const auto& q : b->items) blocks.push_back(ImageBlock{q.item.payload.data(), q.item.dtype, q.images});
      b->logits.resize(std::size_t(b->images) * std::size_t(classes));
      b->status = runner.run(blocks.data(), blocks.size(), b->logits.data());
      b->compute_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      {
        std::lock_guard<std::mutex> lk(done_mu_);
        done_.push_back(std::move(b));
      }
      const char byte = 0;
      (void)notify.send(zmq::const_buffer(&byte, 1), zmq::send_flags::none);
    }
  }

  void collect_done() {
    zmq::message_t m;
    while (true) {
      zmq::recv_result_t got;
      try {
        got = done_pull_->recv(m, zmq::recv_flags::dontwait);
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        throw;
      }
      if (!got) break;
    }
    std::deque<std::unique_ptr<Batch>> done;
    {
      std::lock_guard<std::mutex> lk(done_mu_);
      done.swap(done_);
    }
    const int classes = model_.classifier->num_classes();
    for (auto& b : done) {
      --busy_;
      ++counters_.batches;
      counters_.compute_ms_sum += b->compute_ms;
      counters_.max_batch_size = std::max<std::uint64_t>(counters_.max_batch_size, std::uint64_t(b->images));
      std::size_t row = 0;
      for (auto& q : b->items) {
        const Pending& p = q.item;
        if (b->status) {
          counters_.images += std::uint64_t(q.images);
          send_reply(p.peer, p.delimiter, classify_reply_header(p.id, std::uint32_t(q.images), std::uint32_t(classes)),
                     b->logits.data() + row * std::size_t(classes),
                     std::size_t(q.images) * std::size_t(classes) * sizeof(float));
        } else {
          send_error(p.peer, p.delimiter, p.id, ErrorCode::internal, std::string("model failed: ") + b->status.message());
        }
        row += std::size_t(q.images);
      }
    }
  }

  // --- ZAP (RFC 27): CURVE client keys against the authorised list -------------------------

  void serve_zap() {
    std::vector<zmq::message_t> req;
    std::size_t total = 0;
    while (recv_message(*zap_, req, total, 16)) {
      auto text = [&](std::size_t i) { return i < req.size() ? req[i].to_string() : std::string(); };
      const std::string version = text(0), request_id = text(1), address = text(3), mechanism = text(5);
      bool allow = false;
      std::string key_z85 = "?";
      if (version == "1.0" && mechanism == "CURVE" && req.size() >= 7 && req[6].size() == 32) {
        allow = authorized_.count(req[6].to_string()) > 0;
        char z85[kZ85KeyChars + 1];
        if (zmq_z85_encode(z85, static_cast<const std::uint8_t*>(req[6].data()), 32)) key_z85 = z85;
      }
      if (!allow) {
        ++counters_.auth_denied;
        log_limited("edgenn-cloud: denied a " + (mechanism.empty() ? std::string("?") : mechanism) + " client from " +
                    address + " (key " + key_z85 + "): not in the authorised keys");
      }
      std::vector<zmq::message_t> rep;
      rep.emplace_back(std::string("1.0"));
      rep.emplace_back(request_id);
      rep.emplace_back(std::string(allow ? "200" : "400"));
      rep.emplace_back(std::string(allow ? "OK" : "client key not authorised"));
      rep.emplace_back(allow ? key_z85 : std::string());
      rep.emplace_back();
      send_message(*zap_, rep, /*dontwait=*/false);
    }
  }

  // --- shutdown ----------------------------------------------------------------------------

  void shutdown() {
    if (finished_) return;
    finished_ = true;
    {
      std::lock_guard<std::mutex> lk(jobs_mu_);
      stop_workers_ = true;
    }
    jobs_cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    // Closing with linger lets the last replies leave (drain); an abort drops them.
    if (router_) {
      router_->set(zmq::sockopt::linger, abort_ ? 0 : opt_.drain_linger_ms);
      router_->close();
    }
    if (done_pull_) done_pull_->close();
    if (zap_) zap_->close();
    if (ctx_) ctx_->close();  // waits for the lingering replies
  }

  io::LoadedModel<Arch> model_;
  ServerOptions opt_;
  RequestLimits limits_;
  Batcher batcher_;
  ServerCounters counters_;
  Clock::time_point started_;

  std::unique_ptr<zmq::context_t> ctx_;
  std::unique_ptr<zmq::socket_t> router_, done_pull_, zap_;
  std::vector<zmq_pollitem_t> items_;
  std::vector<std::string> endpoints_;
  std::string done_endpoint_, curve_public_;
  std::set<std::string> authorized_;  // raw 32-byte keys
  int wake_fd_ = -1;

  std::atomic<int> stop_requests_{0};
  bool draining_ = false, abort_ = false, finished_ = false;
  int busy_ = 0;

  std::vector<std::thread> workers_;
  std::mutex jobs_mu_, done_mu_;
  std::condition_variable jobs_cv_;
  std::deque<std::unique_ptr<Batch>> jobs_, done_;
  bool stop_workers_ = false;

  Clock::time_point last_log_second_;
  int lines_this_second_ = 0;
  std::uint64_t suppressed_ = 0;
};

}  // namespace edgenn::net
