// The edge–cloud hop end to end over loopback: the cloud server runs in-process on its own
// thread, edge clients (one thread each) talk to it over TCP or IPC. Covers concurrent
// clients (every reply equals the in-process model), dynamic batching, a server stopped or
// killed mid-run (exactly one result per request), malformed messages, overload, CURVE
// authentication, a client that connects before the server starts, and a lying cloud.
#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "edgenn/net.hpp"
#include "edgenn/runtime/batch_inference.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_net_e2e {

using namespace edgenn;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::string tmp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("edgenn_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

// A small synthetic classifier written to a file (the server loads it like real weights)
// plus a reference copy for the expected logits.
struct ModelFixture {
  std::string path = tmp_path("cloud_model.safetensors");
  io::LoadedModel<> ref;
  int h = 28, w = 28, c = 1, classes = 10;

  ModelFixture() {
    net::SyntheticModelSpec spec;
    spec.seed = 5;
    REQUIRE(net::write_synthetic_model(path, spec).ok());
    ref = load();
  }
  ~ModelFixture() { std::filesystem::remove(path); }

  io::LoadedModel<> load() const {
    auto m = io::load_model(path);
    REQUIRE_MESSAGE(m.ok(), m.error());
    return std::move(*m);
  }
  std::size_t pixels() const { return std::size_t(h) * w * c; }

  std::vector<unsigned char> images(int n, std::uint64_t seed) const {
    test::Rng rng(seed);
    std::vector<unsigned char> px(std::size_t(n) * pixels());
    for (auto& p : px) p = static_cast<unsigned char>(rng.uniform_int(0, 255));
    return px;
  }
  // Logits of the in-process model (the batch-inference path, independent of the server's).
  std::vector<float> expected(const unsigned char* px, int n) const {
    runtime::BatchClassifier<> bc(*ref.classifier, ref.info.input, 1, 7);
    std::vector<float> out(std::size_t(n) * classes);
    REQUIRE(bc.run(px, n, out.data()).is_ok());
    return out;
  }
};

float max_abs_diff(const float* a, const float* b, std::size_t n) {
  float m = 0;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}
constexpr float kLogitTolerance = 1e-4f;

// A cloud server on its own thread; log lines are captured.
class RunningServer {
 public:
  // The default endpoint is an ephemeral loopback port, so tests never collide with each
  // other or with a real server.
  RunningServer(io::LoadedModel<> model, net::ServerOptions opt, const std::string& endpoint = "tcp://127.0.0.1:*") {
    opt.bind = {endpoint};
    opt.model_label = "test model";
    opt.log_lines_per_second = 100000;
    opt.log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lk(mu_);
      lines_.push_back(line);
    };
    auto s = net::CloudServer<>::create(std::move(model), opt);
    REQUIRE_MESSAGE(s.ok(), s.error());
    server_ = std::move(*s);
    thread_ = std::thread([this] { counters_ = server_->run(); });
  }
  ~RunningServer() { stop(); }

  std::string endpoint() const { return server_->endpoints().front(); }
  std::string public_key() const { return server_->curve_public_key(); }

  // Graceful (drain), or abrupt: a second stop request at once skips the drain.
  net::ServerCounters stop(bool abrupt = false) {
    if (thread_.joinable()) {
      server_->request_stop();
      if (abrupt) server_->request_stop();
      thread_.join();
    }
    return counters_;
  }
  int log_lines_with(const std::string& needle) {
    std::lock_guard<std::mutex> lk(mu_);
    int n = 0;
    for (const auto& l : lines_) n += l.find(needle) != std::string::npos;
    return n;
  }
  std::string log_text() {
    std::lock_guard<std::mutex> lk(mu_);
    std::string all;
    for (const auto& l : lines_) all += l + "\n";
    return all;
  }

 private:
  std::unique_ptr<net::CloudServer<>> server_;
  std::thread thread_;
  net::ServerCounters counters_;
  std::mutex mu_;
  std::vector<std::string> lines_;
};

// One edge client's run: requests of `sizes[i]` images each, `window` in flight. Results are
// recorded per request, with how often each id came back (must be exactly once).
struct ClientRun {
  std::vector<unsigned char> images;
  std::vector<int> sizes, starts;
  std::vector<net::CloudResult> results;
  std::vector<int> times_answered;
  net::ClientCounters counters;
};

