// edgenn-demo: the MEANet edge device of the demo. Classifies the Fashion-MNIST test set the
// way a device would — main block, router, extension for hard inputs, the cloud server over
// ZeroMQ for complex ones (falling back to the edge's answer when the cloud fails) — and
// writes a report a newcomer can read (stdout) plus report.json.
//
//   edgenn-demo --edge weights/meanet_resnet20.safetensors --cloud-model weights/cloud_resnet20x2.safetensors
//               --endpoint tcp://127.0.0.1:5555 [--server-key server.pub --client-key edge.key]
//               --out build/demo/report.json
//
// Besides the live run it measures, for the report's comparison lines: the main block alone
// and MEANet at the edge (local, batched), and the cloud model alone (every test image sent
// to the server). The thresholds come from the weights file (edgenn-calibrate, validation
// split); the test set is only evaluated. The trade-off curve over the threshold sweep is
// recomputed on the test set from the same answers, for the plot (tools/plot_tradeoff.py).
#include <cstdio>

#include <CLI/CLI.hpp>

#include "edgenn/io.hpp"
#include "edgenn/meanet/config_json.hpp"
#include "edgenn/meanet/observations.hpp"
#include "edgenn/meanet/report.hpp"
#include "edgenn/net/cloud_client.hpp"
#include "edgenn/net/curve_keys.hpp"

using namespace edgenn;
using nlohmann::json;

