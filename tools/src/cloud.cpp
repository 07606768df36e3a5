// edgenn-cloud: the cloud server of the edge–cloud hop (docs/protocol.md). Loads a converted
// classifier, serves classify and stats requests from many edge clients over a ZeroMQ
// ROUTER with dynamic batching and worker threads. SIGINT/SIGTERM: stop accepting, answer
// every accepted request, exit 0; a second signal exits at once (status 1).
//
//   edgenn-cloud --model weights/cloud_resnet.safetensors --bind tcp://*:5555 --workers 2
//                --max-batch 32 --max-wait-ms 2 [--curve-secret-key server.key --authorized-keys clients.txt]
//
// Helper mode (no network): run the model the way the server does on raw uint8 images and
// write the float32 logits, so a client in another language can check its answers:
//
//   edgenn-cloud --model M --infer images.u8 --out logits.f32      (N x H x W x C bytes in, N x K floats out)
#include <csignal>
#include <cstdio>
#include <ctime>
#include <sys/time.h>

#include <CLI/CLI.hpp>

#include "edgenn/io/file.hpp"
#include "edgenn/net/cloud_server.hpp"

using namespace edgenn;

namespace {

std::atomic<net::CloudServer<>*> g_server{nullptr};

void on_stop_signal(int) {
  if (auto* s = g_server.load()) s->request_stop();
}

// One log line on stdout with a wall-clock time, flushed (the line may be read by a test or
// a supervisor through a pipe).
void log_line(const std::string& line) {
  timeval tv{};
  ::gettimeofday(&tv, nullptr);
  std::tm tm{};
  ::localtime_r(&tv.tv_sec, &tm);
  char ts[32];
  std::strftime(ts, sizeof ts, "%H:%M:%S", &tm);
  std::printf("%s.%03d %s\n", ts, int(tv.tv_usec / 1000), line.c_str());
  std::fflush(stdout);
}

int infer_file(io::LoadedModel<>& model, const std::string& in_path, const std::string& out_path) {
  const auto& in = model.info.input;
  const std::size_t per = std::size_t(in.height) * in.width * in.channels;
  auto bytes = io::read_file(in_path);
  if (!bytes) return std::fprintf(stderr, "edgenn-cloud: %s\n", bytes.error().c_str()), 1;
  if (bytes->empty() || bytes->size() % per != 0)
    return std::fprintf(stderr, "edgenn-cloud: %s: %zu bytes is not a whole number of %dx%dx%d images\n",
                        in_path.c_str(), bytes->size(), in.height, in.width, in.channels),
           1;
  const int n = int(bytes->size() / per);
  net::ModelRunner<> runner(*model.classifier, in, 64);
  std::vector<float> logits(std::size_t(n) * std::size_t(runner.num_classes()));
  const net::ImageBlock block{bytes->data(), net::DType::uint8, n};
  if (Status st = runner.run(&block, 1, logits.data()); !st)
    return std::fprintf(stderr, "edgenn-cloud: %s\n", st.message()), 1;
  if (auto ok = io::write_file_atomic(out_path, logits.data(), logits.size() * sizeof(float)); !ok)
    return std::fprintf(stderr, "edgenn-cloud: %s\n", ok.error().c_str()), 1;
  std::printf("edgenn-cloud: %d images -> %s (%d x %d float32 logits)\n", n, out_path.c_str(), n, runner.num_classes());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"edgenn cloud server: classify images for edge devices over ZeroMQ (docs/protocol.md)"};
  std::string model_path, secret_key_path, authorized_path, infer_in, infer_out;
  net::ServerOptions opt;
  opt.bind.clear();
  opt.stats_interval_s = 10;
  app.add_option("--model", model_path, "classifier weights file (.safetensors)")->required();
  app.add_option("--bind", opt.bind, "endpoint to bind (repeatable; default tcp://*:5555)");
  app.add_option("--workers", opt.workers, "inference threads")->check(CLI::Range(1, 256));
  app.add_option("--max-batch", opt.max_batch, "images per batch (1 = no batching)")->check(CLI::Range(1, 65536));
  app.add_option("--max-wait-ms", opt.max_wait_ms, "longest wait for a batch to fill, after its first request")
      ->check(CLI::Range(0.0, 60000.0));
  app.add_option("--max-request-bytes", opt.max_request_bytes, "largest accepted request payload")
      ->check(CLI::Range(std::uint64_t(1), std::uint64_t(1) << 34));
  app.add_option("--max-images-per-request", opt.max_images_per_request, "largest N of a request")
      ->check(CLI::Range(1u, 1u << 24));
  app.add_option("--max-queue-images", opt.max_queue_images, "images waiting before requests are refused (overloaded)")
      ->check(CLI::Range(std::uint64_t(1), std::uint64_t(1) << 32));
  app.add_option("--curve-secret-key", secret_key_path, "enable CURVE with this server secret key file (edgenn-keygen)");
  app.add_option("--authorized-keys", authorized_path, "only accept CURVE clients whose public key is listed here");
  app.add_option("--stats-interval", opt.stats_interval_s, "seconds between stat lines (0 = none)")
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--drain-linger-ms", opt.drain_linger_ms, "at shutdown, how long to wait for the last replies to leave")
      ->check(CLI::Range(0, 600000));
  app.add_option("--infer", infer_in, "helper mode: classify a raw uint8 image file locally (no network)");
  app.add_option("--out", infer_out, "with --infer: write the float32 logits here");
  CLI11_PARSE(app, argc, argv);
  if (opt.bind.empty()) opt.bind.push_back("tcp://*:5555");
  if (!authorized_path.empty() && secret_key_path.empty())
    return std::fprintf(stderr, "edgenn-cloud: --authorized-keys needs --curve-secret-key\n"), 2;
  if (!infer_in.empty() && infer_out.empty()) return std::fprintf(stderr, "edgenn-cloud: --infer needs --out\n"), 2;

  auto model = io::load_model(model_path);
  if (!model) return std::fprintf(stderr, "edgenn-cloud: %s\n", model.error().c_str()), 1;
  if (!model->classifier)
    return std::fprintf(stderr, "edgenn-cloud: %s is a '%s' model; the cloud serves classifiers (resnet_cifar, mobilenet_v2)\n",
                        model_path.c_str(), model->info.arch.c_str()),
           1;
  if (!infer_in.empty()) return infer_file(*model, infer_in, infer_out);

  if (!secret_key_path.empty()) {
    auto secret = net::read_key_file(secret_key_path);
    if (!secret) return std::fprintf(stderr, "edgenn-cloud: %s\n", secret.error().c_str()), 1;
    net::CurveServerOptions curve;
    curve.secret_key = *secret;
    if (!authorized_path.empty()) {
      auto keys = net::read_key_list(authorized_path);
      if (!keys) return std::fprintf(stderr, "edgenn-cloud: %s\n", keys.error().c_str()), 1;
      curve.authenticate = true;
      curve.authorized_keys = std::move(*keys);
    }
    opt.curve = std::move(curve);
  }
  opt.model_label = model_path;
  opt.log = log_line;

  auto server = net::CloudServer<>::create(std::move(*model), opt);
  if (!server) return std::fprintf(stderr, "edgenn-cloud: %s\n", server.error().c_str()), 1;
  g_server.store(server->get());
  struct sigaction sa{};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  (*server)->run();
  const bool drained = !(*server)->aborted();
  // Signals from here on fall back to the default action; the server object stays valid
  // until after the handler can no longer see it.
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  g_server.store(nullptr);
  return drained ? 0 : 1;
}