// Optional: `completed` counts answered requests; requests from index `gate_at` on are only
// sent once `gate` is set (the test controls what happens before and after).
ClientRun run_client(const net::ClientOptions& co, std::vector<unsigned char> images, std::vector<int> sizes,
                     const ModelFixture& mf, int window, std::atomic<int>* completed = nullptr,
                     const std::atomic<bool>* gate = nullptr, std::size_t gate_at = 0) {
  ClientRun run;
  run.images = std::move(images);
  run.sizes = std::move(sizes);
  int at = 0;
  for (int s : run.sizes) {
    run.starts.push_back(at);
    at += s;
  }
  run.results.resize(run.sizes.size());
  run.times_answered.assign(run.sizes.size(), 0);
  net::CloudClient client(co);
  std::map<std::uint64_t, std::size_t> index;
  std::size_t next = 0, done = 0;
  while (done < run.sizes.size()) {
    const bool gated = gate && next >= gate_at && !gate->load();
    if (gated && client.in_flight() == 0) std::this_thread::sleep_for(1ms);
    while (!gated && next < run.sizes.size() && int(client.in_flight()) < window) {
      if (gate && next >= gate_at && !gate->load()) break;
      const auto id = client.submit(run.images.data() + std::size_t(run.starts[next]) * mf.pixels(), run.sizes[next],
                                    mf.h, mf.w, mf.c);
      index[id] = next++;
    }
    for (auto& r : client.poll(gated ? 5ms : 1000ms)) {
      auto it = index.find(r.request_id);
      if (it == index.end()) continue;  // impossible: counted below as never answered
      const std::size_t k = it->second;
      if (++run.times_answered[k] == 1) {
        run.results[k] = std::move(r);
        ++done;
        if (completed) completed->fetch_add(1);
      }
    }
  }
  run.counters = client.counters();
  return run;
}

// Checks on the main thread: every request answered exactly once; every cloud answer equals
// the in-process model. Returns {answered by the cloud, fell back}.
std::pair<int, int> check_run(const ClientRun& run, const ModelFixture& mf) {
  int ok = 0, fell = 0;
  for (std::size_t k = 0; k < run.sizes.size(); ++k) {
    CHECK(run.times_answered[k] == 1);
    const net::CloudResult& r = run.results[k];
    if (!r.ok()) {
      ++fell;
      CHECK(r.logits.empty());
      CHECK_FALSE(r.detail.empty());
      continue;
    }
    ++ok;
    REQUIRE(r.images == run.sizes[k]);
    REQUIRE(r.classes == mf.classes);
    const auto want = mf.expected(run.images.data() + std::size_t(run.starts[k]) * mf.pixels(), run.sizes[k]);
    CHECK(max_abs_diff(r.logits.data(), want.data(), want.size()) <= kLogitTolerance);
  }
  return {ok, fell};
}

net::ClientOptions client_options(const std::string& endpoint, std::chrono::milliseconds timeout = 10000ms,
                                  int retries = 1) {
  net::ClientOptions co;
  co.endpoint = endpoint;
  co.timeout = timeout;
  co.retries = retries;
  co.expected_classes = 10;
  return co;
}

// A raw DEALER for sending hand-made (and broken) messages.
struct RawPeer {
  zmq::context_t ctx{1};
  zmq::socket_t sock{ctx, zmq::socket_type::dealer};
  explicit RawPeer(const std::string& ep, zmq::socket_type type = zmq::socket_type::dealer) : sock(ctx, type) {
    sock.set(zmq::sockopt::linger, 0);
    sock.connect(ep);
  }
  void send(const std::vector<std::string>& frames) {
    std::vector<zmq::message_t> msgs;
    for (const auto& f : frames) msgs.emplace_back(f.data(), f.size());
    REQUIRE(net::send_message(sock, msgs, false));
  }
  // The next reply (header decoded, payload as bytes), or nothing within `wait`.
  std::optional<std::pair<net::Header, std::string>> receive(std::chrono::milliseconds wait = 10000ms) {
    std::vector<zmq_pollitem_t> items{{sock.handle(), 0, ZMQ_POLLIN, 0}};
    const auto end = Clock::now() + wait;
    while (Clock::now() < end) {
      net::poll_sockets(items, net::poll_timeout_ms(Clock::now(), end, 1000));
      std::vector<zmq::message_t> frames;
      std::size_t total = 0;
      if (!net::recv_message(sock, frames, total)) continue;
      REQUIRE(total == 2);
      const net::Decoded d = net::decode_header(frames[0].data(), frames[0].size());
      REQUIRE(d.ok());
      return std::make_pair(d.header, frames[1].to_string());
    }
    return std::nullopt;
  }
};

std::string header_bytes(const net::Header& h) {
  const auto b = net::encode_header(h);
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

}  // namespace

