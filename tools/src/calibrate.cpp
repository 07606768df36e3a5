// edgenn-calibrate: choose MEANet's cloud threshold on the validation split and store the
// router configuration in the weights file (metadata edgenn.router).
//
//   edgenn-calibrate --edge weights/meanet_resnet20.safetensors --cloud weights/cloud_resnet20x2.safetensors
//                    --out weights/meanet_resnet20.safetensors [--target-accuracy cloud|0.94] [--target-cloud-fraction 0.1]
//
// The default target is "as accurate as the cloud model alone on the validation split,
// sending as few inputs as possible, at most --max-cloud-fraction". The test set is never
// read.
#include <cmath>
#include <cstdio>
#include <limits>

#include <CLI/CLI.hpp>

#include "edgenn/io.hpp"
#include "edgenn/meanet/config_json.hpp"
#include "edgenn/meanet/observations.hpp"

using namespace edgenn;

int main(int argc, char** argv) {
  CLI::App app{"Calibrate MEANet's router thresholds on the validation split"};
  std::string edge_path, cloud_path, out_path, data_dir = "/usr/share/datasets/fashion-mnist";
  std::string rule = "argmax_in_hard", check = "before_extension", unit = "nats", target_acc = "cloud";
  std::string energy_path;
  double target_fraction = -1, max_fraction = 0.15, fixed_threshold = std::numeric_limits<double>::quiet_NaN();
  float mass_threshold = -1;
  int threads = 2;
  app.add_option("--edge", edge_path, "MEANet weights file")->required();
  app.add_option("--cloud", cloud_path, "cloud model weights file")->required();
  app.add_option("--out", out_path, "output weights file (may equal --edge)")->required();
  app.add_option("--data", data_dir, "Fashion-MNIST directory");
  app.add_option("--hard-rule", rule, "argmax_in_hard or hard_mass")->check(CLI::IsMember({"argmax_in_hard", "hard_mass"}));
  app.add_option("--hard-mass-threshold", mass_threshold, "hard_mass rule threshold (default H/C)");
  app.add_option("--cloud-check", check, "before_extension, after_extension or off")
      ->check(CLI::IsMember({"before_extension", "after_extension", "off"}));
  app.add_option("--entropy", unit, "nats or normalized")->check(CLI::IsMember({"nats", "normalized"}));
  app.add_option("--target-accuracy", target_acc, "'cloud' (the cloud model's validation accuracy) or a number in (0, 1]");
  app.add_option("--target-cloud-fraction", target_fraction, "instead: the most accurate point sending at most this fraction")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--max-cloud-fraction", max_fraction, "cap on the cloud fraction when targeting accuracy")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--threshold", fixed_threshold, "use this cloud threshold T instead of choosing one (reports its point)");
  app.add_option("--energy", energy_path, "energy model JSON (for the reported estimates)");
  app.add_option("--threads", threads, "threads for the cloud model")->check(CLI::Range(1, 64));
  CLI11_PARSE(app, argc, argv);

  auto edge = io::load_model(edge_path);
  if (!edge) return std::fprintf(stderr, "edgenn-calibrate: %s\n", edge.error().c_str()), 1;
  if (!edge->meanet) return std::fprintf(stderr, "edgenn-calibrate: %s is not a MEANet model\n", edge_path.c_str()), 1;
  auto cloud = io::load_model(cloud_path);
  if (!cloud) return std::fprintf(stderr, "edgenn-calibrate: %s\n", cloud.error().c_str()), 1;
  if (!cloud->classifier) return std::fprintf(stderr, "edgenn-calibrate: %s is not a classifier\n", cloud_path.c_str()), 1;
  auto val = io::load_fashion_mnist(data_dir, io::Split::val);
  if (!val) return std::fprintf(stderr, "edgenn-calibrate: %s\n", val.error().c_str()), 1;

  meanet::RouterConfig cfg;
  cfg.hard_rule = rule == "hard_mass" ? meanet::HardRule::hard_mass : meanet::HardRule::argmax_in_hard;
  cfg.hard_mass_threshold = mass_threshold;
  cfg.cloud = check == "off" ? meanet::CloudCheck::off
              : check == "after_extension" ? meanet::CloudCheck::after_extension
                                           : meanet::CloudCheck::before_extension;
  cfg.unit = unit == "normalized" ? meanet::EntropyUnit::normalized : meanet::EntropyUnit::nats;

  meanet::Costs costs;
  if (!energy_path.empty()) {
    auto bytes = io::read_file(energy_path);
    if (!bytes) return std::fprintf(stderr, "edgenn-calibrate: %s\n", bytes.error().c_str()), 1;
    auto e = meanet::energy_from_json(nlohmann::json::parse(bytes->begin(), bytes->end(), nullptr, false), energy_path);
    if (!e) return std::fprintf(stderr, "edgenn-calibrate: %s\n", e.error().c_str()), 1;
    costs.energy = *e;
  }
  const Shape one = edge->info.input.shape(1);
  costs.paths = meanet::path_costs(*edge->meanet, one);
  costs.request_bytes = std::int64_t(one.size());

  std::printf("calibrating on the validation split (%d images)...\n", val->count);
  auto obs = meanet::observe(*edge->meanet, edge->info.input, cfg, *val, cloud->classifier.get(), &cloud->info.input, threads);
  if (!obs) return std::fprintf(stderr, "edgenn-calibrate: %s\n", obs.error().c_str()), 1;
  int cloud_correct = 0;
  for (const auto& o : *obs) cloud_correct += o.cloud_class == o.label;
  const double cloud_acc = double(cloud_correct) / val->count;

  const auto points = meanet::sweep(cfg, *obs, costs);
  meanet::Target target;
  if (target_fraction >= 0) {
    target.kind = meanet::Target::cloud_fraction;
    target.value = target_fraction;
  } else {
    target.kind = meanet::Target::accuracy;
    target.value = target_acc == "cloud" ? cloud_acc : std::atof(target_acc.c_str());
    target.max_cloud_fraction = max_fraction;
    if (!(target.value > 0 && target.value <= 1))
      return std::fprintf(stderr, "edgenn-calibrate: --target-accuracy must be 'cloud' or in (0, 1]\n"), 2;
  }
  meanet::Choice choice = meanet::choose(points, target);
  if (!std::isnan(fixed_threshold)) {
    meanet::RouterConfig fixed = cfg;
    fixed.entropy_threshold = float(fixed_threshold);
    choice.point = meanet::evaluate(fixed, *obs, costs);
    choice.point.threshold = float(fixed_threshold);
    choice.target_met = false;
  }
  cfg.entropy_threshold = choice.point.threshold;
  meanet::RouterConfig edge_only = cfg;
  edge_only.entropy_threshold = std::numeric_limits<float>::infinity();
  const auto edge_pt = meanet::evaluate(edge_only, *obs, costs);
  int main_correct = 0;
  for (const auto& o : *obs) main_correct += o.main.top == o.label;

  const auto& p = choice.point;
  std::printf("validation accuracy: main block alone %.4f, MEANet at the edge %.4f, cloud model alone %.4f\n",
              double(main_correct) / val->count, edge_pt.accuracy(), cloud_acc);
  std::printf("chosen threshold T = %g %s (cloud if entropy > T, checked %s): accuracy %.4f, exits main %.3f / "
              "extension %.3f / cloud %.3f -> target %s\n",
              double(p.threshold), unit.c_str(), check.c_str(), p.accuracy(), p.fraction(meanet::Exit::main),
              p.fraction(meanet::Exit::extension), p.fraction(meanet::Exit::cloud), choice.target_met ? "met" : "NOT met");

  nlohmann::json router = meanet::router_to_json(cfg);
  router["calibration"] = {
      {"split", "val"},
      {"images", val->count},
      {"target", target.kind == meanet::Target::accuracy
                     ? nlohmann::json{{"accuracy", target.value}, {"max_cloud_fraction", target.max_cloud_fraction},
                                      {"from", target_acc == "cloud" ? "cloud model validation accuracy" : "given"}}
                     : nlohmann::json{{"cloud_fraction", target.value}}},
      {"target_met", choice.target_met},
      {"fixed_threshold", !std::isnan(fixed_threshold)},
      {"cloud_model", cloud_path.substr(cloud_path.find_last_of('/') + 1)},
      {"val_accuracy", p.accuracy()},
      {"val_exit_fractions", {p.fraction(meanet::Exit::main), p.fraction(meanet::Exit::extension), p.fraction(meanet::Exit::cloud)}},
      {"val_main_accuracy", double(main_correct) / val->count},
      {"val_edge_accuracy", edge_pt.accuracy()},
      {"val_cloud_accuracy", cloud_acc}};
  io::ModelInfo info = edge->info;
  info.router = router;
  if (auto ok = io::save_model(out_path, info, *edge->meanet); !ok)
    return std::fprintf(stderr, "edgenn-calibrate: %s\n", ok.error().c_str()), 1;
  std::printf("wrote %s\n", out_path.c_str());
  return 0;
}
