// MEANet routing: rules and threshold boundaries, the hard-class remap, calibration choices,
// and the edge runtime agreeing with the calibration's simulation input by input.
#include "edgenn/meanet/config_json.hpp"
#include "edgenn/meanet/edge_runtime.hpp"
#include "edgenn/meanet/observations.hpp"
#include "support/test_support.hpp"

// Inside a namespace of its own: the area's files compile as one unity translation unit.
namespace test_router {

using namespace edgenn;
using namespace edgenn::meanet;

namespace {

// Logits whose softmax is exactly the given probabilities.
std::vector<float> logits_of(const std::vector<float>& p) {
  std::vector<float> l;
  for (float x : p) l.push_back(std::log(x));
  return l;
}

const std::vector<int> kHardIndex = {-1, -1, 0, -1, 1};  // classes 2 and 4 are hard (H = 2, C = 5)

}  // namespace

TEST_CASE("softmax signals: top class, entropy in both units, hard-class mass") {
  std::vector<float> probs(5);
  const auto s = softmax_signals(logits_of({0.1f, 0.2f, 0.4f, 0.1f, 0.2f}).data(), 5, probs.data(), kHardIndex.data());
  CHECK(s.top == 2);
  CHECK(s.confidence == doctest::Approx(0.4));
  const double h = -(2 * 0.1 * std::log(0.1) + 2 * 0.2 * std::log(0.2) + 0.4 * std::log(0.4));
  CHECK(s.entropy == doctest::Approx(h).epsilon(1e-5));
  CHECK(s.entropy_normalized == doctest::Approx(h / std::log(5.0)).epsilon(1e-5));
  CHECK(s.hard_mass == doctest::Approx(0.6));
}

TEST_CASE("argmax_in_hard and hard_mass rules, default mass threshold H/C") {
  RouterConfig cfg;
  cfg.cloud = CloudCheck::off;
  std::vector<float> probs(5);
  auto route = [&](std::vector<float> p) {
    const auto s = softmax_signals(logits_of(p).data(), 5, probs.data(), kHardIndex.data());
    return route_after_main(cfg, s, kHardIndex.data(), 2, 5);
  };
  CHECK(route({0.1f, 0.1f, 0.6f, 0.1f, 0.1f}) == Step::run_extension);  // top class 2 is hard
  CHECK(route({0.5f, 0.1f, 0.2f, 0.0f, 0.2f}) == Step::exit_main);      // top class 0 is easy
  cfg.hard_rule = HardRule::hard_mass;
  CHECK(cfg.mass_threshold(2, 5) == doctest::Approx(0.4));
  CHECK(route({0.49f, 0.1f, 0.21f, 0.0f, 0.2f}) == Step::run_extension);  // mass 0.41 >= 0.4: hard
  CHECK(route({0.5f, 0.11f, 0.2f, 0.0f, 0.19f}) == Step::exit_main);     // mass 0.39 < 0.4: easy
  cfg.hard_mass_threshold = 0.75f;
  CHECK(route({0.1f, 0.1f, 0.6f, 0.1f, 0.1f}) == Step::exit_main);      // mass 0.7 < 0.75: easy despite the top class
}

TEST_CASE("the cloud rule is strict, in the configured unit, before or after the extension") {
  std::vector<float> probs(5);
  const auto s = softmax_signals(logits_of({0.2f, 0.2f, 0.2f, 0.2f, 0.2f}).data(), 5, probs.data(), kHardIndex.data());
  RouterConfig cfg;
  cfg.unit = EntropyUnit::nats;
  cfg.entropy_threshold = s.entropy;  // equal: not above, stays at the edge
  CHECK(route_after_main(cfg, s, kHardIndex.data(), 2, 5) != Step::send_to_cloud);
  cfg.entropy_threshold = std::nextafter(s.entropy, 0.0f);
  CHECK(route_after_main(cfg, s, kHardIndex.data(), 2, 5) == Step::send_to_cloud);
  cfg.unit = EntropyUnit::normalized;
  cfg.entropy_threshold = 0.999f;  // uniform: normalised entropy 1 > 0.999
  CHECK(route_after_main(cfg, s, kHardIndex.data(), 2, 5) == Step::send_to_cloud);
  cfg.entropy_threshold = 1.0f;
  CHECK(route_after_main(cfg, s, kHardIndex.data(), 2, 5) != Step::send_to_cloud);

  // After the extension: a hard input goes through the extension first, then the check
  // uses the extension's entropy; an easy input is checked on the main block's.
  cfg.cloud = CloudCheck::after_extension;
  cfg.unit = EntropyUnit::nats;
  cfg.entropy_threshold = 0.5f;
  const auto hard_uncertain = softmax_signals(logits_of({0.1f, 0.1f, 0.4f, 0.2f, 0.2f}).data(), 5, probs.data(), kHardIndex.data());
  CHECK(route_after_main(cfg, hard_uncertain, kHardIndex.data(), 2, 5) == Step::run_extension);
  std::vector<float> p2(2);
  const auto ext_sure = softmax_signals(logits_of({0.99f, 0.01f}).data(), 2, p2.data());
  const auto ext_unsure = softmax_signals(logits_of({0.5f, 0.5f}).data(), 2, p2.data());
  CHECK(route_after_extension(cfg, ext_sure) == Step::exit_extension);
  CHECK(route_after_extension(cfg, ext_unsure) == Step::send_to_cloud);
  const auto easy_unsure = softmax_signals(logits_of({0.4f, 0.3f, 0.1f, 0.1f, 0.1f}).data(), 5, probs.data(), kHardIndex.data());
  CHECK(route_after_main(cfg, easy_unsure, kHardIndex.data(), 2, 5) == Step::send_to_cloud);
  cfg.cloud = CloudCheck::off;
  CHECK(route_after_main(cfg, easy_unsure, kHardIndex.data(), 2, 5) == Step::exit_main);
}

TEST_CASE("hard-class table and its inverse round-trip") {
  nn::MEANetConfig cfg;
  cfg.main = nn::ResNetCifarConfig{8, 4, 1, 10};
  cfg.adaptive_stem = 4;
  cfg.adaptive_blocks = {{8, 2}, {16, 2}};
  cfg.extension_blocks = {{8, 1}};
  cfg.hard_classes = {6, 4, 2, 0, 3};
  REQUIRE(cfg.validate().is_ok());
  const auto m = nn::build_meanet(cfg);
  for (int h = 0; h < m.num_hard(); ++h) CHECK(m.hard_index[std::size_t(m.hard_classes[std::size_t(h)])] == h);
  for (int c = 0; c < 10; ++c) {
    const bool listed = std::find(cfg.hard_classes.begin(), cfg.hard_classes.end(), c) != cfg.hard_classes.end();
    CHECK(m.is_hard(c) == listed);
    if (listed) CHECK(m.hard_classes[std::size_t(m.hard_index[std::size_t(c)])] == c);
  }
  auto bad = cfg;
  bad.hard_classes = {6, 6};
  CHECK(bad.validate().code() == Error::invalid_argument);
  bad.hard_classes = {10};
  CHECK(bad.validate().code() == Error::invalid_argument);
}

TEST_CASE("calibration picks the cheapest point reaching the target, or the best under the cap") {
  // Three observations: easy and right; hard, extension wrong, cloud right; uncertain main
  // that the cloud gets right.
  std::vector<Observation> obs(3);
  obs[0].label = 0, obs[0].main.top = 0, obs[0].main.entropy = 0.1f, obs[0].cloud_class = 0;
  obs[1].label = 2, obs[1].main.top = 2, obs[1].main.entropy = 0.5f, obs[1].hard = true, obs[1].ext_class = 4,
  obs[1].ext.entropy = 0.3f, obs[1].cloud_class = 2;
  obs[2].label = 1, obs[2].main.top = 3, obs[2].main.entropy = 1.2f, obs[2].cloud_class = 1;
  Costs costs;
  costs.paths.main_macs = 100;
  costs.paths.extension_macs = 50;
  costs.request_bytes = 800;
  RouterConfig cfg;
  const auto pts = sweep(cfg, obs, costs);
  REQUIRE(pts.size() >= 4);
  // T = +inf: edge only, 1 of 3 right; T below 0.5: the hard one goes to the cloud too.
  const auto edge_only = evaluate(RouterConfig{}, obs, costs);
  CHECK(edge_only.accuracy() == doctest::Approx(1.0 / 3));
  CHECK(edge_only.edge_macs == doctest::Approx(100 + 50.0 / 3));
  Target t;
  t.kind = Target::accuracy;
  t.value = 2.0 / 3;
  auto c = choose(pts, t);
  CHECK(c.target_met);
  CHECK(c.point.fraction(Exit::cloud) == doctest::Approx(1.0 / 3));  // only the most uncertain input
  t.value = 1.0;
  c = choose(pts, t);
  CHECK(c.target_met);
  CHECK(c.point.fraction(Exit::cloud) == doctest::Approx(2.0 / 3));
  t.max_cloud_fraction = 0.5;
  c = choose(pts, t);
  CHECK(!c.target_met);  // needs 2/3 of the inputs in the cloud
  CHECK(c.point.accuracy() == doctest::Approx(2.0 / 3));
  t.kind = Target::cloud_fraction;
  t.value = 0.0;
  c = choose(pts, t);
  CHECK(c.point.fraction(Exit::cloud) == 0.0);
}

TEST_CASE("router configuration survives JSON and bad values are named") {
  RouterConfig cfg;
  cfg.hard_rule = HardRule::hard_mass;
  cfg.hard_mass_threshold = 0.3f;
  cfg.cloud = CloudCheck::after_extension;
  cfg.unit = EntropyUnit::normalized;
  cfg.entropy_threshold = 0.25f;
  auto back = router_from_json(router_to_json(cfg), "test");
  REQUIRE(back.ok());
  CHECK(back->hard_rule == cfg.hard_rule);
  CHECK(back->hard_mass_threshold == cfg.hard_mass_threshold);
  CHECK(back->cloud == cfg.cloud);
  CHECK(back->unit == cfg.unit);
  CHECK(back->entropy_threshold == cfg.entropy_threshold);
  RouterConfig never;
  auto j = router_to_json(never);
  CHECK(j["entropy_threshold"].is_null());
  CHECK(std::isinf(router_from_json(j, "t")->entropy_threshold));
  j["cloud_check"] = "sometimes";
  CHECK(router_from_json(j, "t").error().find("sometimes") != std::string::npos);
}

TEST_CASE("the edge runtime takes the exits the calibration simulates, and skips the extension") {
  test::Rng r(17);
  nn::MEANetConfig mc;
  mc.main = nn::ResNetCifarConfig{8, 4, 1, 10};
  mc.adaptive_stem = 4;
  mc.adaptive_blocks = {{8, 2}, {16, 2}};
  mc.extension_blocks = {{16, 1}};
  mc.hard_classes = {0, 2, 4, 6, 8};
  auto m = nn::build_meanet(mc);
  m.visit_layers([&](auto& layer) {
    layer.visit_params([&](const nn::ParamRef& p) {
      const bool var = p.name.find("running_var") != std::string::npos;
      for (auto& v : *p.data) v = var ? r.uniform(0.5f, 1.5f) : r.uniform(-0.5f, 0.5f);
    });
  });
  REQUIRE(m.prepare().is_ok());
  io::InputSpec in;
  io::ImageSet data;
  data.count = 40;
  data.height = data.width = 28;
  for (int i = 0; i < 40 * 28 * 28; ++i) data.pixels.push_back(static_cast<unsigned char>(r.uniform_int(0, 255)));
  for (int i = 0; i < 40; ++i) data.labels.push_back(static_cast<unsigned char>(r.uniform_int(0, 9)));
  for (auto check : {CloudCheck::before_extension, CloudCheck::after_extension}) {
    RouterConfig cfg;
    cfg.cloud = check;
    cfg.unit = EntropyUnit::normalized;
    auto obs = observe<simd::default_arch>(m, in, cfg, data, nullptr, nullptr);
    REQUIRE(obs.ok());
    std::vector<float> ents;
    // The entropy the cloud rule will compare for each input.
    for (const auto& o : *obs)
      ents.push_back(check == CloudCheck::after_extension && o.hard ? o.ext.entropy_normalized : o.main.entropy_normalized);
    std::sort(ents.begin(), ents.end());
    cfg.entropy_threshold = ents[ents.size() / 2];  // about half go to the cloud
    INFO("entropies from ", ents.front(), " to ", ents.back());
    REQUIRE(ents.front() < ents.back());
    Costs costs;
    costs.paths = path_costs(m, in.shape(1));
    EdgeRuntime<> rt(m, in, cfg, costs);
    int cloud_calls = 0;
    const CloudFn cloud = [&](const unsigned char*) {
      ++cloud_calls;
      CloudReply rep;
      rep.ok = true;
      rep.cls = 7;
      rep.bytes_sent = 824;
      return rep;
    };
    for (int i = 0; i < data.count; ++i) {
      const Observation& o = (*obs)[std::size_t(i)];
      Observation oc = o;
      oc.cloud_class = 7;
      const Outcome want = simulate(cfg, oc);
      auto d = rt.classify(data.image(i), &cloud);
      REQUIRE(d.ok());
      CHECK(d->exit == want.exit);
      CHECK(d->cls == want.answer);
      CHECK(d->extension_ran == want.extension_ran);
      CHECK(d->edge_macs == costs.paths.main_macs + (want.extension_ran ? costs.paths.extension_macs : 0));
    }
    CHECK(cloud_calls > 0);
    // Without a cloud, complex inputs fall back to the edge's own answer.
    auto d = rt.classify(data.image(0), nullptr);
    REQUIRE(d.ok());
    if (d->exit == Exit::cloud) CHECK(d->fallback);
  }
}

}  // namespace test_router