TEST_CASE("cloud e2e: the synthetic test model tells images apart") {
  // Guards the other tests: if every image gave (nearly) the same logits, comparing replies
  // with the model would not notice swapped or misrouted rows.
  ModelFixture mf;
  const auto px = mf.images(8, 1);
  const auto out = mf.expected(px.data(), 8);
  float closest = 1e30f;
  for (int a = 0; a < 8; ++a)
    for (int b = a + 1; b < 8; ++b)
      closest = std::min(closest, max_abs_diff(&out[std::size_t(a) * 10], &out[std::size_t(b) * 10], 10));
  CHECK(closest > 20 * kLogitTolerance);
}

TEST_CASE("cloud e2e: concurrent edge clients each get the model's logits for their images") {
  ModelFixture mf;
  net::ServerOptions opt;
  opt.workers = 2;
  opt.max_batch = 16;
  opt.max_wait_ms = 1;
  RunningServer srv(mf.load(), opt);
  const int clients = 4, requests = 40;
  std::vector<ClientRun> runs(clients);
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t)
    threads.emplace_back([&, t] {
      std::vector<int> sizes;
      int total = 0;
      for (int i = 0; i < requests; ++i) {
        sizes.push_back(1 + (i + t) % 3);
        total += sizes.back();
      }
      runs[std::size_t(t)] = run_client(client_options(srv.endpoint()), mf.images(total, 100 + std::uint64_t(t)),
                                        sizes, mf, 4);
    });
  for (auto& th : threads) th.join();
  for (const auto& run : runs) {
    const auto [ok, fell] = check_run(run, mf);
    CHECK(ok == requests);
    CHECK(fell == 0);
    CHECK(run.counters.late_or_duplicate == 0);
  }
  const net::ServerCounters c = srv.stop();
  CHECK(c.requests == std::uint64_t(clients * requests));
  CHECK(c.replies == c.requests);
  CHECK(c.error_replies() == 0);
}

TEST_CASE("cloud e2e: the dynamic batcher batches concurrent requests") {
  ModelFixture mf;
  net::ServerOptions opt;
  opt.workers = 1;
  opt.max_batch = 32;
  opt.max_wait_ms = 20;
  RunningServer srv(mf.load(), opt);
  std::vector<std::thread> threads;
  std::vector<ClientRun> runs(4);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      runs[std::size_t(t)] = run_client(client_options(srv.endpoint()), mf.images(48, 7 + std::uint64_t(t)),
                                        std::vector<int>(48, 1), mf, 8);
    });
  for (auto& th : threads) th.join();
  for (const auto& run : runs) CHECK(check_run(run, mf).first == 48);
  net::CloudClient client(client_options(srv.endpoint()));
  auto stats = client.stats();
  REQUIRE_MESSAGE(stats.ok(), stats.error());
  MESSAGE("mean batch " << (*stats)["mean_batch_size"] << ", " << (*stats)["batches"] << " batches");
  CHECK((*stats)["requests"] == 4 * 48);
  CHECK((*stats)["mean_batch_size"].get<double>() > 1.0);
  CHECK((*stats)["max_batch_size"].get<int>() <= 32);
  CHECK((*stats)["batches"].get<int>() < 4 * 48);
}

TEST_CASE("cloud e2e: stats request describes the server and the model") {
  ModelFixture mf;
  net::ServerOptions opt;
  opt.workers = 3;
  opt.max_batch = 8;
  RunningServer srv(mf.load(), opt);
  net::CloudClient client(client_options(srv.endpoint()));
  const auto px = mf.images(2, 3);
  REQUIRE(client.classify(px.data(), 2, 28, 28, 1).ok());
  auto s = client.stats();
  REQUIRE_MESSAGE(s.ok(), s.error());
  const auto& j = *s;
  CHECK(j["server"] == "edgenn-cloud");
  CHECK(j["protocol_version"] == 1);
  CHECK(j["state"] == "serving");
  CHECK(j["model"]["num_classes"] == 10);
  CHECK(j["model"]["classes"].size() == 10);
  CHECK(j["model"]["input"]["height"] == 28);
  CHECK(j["model"]["input"]["channels"] == 1);
  CHECK(j["workers"] == 3);
  CHECK(j["batching"]["max_batch"] == 8);
  CHECK(j["curve"]["enabled"] == false);
  CHECK(j["requests"] == 1);
  CHECK(j["images"] == 2);
  CHECK(j["stats_requests"] == 1);
  for (const char* k : {"uptime_s", "mean_batch_size", "errors", "queue", "busy_workers", "limits", "replies_dropped"})
    CHECK_MESSAGE(j.contains(k), k);
}

