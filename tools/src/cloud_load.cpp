// edgenn-cloud-load: load benchmark of the edge–cloud hop. N concurrent edge clients (one
// thread and one DEALER each) against one in-process cloud server on loopback TCP; for every
// batching setting and client count: requests/s and latency percentiles (submit to reply).
//
//   edgenn-cloud-load                                  # synthetic ResNet-20, clients 1,4,16, max-batch 1 and 32
//   edgenn-cloud-load --model weights/cloud_x.safetensors --clients 1,4,16 --max-batch 1,32 --json out.json
//   edgenn-cloud-load --write-model m.safetensors      # only write the synthetic model (tests use it)
//
// Each client sends one image per request and keeps --window requests in flight (closed
// loop). Without --model the server runs a ResNet-CIFAR with random parameters: throughput
// does not depend on the values.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "edgenn/net/cloud_client.hpp"
#include "edgenn/net/cloud_server.hpp"
#include "edgenn/net/synthetic_model.hpp"

using namespace edgenn;
using Clock = std::chrono::steady_clock;

namespace {

struct RunResult {
  int clients = 0, max_batch = 0;
  std::uint64_t ok = 0, fallbacks = 0;
  double seconds = 0, rps = 0, p50_ms = 0, p90_ms = 0, p99_ms = 0, max_ms = 0, mean_batch = 0;
};

double percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  const std::size_t k = std::min(v.size() - 1, std::size_t(q * double(v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(k), v.end());
  return v[k];
}

struct Settings {
  std::string model_path;
  int workers = 2, window = 1;
  double max_wait_ms = 2, seconds = 2, warmup_s = 0.3;
};

RunResult run_one(const Settings& s, int clients, int max_batch) {
  auto model = io::load_model(s.model_path);
  if (!model) throw std::runtime_error(model.error());
  const io::InputSpec in = model->info.input;
  net::ServerOptions opt;
  opt.bind = {"tcp://127.0.0.1:*"};
  opt.workers = s.workers;
  opt.max_batch = max_batch;
  opt.max_wait_ms = s.max_wait_ms;
  opt.model_label = s.model_path;
  opt.log = [](const std::string&) {};
  auto server = net::CloudServer<>::create(std::move(*model), opt);
  if (!server) throw std::runtime_error(server.error());
  const std::string endpoint = (*server)->endpoints().front();
  std::thread io([&] { (*server)->run(); });

  const std::size_t per = std::size_t(in.height) * in.width * in.channels;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  const auto start_at = [&] {
    while (!go.load()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  };
  Clock::time_point t_begin, t_end;
  const auto nclients = static_cast<std::size_t>(clients);
  std::vector<std::vector<double>> lat(nclients);
  std::vector<std::uint64_t> oks(nclients), falls(nclients);
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      std::mt19937 rng(std::uint32_t(c + 1));
      std::vector<unsigned char> images(per * 64);
      for (auto& b : images) b = static_cast<unsigned char>(rng() & 255);
      net::ClientOptions co;
      co.endpoint = endpoint;
      co.timeout = std::chrono::milliseconds(10000);
      co.retries = 0;
      net::CloudClient client(co);
      // Warm up (connection, first batches) before the clock starts.
      const auto warm_end = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s.warmup_s));
      while (Clock::now() < warm_end) (void)client.classify(images.data(), 1, in.height, in.width, in.channels);
      ready.fetch_add(1);
      start_at();
      std::size_t next = 0;
      auto& mine = lat[std::size_t(c)];
      while (Clock::now() < t_end || client.in_flight() > 0) {
        while (Clock::now() < t_end && int(client.in_flight()) < s.window) {
          (void)client.submit(images.data() + (next++ % 64) * per, 1, in.height, in.width, in.channels);
        }
        for (const auto& r : client.poll(std::chrono::milliseconds(50))) {
          if (r.ok()) {
            ++oks[std::size_t(c)];
            mine.push_back(r.latency_ms);
          } else {
            ++falls[std::size_t(c)];
          }
        }
      }
    });
  while (ready.load() < clients) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  t_begin = Clock::now();
  t_end = t_begin + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s.seconds));
  go.store(true);
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - t_begin).count();

  // The server's own counters include the warm-up; its mean batch size is still representative.
  (*server)->request_stop();
  io.join();
  RunResult r;
  r.clients = clients;
  r.max_batch = max_batch;
  std::vector<double> all;
  for (int c = 0; c < clients; ++c) {
    r.ok += oks[std::size_t(c)];
    r.fallbacks += falls[std::size_t(c)];
    all.insert(all.end(), lat[std::size_t(c)].begin(), lat[std::size_t(c)].end());
  }
  r.seconds = elapsed;
  r.rps = double(r.ok) / elapsed;
  r.p50_ms = percentile(all, 0.50);
  r.p90_ms = percentile(all, 0.90);
  r.p99_ms = percentile(all, 0.99);
  r.max_ms = all.empty() ? 0 : *std::max_element(all.begin(), all.end());
  r.mean_batch = (*server)->stats_json().value("mean_batch_size", 0.0);
  return r;
}

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  std::size_t pos = 0;
  while (pos < s.size()) {
    const std::size_t comma = s.find(',', pos);
    out.push_back(std::stoi(s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos)));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Load benchmark of the edgenn cloud server: N edge clients on loopback, with and without batching"};
  Settings s;
  std::string clients_list = "1,4,16", batch_list = "1,32", json_path, write_model;
  net::SyntheticModelSpec spec;
  spec.depth = 20;
  spec.width = 16;
  app.add_option("--model", s.model_path, "classifier weights file (default: a synthetic ResNet-CIFAR)");
  app.add_option("--clients", clients_list, "client counts, comma-separated");
  app.add_option("--max-batch", batch_list, "server max-batch settings, comma-separated (1 = no batching)");
  app.add_option("--max-wait-ms", s.max_wait_ms, "server max-wait");
  app.add_option("--workers", s.workers, "server worker threads")->check(CLI::Range(1, 256));
  app.add_option("--window", s.window, "requests in flight per client")->check(CLI::Range(1, 4096));
  app.add_option("--seconds", s.seconds, "measured time per configuration")->check(CLI::Range(0.1, 3600.0));
  app.add_option("--json", json_path, "also write the results as JSON");
  app.add_option("--depth", spec.depth, "synthetic model depth (6n+2)");
  app.add_option("--width", spec.width, "synthetic model width");
  app.add_option("--write-model", write_model, "write the synthetic model to this path and exit");
  CLI11_PARSE(app, argc, argv);

  if (!write_model.empty()) {
    if (auto ok = net::write_synthetic_model(write_model, spec); !ok)
      return std::fprintf(stderr, "edgenn-cloud-load: %s\n", ok.error().c_str()), 1;
    std::printf("edgenn-cloud-load: wrote %s (synthetic resnet_cifar depth %d width %d)\n", write_model.c_str(),
                spec.depth, spec.width);
    return 0;
  }
  std::string temp_model;
  std::string model_label = s.model_path;
  if (s.model_path.empty()) {
    temp_model = (std::filesystem::temp_directory_path() / ("edgenn_cloud_load_" + std::to_string(::getpid()) + ".safetensors")).string();
    if (auto ok = net::write_synthetic_model(temp_model, spec); !ok)
      return std::fprintf(stderr, "edgenn-cloud-load: %s\n", ok.error().c_str()), 1;
    s.model_path = temp_model;
    model_label = "synthetic resnet_cifar depth " + std::to_string(spec.depth) + " width " + std::to_string(spec.width);
  }

  std::printf("edgenn-cloud-load: model %s, %d server workers, max-wait %.3g ms, window %d, %.1f s per row, %u cores\n",
              model_label.c_str(), s.workers, s.max_wait_ms, s.window, s.seconds, std::thread::hardware_concurrency());
  std::printf("%9s %8s %10s %9s %9s %9s %9s %10s %9s\n", "max-batch", "clients", "req/s", "p50 ms", "p90 ms", "p99 ms",
              "max ms", "mean batch", "fallback");
  std::vector<RunResult> results;
  try {
    for (int mb : parse_list(batch_list))
      for (int n : parse_list(clients_list)) {
        const RunResult r = run_one(s, n, mb);
        std::printf("%9d %8d %10.0f %9.2f %9.2f %9.2f %9.2f %10.2f %9llu\n", r.max_batch, r.clients, r.rps, r.p50_ms,
                    r.p90_ms, r.p99_ms, r.max_ms, r.mean_batch, (unsigned long long)r.fallbacks);
        std::fflush(stdout);
        results.push_back(r);
      }
  } catch (const std::exception& e) {
    if (!temp_model.empty()) std::filesystem::remove(temp_model);
    return std::fprintf(stderr, "edgenn-cloud-load: %s\n", e.what()), 1;
  }
  if (!temp_model.empty()) std::filesystem::remove(temp_model);

  if (!json_path.empty()) {
    nlohmann::json j = {{"benchmark", "edgenn-cloud-load"},
                        {"model", model_label},
                        {"workers", s.workers},
                        {"max_wait_ms", s.max_wait_ms},
                        {"window", s.window},
                        {"seconds_per_row", s.seconds},
                        {"hardware_concurrency", std::thread::hardware_concurrency()},
                        {"rows", nlohmann::json::array()}};
    for (const auto& r : results)
      j["rows"].push_back({{"max_batch", r.max_batch}, {"clients", r.clients}, {"requests_per_s", r.rps},
                           {"p50_ms", r.p50_ms}, {"p90_ms", r.p90_ms}, {"p99_ms", r.p99_ms}, {"max_ms", r.max_ms},
                           {"mean_batch", r.mean_batch}, {"ok", r.ok}, {"fallbacks", r.fallbacks}});
    const std::string text = j.dump(2) + "\n";
    if (auto ok = io::write_file_atomic(json_path, text.data(), text.size()); !ok)
      return std::fprintf(stderr, "edgenn-cloud-load: %s\n", ok.error().c_str()), 1;
  }
  return 0;
}