namespace {

int die(const std::string& msg, int code = 1) {
  std::fprintf(stderr, "edgenn-demo: %s\n", msg.c_str());
  return code;
}

std::string pct(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%6.2f%%", 100 * x);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"MEANet edge device of the demo: main block, extension, cloud over ZeroMQ; writes report.json"};
  std::string edge_path, cloud_model_path, endpoint = "tcp://127.0.0.1:5555", data_dir = "/usr/share/datasets/fashion-mnist";
  std::string server_key, client_key, out_path, energy_path;
  int limit = 0, timeout_ms = 2000, retries = 1, threads = 2;
  app.add_option("--edge", edge_path, "calibrated MEANet weights (router thresholds inside)")->required();
  app.add_option("--cloud-model", cloud_model_path, "the cloud's weights file (read for its MACs and name only)")->required();
  app.add_option("--endpoint", endpoint, "cloud server endpoint");
  app.add_option("--server-key", server_key, "CURVE: the server's public key file (.pub)");
  app.add_option("--client-key", client_key, "CURVE: this edge's secret key file (.key; public key derived)");
  app.add_option("--data", data_dir, "Fashion-MNIST directory");
  app.add_option("--limit", limit, "only the first N test images (0 = all)")->check(CLI::NonNegativeNumber);
  app.add_option("--timeout-ms", timeout_ms, "cloud timeout per attempt")->check(CLI::Range(1, 600000));
  app.add_option("--retries", retries, "cloud resends after the first attempt")->check(CLI::Range(0, 100));
  app.add_option("--energy", energy_path, "energy model JSON (tools/energy_model.json)");
  app.add_option("--threads", threads, "threads for the local comparison runs")->check(CLI::Range(1, 64));
  app.add_option("--out", out_path, "write the report here (JSON)")->required();
  CLI11_PARSE(app, argc, argv);
  if (server_key.empty() != client_key.empty()) return die("--server-key and --client-key go together (CURVE)", 2);

  // ---- models, router, data
  auto edge = io::load_model(edge_path);
  if (!edge) return die(edge.error());
  if (!edge->meanet) return die(edge_path + " is not a MEANet model");
  if (edge->info.router.is_null()) return die(edge_path + " has no router thresholds: run edgenn-calibrate first");
  auto router = meanet::router_from_json(edge->info.router, edge_path);
  if (!router) return die(router.error());
  auto cloud_model = io::load_model(cloud_model_path);
  if (!cloud_model) return die(cloud_model.error());
  if (!cloud_model->classifier) return die(cloud_model_path + " is not a classifier");
  auto test = io::load_fashion_mnist(data_dir, io::Split::test);
  if (!test) return die(test.error());
  if (limit > 0 && limit < test->count) {
    test->count = limit;
    test->pixels.resize(std::size_t(limit) * test->image_bytes());
    test->labels.resize(std::size_t(limit));
  }
  const int n = test->count;
  const io::InputSpec& in = edge->info.input;
  if (in.height != test->height || in.width != test->width || in.channels != 1)
    return die("the edge model expects " + std::to_string(in.height) + "x" + std::to_string(in.width) + "x" +
               std::to_string(in.channels) + " inputs, the data set has 28x28x1");

  meanet::Costs costs;
  if (!energy_path.empty()) {
    auto bytes = io::read_file(energy_path);
    if (!bytes) return die(bytes.error());
    auto e = meanet::energy_from_json(json::parse(bytes->begin(), bytes->end(), nullptr, false), energy_path);
    if (!e) return die(e.error());
    costs.energy = *e;
  }
  const Shape one = in.shape(1);
  costs.paths = meanet::path_costs(*edge->meanet, one);
  costs.cloud_macs = cloud_model->classifier->macs(cloud_model->info.input.shape(1));
  // One upload: the protocol header and the uint8 image (docs/protocol.md).
  costs.request_bytes = std::int64_t(net::kHeaderBytes) + one.size();

  // ---- the cloud connection
  net::ClientOptions copt;
  copt.endpoint = endpoint;
  copt.timeout = std::chrono::milliseconds(timeout_ms);
  copt.retries = retries;
  copt.expected_classes = std::uint32_t(edge->meanet->num_classes());
  if (!server_key.empty()) {
    auto spub = net::read_key_file(server_key);
    if (!spub) return die(spub.error());
    auto csec = net::read_key_file(client_key);
    if (!csec) return die(csec.error());
    auto cpub = net::curve_public_from_secret(*csec);
    if (!cpub) return die(client_key + ": " + cpub.error());
    copt.curve = net::CurveClientOptions{*spub, *cpub, *csec};
  }
  net::CloudClient client(copt);
  std::printf("edge: %s (%s, hard classes:", edge_path.c_str(), edge->info.arch.c_str());
  for (int c : edge->meanet->hard_classes) std::printf(" %s", edge->info.classes[std::size_t(c)].c_str());
  std::printf(")\nrouter: %s\ncloud: %s%s\n", meanet::router_to_json(*router).dump().c_str(), endpoint.c_str(),
              copt.curve ? " (CURVE)" : "");
  {
    auto stats = client.stats();
    if (!stats) std::printf("warning: the cloud does not answer a stats request (%s); running anyway, cloud inputs will fall back\n",
                            stats.error().c_str());
    else
      std::printf("cloud is up: %s\n", stats->dump().c_str());
  }

  // ---- 1. the live run, one input at a time like a device
  meanet::EdgeRuntime<> rt(*edge->meanet, in, *router, costs);
  meanet::CloudFn cloud_fn = [&](const unsigned char* px) {
    meanet::CloudReply r;
    net::CloudResult res = client.classify(px, 1, in.height, in.width, in.channels);
    r.bytes_sent = std::int64_t(res.bytes_sent);
    r.bytes_received = std::int64_t(res.bytes_received);
    if (res.ok()) {
      r.ok = true;
      r.cls = res.top(0);
    } else {
      r.failure = res.describe();
    }
    return r;
  };
  std::printf("\nlive run over %d test images (progress every 1000)...\n", n);
  std::vector<meanet::RunRecord> recs(static_cast<std::size_t>(n));
  std::map<std::string, int> fallback_reasons;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    auto d = rt.classify(test->image(i), &cloud_fn);
    if (!d) return die("input " + std::to_string(i) + ": " + d.error());
    recs[std::size_t(i)] = {test->labels[std::size_t(i)], std::move(*d)};
    if (recs[std::size_t(i)].d.fallback) ++fallback_reasons[recs[std::size_t(i)].d.fallback_reason];
    if ((i + 1) % 1000 == 0 || i + 1 == n) {
      int c = 0, cl = 0;
      for (int k = 0; k <= i; ++k) c += recs[std::size_t(k)].d.cls == recs[std::size_t(k)].label, cl += recs[std::size_t(k)].d.exit == meanet::Exit::cloud;
      std::printf("  %5d/%d  accuracy so far %.4f, sent to cloud %.3f, %.1f s\n", i + 1, n, double(c) / (i + 1),
                  double(cl) / (i + 1), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      std::fflush(stdout);
    }
  }
  json live = meanet::summarize_run(recs);
  live["wall_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  live["fallback_reasons"] = fallback_reasons;
  live["client_counters"] = {{"requests", client.counters().requests}, {"sends", client.counters().sends},
                             {"resends", client.counters().resends}, {"replies", client.counters().replies},
                             {"late_or_duplicate", client.counters().late_or_duplicate}};

  // ---- 2. comparison lines: the cloud model alone (every image through the server) ...
  std::printf("\ncloud model alone: sending all %d test images to the server...\n", n);
  std::fflush(stdout);
  const auto all = client.classify_each(test->pixels.data(), n, in.height, in.width, in.channels, 64);
  int cloud_ok = 0, cloud_correct = 0;
  for (int i = 0; i < n; ++i)
    if (all[std::size_t(i)].ok()) ++cloud_ok, cloud_correct += all[std::size_t(i)].top(0) == test->labels[std::size_t(i)];
  if (cloud_ok < n) std::printf("warning: %d of %d cloud-alone requests failed; cloud-alone accuracy counts them wrong\n", n - cloud_ok, n);

  // ... and main alone / MEANet at the edge, plus the test-set trade-off curve.
  auto obs = meanet::observe(*edge->meanet, in, *router, *test, static_cast<const nn::Classifier<>*>(nullptr), nullptr, threads);
  if (!obs) return die(obs.error());
  int main_correct = 0;
  for (int i = 0; i < n; ++i) {
    auto& o = (*obs)[std::size_t(i)];
    o.cloud_class = all[std::size_t(i)].ok() ? all[std::size_t(i)].top(0) : -1;
    main_correct += o.main.top == o.label;
  }
  meanet::RouterConfig edge_only = *router;
  edge_only.cloud = meanet::CloudCheck::off;
  const auto edge_pt = meanet::evaluate(edge_only, *obs, costs);
  const auto curve = meanet::sweep(*router, *obs, costs);
  json curve_j = json::array();
  for (const auto& p : curve) curve_j.push_back(meanet::point_json(p));

  // ---- the report
  const double live_acc = live["accuracy"], cloud_acc = double(cloud_correct) / n, main_acc = double(main_correct) / n;
  const double main_j = costs.main_joules(), ext_j = costs.extension_joules();
  const double per_request_bytes = double(costs.request_bytes);
  const double all_cloud_j = costs.transmit_joules();
  json report = {
      {"edgenn_demo_report", 1},
      {"test_images", n},
      {"models", {{"edge", edge_path}, {"cloud", cloud_model_path}, {"arch", edge->info.arch},
                  {"hard_classes", edge->meanet->hard_classes}, {"class_names", edge->info.classes}}},
      {"router", edge->info.router},
      {"accuracy", {{"main_alone", main_acc}, {"meanet_edge", edge_pt.accuracy()}, {"meanet_with_cloud", live_acc},
                    {"cloud_alone", cloud_acc}}},
      {"live_run", live},
      {"macs", {{"main", costs.paths.main_macs}, {"extension", costs.paths.extension_macs}, {"cloud_model", costs.cloud_macs},
                {"edge_mean_per_input", live["edge_macs_per_input"]},
                {"edge_mean_vs_cloud_for_every_input", double(live["edge_macs_per_input"]) / double(costs.cloud_macs)}}},
      {"energy_estimate_joules_per_input",
       {{"note", "ESTIMATES from the energy model (docs/energy_model.md), not measurements"},
        {"meanet", live["energy_joules_per_input"]},
        {"send_everything_to_cloud", all_cloud_j},
        {"main_block_only", main_j},
        {"main_path", main_j},
        {"extension_path", main_j + ext_j},
        {"per_upload", all_cloud_j},
        {"model", energy_path}}},
      {"tradeoff_curve_test", curve_j},
      {"chosen_point_test", meanet::point_json(meanet::evaluate(*router, *obs, costs))},
      {"targets", {{"cloud_fraction_at_most", 0.15},
                   {"meanet_with_cloud_at_least_cloud_alone", live_acc >= cloud_acc},
                   {"cloud_fraction_ok", double(live["exits"]["cloud"]["fraction"]) <= 0.15},
                   {"meanet_edge_beats_main", edge_pt.accuracy() > main_acc}}}};
  if (auto stats = client.stats()) report["cloud_server_stats"] = *stats;

  const std::string text = report.dump(1) + "\n";
  if (auto ok = io::write_file_atomic(out_path, text.data(), text.size()); !ok) return die(ok.error());

  // ---- what a newcomer reads
  const auto& ex = live["exits"];
  std::printf("\n================ MEANet edge-cloud report (Fashion-MNIST test set, %d images) ================\n", n);
  std::printf("Accuracy\n");
  std::printf("  main block alone (edge)            %s\n", pct(main_acc).c_str());
  std::printf("  MEANet at the edge (main + ext.)   %s\n", pct(edge_pt.accuracy()).c_str());
  std::printf("  MEANet with the cloud (this run)   %s\n", pct(live_acc).c_str());
  std::printf("  cloud model alone                  %s\n", pct(cloud_acc).c_str());
  std::printf("Where inputs exited            fraction   accuracy   latency p50 / p95 / p99 (ms)\n");
  for (const char* e : {"main", "extension", "cloud"})
    std::printf("  %-26s %s   %s   %7.3f / %7.3f / %7.3f\n", e, pct(ex[e]["fraction"]).c_str(), pct(ex[e]["accuracy"]).c_str(),
                double(ex[e]["latency"]["p50_ms"]), double(ex[e]["latency"]["p95_ms"]), double(ex[e]["latency"]["p99_ms"]));
  std::printf("  cloud answers that fell back to the edge: %d\n", live["cloud_fallbacks"].get<int>());
  for (const auto& [why, count] : fallback_reasons) std::printf("    %d x %s\n", count, why.c_str());
  std::printf("Edge compute\n");
  std::printf("  MACs per input (mean)              %.2f M  (main %.2f M, extension +%.2f M)\n",
              double(live["edge_macs_per_input"]) / 1e6, costs.paths.main_macs / 1e6, costs.paths.extension_macs / 1e6);
  std::printf("  vs. the cloud model on every input %.2f M  -> edge does %.1f%% of that\n", costs.cloud_macs / 1e6,
              100 * double(live["edge_macs_per_input"]) / double(costs.cloud_macs));
  std::printf("  bytes sent to the cloud            %lld in all, %.1f per input, %.0f per request\n",
              (long long)live["bytes_sent_total"].get<std::int64_t>(), double(live["bytes_sent_per_input"]), per_request_bytes);
  std::printf("Estimated edge energy per input (model: %s; estimates, not measurements)\n",
              energy_path.empty() ? "built-in defaults" : energy_path.c_str());
  std::printf("  MEANet                             %.3f mJ\n", 1e3 * double(live["energy_joules_per_input"]));
  std::printf("  send everything to the cloud       %.3f mJ\n", 1e3 * all_cloud_j);
  std::printf("  main block only                    %.3f mJ\n", 1e3 * main_j);
  std::printf("Targets: MEANet+cloud >= cloud alone: %s; cloud fraction <= 15%%: %s; MEANet edge > main alone: %s\n",
              report["targets"]["meanet_with_cloud_at_least_cloud_alone"].get<bool>() ? "yes" : "NO",
              report["targets"]["cloud_fraction_ok"].get<bool>() ? "yes" : "NO",
              report["targets"]["meanet_edge_beats_main"].get<bool>() ? "yes" : "NO");
  std::printf("Report: %s\n", out_path.c_str());
  return 0;
}