TEST_CASE("cloud e2e: one request per image with a window, and already normalised float32 inputs") {
  ModelFixture mf;
  RunningServer srv(mf.load(), net::ServerOptions{});
  net::CloudClient client(client_options(srv.endpoint()));
  const auto px = mf.images(9, 31);
  const auto want = mf.expected(px.data(), 9);
  const auto stray = client.submit(px.data(), 1, 28, 28, 1);  // an earlier async request stays for poll()
  const auto each = client.classify_each(px.data(), 9, 28, 28, 1, 4);
  REQUIRE(each.size() == 9);
  for (int i = 0; i < 9; ++i) {
    REQUIRE_MESSAGE(each[std::size_t(i)].ok(), each[std::size_t(i)].describe());
    CHECK(max_abs_diff(each[std::size_t(i)].logits.data(), &want[std::size_t(i) * 10], 10) <= kLogitTolerance);
  }
  std::vector<net::CloudResult> later;
  while (later.empty()) later = client.poll(10000ms);
  REQUIRE(later.size() == 1);
  CHECK(later[0].request_id == stray);

  const io::InputSpec& in = mf.ref.info.input;
  std::vector<float> x(px.size());
  for (std::size_t i = 0; i < px.size(); ++i) x[i] = (float(px[i]) / 255.0f - in.mean[0]) / in.std[0];
  const auto r = client.wait(client.submit_normalized(x.data(), 9, 28, 28, 1));
  REQUIRE_MESSAGE(r.ok(), r.describe());
  CHECK(max_abs_diff(r.logits.data(), want.data(), want.size()) <= kLogitTolerance);
  CHECK(client.in_flight() == 0);
  CHECK_FALSE(client.wait(r.request_id).ok());  // already collected: answered at once, never a hang
}

namespace {

// Clients keep requests in flight while the server is stopped (gracefully or abruptly)
// after `stop_after` answers: every request still gets exactly one result.
void stop_mid_run(bool abrupt) {
  ModelFixture mf;
  // Every batch waits max_wait (the 60 requests in flight never fill max_batch), so when the
  // first 60 answers are in, the next 60 requests sit in the server's queue for a while:
  // that is when the server is stopped. Requests from index 40 on are sent only after the
  // stop, so some requests always meet a dead server.
  net::ServerOptions opt;
  opt.workers = 2;
  opt.max_batch = 64;
  opt.max_wait_ms = 300;
  RunningServer srv(mf.load(), opt);
  const int clients = 3, requests = 50, window = 20;
  std::atomic<int> completed{0};
  std::atomic<bool> stopped{false};
  std::vector<ClientRun> runs(clients);
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t)
    threads.emplace_back([&, t] {
      runs[std::size_t(t)] = run_client(client_options(srv.endpoint(), 1500ms, 0), mf.images(requests, 50 + std::uint64_t(t)),
                                        std::vector<int>(requests, 1), mf, window, &completed, &stopped, 40);
    });
  const auto give_up = Clock::now() + 120s;
  while (completed.load() < clients * window && Clock::now() < give_up) std::this_thread::sleep_for(1ms);
  const net::ServerCounters c = srv.stop(abrupt);
  stopped = true;
  for (auto& th : threads) th.join();

  int ok = 0, fell = 0;
  for (const auto& run : runs) {
    const auto [o, f] = check_run(run, mf);
    ok += o;
    fell += f;
    for (const auto& r : run.results)
      if (!r.ok())
        CHECK_MESSAGE((r.fallback == net::Fallback::timeout ||
                       (r.fallback == net::Fallback::error_reply && r.server_error == net::ErrorCode::shutting_down)),
                      r.describe());
  }
  MESSAGE(std::string(abrupt ? "abrupt" : "graceful") << " stop: " << ok << " answered by the cloud, " << fell << " fell back; server: "
                                           << c.requests << " accepted, " << c.replies << " replies");
  CHECK(ok + fell == clients * requests);
  CHECK(ok >= clients * window);                 // answered before the stop
  CHECK(fell >= clients * (requests - 40));      // sent after the stop
  if (!abrupt) {
    // Everything the server accepted was answered, and the answers reached the clients.
    CHECK(c.replies == c.requests + c.error_replies());
    CHECK(c.replies_dropped == 0);
    CHECK(std::uint64_t(ok) == c.requests);
  }
}

}  // namespace

TEST_CASE("cloud e2e: server stopped mid-run (graceful): exactly one result per request") { stop_mid_run(false); }

