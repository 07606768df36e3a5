// classify_images: classify PNG/JPEG files with MEANet at the edge, sending complex inputs
// to an edgenn-cloud server when one is given (otherwise they are answered at the edge,
// marked as fallback).
//
//   classify_images --edge weights/meanet_resnet20.safetensors examples/classify_images/samples/*.png
//   classify_images --edge ... --endpoint tcp://127.0.0.1:5555 [--server-key server.pub --client-key edge.key] FILES
//
// Each image is decoded, converted to grayscale, resized to the model's 28x28 and normalised
// as in training (include/edgenn/image/load_image.hpp). Fashion-MNIST shows light objects on
// a dark background: pass --invert for photos of dark objects on a light background.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "edgenn/image.hpp"
#include "edgenn/io.hpp"
#include "edgenn/meanet/config_json.hpp"
#include "edgenn/meanet/edge_runtime.hpp"
#include "edgenn/net/cloud_client.hpp"
#include "edgenn/net/curve_keys.hpp"

using namespace edgenn;

int main(int argc, char** argv) {
  CLI::App app{"Classify image files with MEANet at the edge (and the cloud for complex inputs)"};
  std::string edge_path, endpoint, server_key, client_key;
  std::vector<std::string> files;
  bool invert = false;
  int timeout_ms = 1000;
  app.add_option("--edge", edge_path, "calibrated MEANet weights")->required();
  app.add_option("--endpoint", endpoint, "edgenn-cloud endpoint (none: edge only)");
  app.add_option("--server-key", server_key, "CURVE: server public key file");
  app.add_option("--client-key", client_key, "CURVE: this client's secret key file");
  app.add_option("--timeout-ms", timeout_ms, "cloud timeout per attempt")->check(CLI::Range(1, 600000));
  app.add_flag("--invert", invert, "invert grey levels (dark object on light background)");
  app.add_option("files", files, "image files (PNG, JPEG, BMP, ...)")->required();
  CLI11_PARSE(app, argc, argv);

  auto edge = io::load_model(edge_path);
  if (!edge) return std::fprintf(stderr, "classify_images: %s\n", edge.error().c_str()), 1;
  if (!edge->meanet) return std::fprintf(stderr, "classify_images: %s is not a MEANet model\n", edge_path.c_str()), 1;
  meanet::RouterConfig router;  // defaults when the file has no calibrated thresholds
  if (!edge->info.router.is_null()) {
    auto r = meanet::router_from_json(edge->info.router, edge_path);
    if (!r) return std::fprintf(stderr, "classify_images: %s\n", r.error().c_str()), 1;
    router = *r;
  }
  const io::InputSpec& in = edge->info.input;
  meanet::Costs costs;
  costs.paths = meanet::path_costs(*edge->meanet, in.shape(1));
  meanet::EdgeRuntime<> rt(*edge->meanet, in, router, costs);

  std::unique_ptr<net::CloudClient> client;
  meanet::CloudFn cloud_fn;
  if (!endpoint.empty()) {
    net::ClientOptions opt;
    opt.endpoint = endpoint;
    opt.timeout = std::chrono::milliseconds(timeout_ms);
    opt.expected_classes = std::uint32_t(edge->meanet->num_classes());
    if (!server_key.empty() || !client_key.empty()) {
      auto spub = net::read_key_file(server_key);
      auto csec = net::read_key_file(client_key);
      if (!spub || !csec) return std::fprintf(stderr, "classify_images: %s\n", (!spub ? spub.error() : csec.error()).c_str()), 1;
      auto cpub = net::curve_public_from_secret(*csec);
      if (!cpub) return std::fprintf(stderr, "classify_images: %s\n", cpub.error().c_str()), 1;
      opt.curve = net::CurveClientOptions{*spub, *cpub, *csec};
    }
    client = std::make_unique<net::CloudClient>(opt);
    cloud_fn = [&](const unsigned char* px) {
      meanet::CloudReply r;
      const net::CloudResult res = client->classify(px, 1, in.height, in.width, in.channels);
      r.ok = res.ok();
      r.cls = r.ok ? res.top(0) : -1;
      r.failure = r.ok ? "" : res.describe();
      r.bytes_sent = std::int64_t(res.bytes_sent);
      return r;
    };
  }

  int failures = 0;
  for (const auto& f : files) {
    auto px = image::load_image(f, {in.height, in.width, in.channels, invert});
    if (!px) {
      std::fprintf(stderr, "classify_images: %s\n", px.error().c_str());
      ++failures;
      continue;
    }
    auto d = rt.classify(px->data(), cloud_fn ? &cloud_fn : nullptr);
    if (!d) {
      std::fprintf(stderr, "classify_images: %s: %s\n", f.c_str(), d.error().c_str());
      ++failures;
      continue;
    }
    const float conf = d->exit == meanet::Exit::extension ? d->ext.confidence : d->main.confidence;
    std::printf("%-50s %-12s exit %-9s confidence %.3f  %.2f M MACs%s%s\n", f.c_str(),
                edge->info.classes[std::size_t(d->cls)].c_str(), meanet::exit_name(d->exit), double(conf),
                double(d->edge_macs) / 1e6, d->fallback ? "  fallback: " : "", d->fallback ? d->fallback_reason.c_str() : "");
  }
  return failures ? 1 : 0;
}