TEST_CASE("cloud e2e: server killed mid-run (no drain): exactly one result per request, the rest fall back") {
  stop_mid_run(true);
}

TEST_CASE("cloud e2e: malformed messages get error replies and the server keeps serving") {
  ModelFixture mf;
  net::ServerOptions opt;
  opt.workers = 1;
  opt.max_images_per_request = 8;
  opt.max_request_bytes = 16 * 784;
  RunningServer srv(mf.load(), opt);
  RawPeer peer(srv.endpoint());
  const std::string img(784, '\x40');
  const net::Header good = net::classify_request_header(42, net::DType::uint8, 1, 28, 28, 1);
  auto patched = [&](std::size_t at, unsigned char v) {
    std::string h = header_bytes(good);
    h[at] = static_cast<char>(v);
    return h;
  };
  auto with = [&](auto edit) {
    net::Header h = good;
    edit(h);
    return header_bytes(h);
  };
  struct Case {
    const char* what;
    std::vector<std::string> frames;
    net::ErrorCode code;
    std::uint64_t id;
  };
  std::vector<Case> cases = {
      {"one frame", {header_bytes(good)}, net::ErrorCode::bad_frames, 42},
      {"three frames", {header_bytes(good), img, "x"}, net::ErrorCode::bad_frames, 42},
      {"short header", {"garbage", img}, net::ErrorCode::bad_header, 0},
      {"garbage bytes", {std::string(48, '\x7f'), std::string(100, '\x01')}, net::ErrorCode::bad_header, 0},
      {"bad magic", {patched(1, 'X'), img}, net::ErrorCode::bad_header, 0},
      {"version 2", {patched(net::offsets::version, 2), img}, net::ErrorCode::unsupported_version, 0},
      {"unknown type", {patched(net::offsets::type, 9), img}, net::ErrorCode::unknown_type, 42},
      {"a reply sent to the server",
       {header_bytes(net::classify_reply_header(42, 1, 10)), std::string(40, '\0')},
       net::ErrorCode::unknown_type,
       42},
      {"reserved byte", {patched(net::offsets::reserved + 1, 1), img}, net::ErrorCode::bad_header, 42},
      {"unknown flag", {patched(net::offsets::flags, 0x10), img}, net::ErrorCode::bad_header, 42},
      {"unknown dtype", {patched(net::offsets::dtype, 9), img}, net::ErrorCode::bad_dtype, 42},
      {"text dtype", {with([](net::Header& h) { h.dtype = net::DType::utf8; }), img}, net::ErrorCode::bad_dtype, 42},
      {"payload shorter than the header says", {header_bytes(good), img.substr(0, 700)}, net::ErrorCode::bad_size, 42},
      {"float32 dims, uint8-sized payload",
       {with([](net::Header& h) {
          h.dtype = net::DType::float32;
          h.payload_bytes = 784;
        }),
        img},
       net::ErrorCode::bad_size,
       42},
      {"N = 0", {with([](net::Header& h) { h.dims[0] = 0; h.payload_bytes = 0; }), ""}, net::ErrorCode::bad_count, 42},
      {"N above the limit",
       {header_bytes(net::classify_request_header(42, net::DType::uint8, 9, 28, 28, 1)), std::string(9 * 784, '\0')},
       net::ErrorCode::bad_count,
       42},
      {"wrong image shape",
       {header_bytes(net::classify_request_header(42, net::DType::uint8, 1, 32, 24, 1)), std::string(32 * 24, '\0')},
       net::ErrorCode::bad_shape,
       42},
      {"oversized payload",
       {header_bytes(net::classify_request_header(42, net::DType::uint8, 17, 28, 28, 1)), std::string(17 * 784, '\0')},
       net::ErrorCode::too_large,
       42},
      {"stats request with a payload", {header_bytes(net::stats_request_header(42)), "x"}, net::ErrorCode::bad_size, 42},
  };
  for (const auto& c : cases) {
    const std::string what = c.what;
    CAPTURE(what);
    peer.send(c.frames);
    auto reply = peer.receive();
    REQUIRE(reply.has_value());
    CHECK(reply->first.type == net::MessageType::error_reply);
    CHECK(reply->first.error == c.code);
    CHECK(reply->first.request_id == c.id);
    CHECK(reply->first.dtype == net::DType::utf8);
    CHECK_FALSE(reply->second.empty());
  }
  // Random garbage: error replies, never a crash.
  test::Rng rng(77);
  for (int i = 0; i < 20; ++i) {
    std::vector<std::string> frames(std::size_t(rng.uniform_int(1, 4)));
    for (auto& f : frames) {
      f.resize(std::size_t(rng.uniform_int(1, 80)));
      for (auto& ch : f) ch = static_cast<char>(rng.uniform_int(0, 255));
    }
    peer.send(frames);
    auto reply = peer.receive();
    REQUIRE(reply.has_value());
    CHECK(reply->first.type == net::MessageType::error_reply);
  }
  const int refused = int(cases.size()) + 20;
  CHECK(srv.log_lines_with("refused a message") == refused);

  // Still serving: a valid request from the same peer is answered correctly.
  peer.send({header_bytes(good), img});
  auto reply = peer.receive();
  REQUIRE(reply.has_value());
  REQUIRE(reply->first.type == net::MessageType::classify_reply);
  CHECK(reply->first.request_id == 42);
  const auto want = mf.expected(reinterpret_cast<const unsigned char*>(img.data()), 1);
  CHECK(max_abs_diff(reinterpret_cast<const float*>(reply->second.data()), want.data(), 10) <= kLogitTolerance);

  // A frame beyond the transport limit: ZeroMQ drops that connection, there is no reply,
  // and the server keeps serving others.
  RawPeer huge(srv.endpoint());
  huge.send({header_bytes(good), std::string(200000, '\0')});
  CHECK_FALSE(huge.receive(300ms).has_value());
  RawPeer fresh(srv.endpoint());
  fresh.send({header_bytes(good), img});
  auto again = fresh.receive();
  REQUIRE(again.has_value());
  CHECK(again->first.type == net::MessageType::classify_reply);

  // A REQ socket works too (the server echoes its empty delimiter frame).
  RawPeer req(srv.endpoint(), zmq::socket_type::req);
  req.send({header_bytes(good), img});
  auto via_req = req.receive();
  REQUIRE(via_req.has_value());
  CHECK(via_req->first.type == net::MessageType::classify_reply);

  const net::ServerCounters c = srv.stop();
  CHECK(c.error_replies() == std::uint64_t(refused));
  CHECK(c.requests == 3);
}

TEST_CASE("cloud e2e: a full queue answers 'overloaded' instead of growing without bound") {
  ModelFixture mf;
  net::ServerOptions opt;
  opt.workers = 1;
  opt.max_batch = 64;
  opt.max_wait_ms = 500;  // the queue fills while the batch waits
  opt.max_queue_images = 4;
  RunningServer srv(mf.load(), opt);
  net::CloudClient client(client_options(srv.endpoint()));
  const auto px = mf.images(5, 9);
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(client.submit(px.data() + std::size_t(i) * 784, 1, 28, 28, 1));
  std::map<std::uint64_t, net::CloudResult> got;
  while (got.size() < 5)
    for (auto& r : client.poll(2000ms)) got[r.request_id] = std::move(r);
  int overloaded = 0;
  for (auto& [id, r] : got) {
    if (!r.ok()) {
      CHECK(r.fallback == net::Fallback::error_reply);
      CHECK(r.server_error == net::ErrorCode::overloaded);
      ++overloaded;
    }
  }
  CHECK(overloaded == 1);
  CHECK_FALSE(got[ids.back()].ok());
}

TEST_CASE("cloud e2e: CURVE: an unauthorised client gets nothing, an authorised one is served") {
  if (!net::curve_available()) {
    MESSAGE("libzmq without CURVE: skipped");
    return;
  }
  ModelFixture mf;
  auto server_keys = net::generate_curve_keypair(), good = net::generate_curve_keypair(),
       bad = net::generate_curve_keypair();
  REQUIRE(server_keys.ok());
  net::ServerOptions opt;
  net::CurveServerOptions curve;
  curve.secret_key = server_keys->secret_key;
  curve.authenticate = true;
  curve.authorized_keys = {good->public_key};
  opt.curve = curve;
  RunningServer srv(mf.load(), opt);
  CHECK(srv.public_key() == server_keys->public_key);
  const auto px = mf.images(1, 4);
  const auto want = mf.expected(px.data(), 1);

  auto keyed = [&](const net::CurveKeyPair& kp, const std::string& server_pub, std::chrono::milliseconds timeout) {
    net::ClientOptions co = client_options(srv.endpoint(), timeout, 0);
    co.curve = net::CurveClientOptions{server_pub, kp.public_key, kp.secret_key};
    return co;
  };
  {
    net::CloudClient client(keyed(*good, server_keys->public_key, 10000ms));
    const auto r = client.classify(px.data(), 1, 28, 28, 1);
    REQUIRE_MESSAGE(r.ok(), r.describe());
    CHECK(max_abs_diff(r.logits.data(), want.data(), 10) <= kLogitTolerance);
  }
  {
    net::CloudClient client(keyed(*bad, server_keys->public_key, 3000ms));
    const auto t0 = Clock::now();
    const auto r = client.classify(px.data(), 1, 28, 28, 1);
    CHECK_FALSE(r.ok());
    CHECK(r.logits.empty());
    // libzmq reports the refused handshake, so the client falls back without waiting.
    CHECK_MESSAGE(r.fallback == net::Fallback::unauthenticated, r.describe());
    CHECK(client.counters().auth_failures >= 1);
    MESSAGE("unauthorised client fell back after " << std::chrono::duration<double, std::milli>(Clock::now() - t0).count()
                                                   << " ms: " << r.describe());
  }
  {
    // The right keypair but the wrong server key: the handshake cannot complete.
    net::CloudClient client(keyed(*good, bad->public_key, 400ms));
    const auto r = client.classify(px.data(), 1, 28, 28, 1);
    CHECK_FALSE(r.ok());
    CHECK(r.fallback == net::Fallback::timeout);
  }
  {
    // No CURVE at all against a CURVE server.
    net::CloudClient client(client_options(srv.endpoint(), 400ms, 0));
    const auto r = client.classify(px.data(), 1, 28, 28, 1);
    CHECK_FALSE(r.ok());
    CHECK(r.fallback == net::Fallback::timeout);
  }
  net::CloudClient client(keyed(*good, server_keys->public_key, 10000ms));
  auto stats = client.stats();
  REQUIRE_MESSAGE(stats.ok(), stats.error());
  CHECK((*stats)["curve"]["enabled"] == true);
  CHECK((*stats)["curve"]["authorized_keys"] == 1);
  CHECK((*stats)["auth_denied"].get<int>() >= 1);
  CHECK((*stats)["requests"] == 1);  // only the authorised client's request reached the model
  CHECK(srv.log_lines_with("denied a CURVE client") >= 1);
}

TEST_CASE("cloud e2e: CURVE without an authorised-keys list accepts any client key (encryption only)") {
  if (!net::curve_available()) return;
  ModelFixture mf;
  auto server_keys = net::generate_curve_keypair(), any = net::generate_curve_keypair();
  net::ServerOptions opt;
  opt.curve = net::CurveServerOptions{server_keys->secret_key, false, {}};
  RunningServer srv(mf.load(), opt);
  net::ClientOptions co = client_options(srv.endpoint());
  co.curve = net::CurveClientOptions{server_keys->public_key, any->public_key, any->secret_key};
  net::CloudClient client(co);
  const auto px = mf.images(1, 12);
  const auto r = client.classify(px.data(), 1, 28, 28, 1);
  CHECK_MESSAGE(r.ok(), r.describe());
}

TEST_CASE("cloud e2e: a client connected before the server starts is answered once it is up and reconnects after a restart") {
  ModelFixture mf;
  const std::string ep = "ipc://" + tmp_path("cloud.ipc");
  net::CloudClient client(client_options(ep, 10000ms, 1));
  const auto px = mf.images(1, 21);
  const auto want = mf.expected(px.data(), 1);
  const auto id = client.submit(px.data(), 1, 28, 28, 1);
  CHECK(client.poll(200ms).empty());  // nobody there yet: still waiting, not failed
  CHECK(client.in_flight() == 1);
  net::ServerOptions opt;
  {
    RunningServer srv(mf.load(), opt, ep);
    std::vector<net::CloudResult> got;
    while (got.empty()) got = client.poll(10000ms);
    REQUIRE(got.size() == 1);
    CHECK(got[0].request_id == id);
    REQUIRE_MESSAGE(got[0].ok(), got[0].describe());
    CHECK(got[0].attempts == 1);  // queued by ZeroMQ and delivered on connect, no resend needed
    CHECK(max_abs_diff(got[0].logits.data(), want.data(), 10) <= kLogitTolerance);
  }
  // The cloud is down: a short-timeout client falls back after its attempts...
  net::CloudClient impatient(client_options(ep, 200ms, 1));
  const auto down = impatient.classify(px.data(), 1, 28, 28, 1);
  CHECK(down.fallback == net::Fallback::timeout);
  CHECK(down.attempts == 2);
  CHECK(impatient.counters().socket_recreations >= 1);
  // ...and both clients are served again when it comes back.
  RunningServer again(mf.load(), opt, ep);
  const auto back = client.classify(px.data(), 1, 28, 28, 1);
  CHECK_MESSAGE(back.ok(), back.describe());
  net::CloudResult later;
  for (int i = 0; i < 50 && !later.ok(); ++i) later = impatient.classify(px.data(), 1, 28, 28, 1);
  CHECK_MESSAGE(later.ok(), later.describe());
  std::filesystem::remove(tmp_path("cloud.ipc"));
}

TEST_CASE("cloud e2e: a lying cloud: duplicates and unknown ids dropped, malformed replies flagged, resends") {
  // A fake server on a raw ROUTER that misbehaves differently for each request id.
  zmq::context_t ctx(1);
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  const std::string ep = router.get(zmq::sockopt::last_endpoint);
  std::atomic<bool> stop{false};
  std::atomic<int> retries_seen{0};
  std::thread fake([&] {
    auto reply = [&](const zmq::message_t& peer, const net::Header& h, const std::string& payload) {
      std::vector<zmq::message_t> m;
      m.emplace_back(peer.data(), peer.size());
      const std::string hb = header_bytes(h);
      m.emplace_back(hb.data(), hb.size());
      m.emplace_back(payload.data(), payload.size());
      net::send_message(router, m, false);
    };
    std::vector<zmq_pollitem_t> items{{router.handle(), 0, ZMQ_POLLIN, 0}};
    while (!stop.load()) {
      net::poll_sockets(items, 20);
      std::vector<zmq::message_t> f;
      std::size_t total = 0;
      while (net::recv_message(router, f, total)) {
        const net::Decoded d = net::decode_header(f[1].data(), f[1].size());
        const std::uint64_t id = d.header.request_id;
        const bool retry = d.header.flags & net::flags::retry;
        retries_seen += retry;
        std::vector<float> logits(10, 0.5f);
        logits[id % 10] = 2.0f;
        const std::string good(reinterpret_cast<const char*>(logits.data()), 40);
        const net::Header ok_h = net::classify_reply_header(id, 1, 10);
        switch (id) {
          case 1:  // answered twice
            reply(f[0], ok_h, good);
            reply(f[0], ok_h, good);
            break;
          case 2:  // wrong N
            reply(f[0], net::classify_reply_header(id, 2, 10), good + good);
            break;
          case 3: {  // NaN logits
            std::vector<float> nan(10, std::nanf(""));
            reply(f[0], ok_h, std::string(reinterpret_cast<const char*>(nan.data()), 40));
            break;
          }
          case 4:  // a reply for an id nobody asked for, then the right one
            reply(f[0], net::classify_reply_header(999, 1, 10), good);
            reply(f[0], ok_h, good);
            break;
          case 5:  // first attempt: an unreadable reply (so the client times out); the resend is answered
            if (!retry) {
              std::vector<zmq::message_t> m;
              m.emplace_back(f[0].data(), f[0].size());
              m.emplace_back(std::string("junk"));
              net::send_message(router, m, false);
            } else {
              reply(f[0], ok_h, good);
            }
            break;
          case 6: {  // refused
            const std::string text = "no";
            reply(f[0], net::error_reply_header(id, net::ErrorCode::internal, text.size()), text);
            break;
          }
          default:  // never answered
            break;
        }
      }
    }
  });
  net::CloudClient client(client_options(ep, 300ms, 1));
  const std::vector<unsigned char> px(784, 1);
  std::vector<net::CloudResult> r;
  for (int i = 0; i < 7; ++i) r.push_back(client.classify(px.data(), 1, 28, 28, 1));
  stop = true;
  fake.join();
  REQUIRE(r[0].request_id == 1);
  CHECK(r[0].ok());
  CHECK(r[0].top() == 1);
  CHECK(r[1].fallback == net::Fallback::malformed_reply);
  CHECK(r[2].fallback == net::Fallback::malformed_reply);
  CHECK(r[3].ok());
  CHECK(r[3].top() == 4);
  CHECK(r[4].ok());
  CHECK(r[4].attempts == 2);
  CHECK(r[5].fallback == net::Fallback::error_reply);
  CHECK(r[5].server_error == net::ErrorCode::internal);
  CHECK(r[5].text == "no");
  CHECK(r[6].fallback == net::Fallback::timeout);
  CHECK(r[6].attempts == 2);
  CHECK(retries_seen.load() >= 2);  // resends carry the RETRY flag
  const auto& c = client.counters();
  CHECK(c.late_or_duplicate >= 2);  // the duplicate of 1 and the stray 999 (the late one of 1 may come later)
  CHECK(c.unattributable >= 1);
  CHECK(c.requests == 7);
}

}  // namespace test_net_e2e
