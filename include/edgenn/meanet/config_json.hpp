// JSON forms of the router configuration (stored as edgenn.router in a MEANet weights
// file) and of the energy model (tools/energy_model.json). Host side.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "edgenn/io/result.hpp"
#include "edgenn/meanet/energy.hpp"
#include "edgenn/meanet/router.hpp"

namespace edgenn::meanet {

inline nlohmann::json router_to_json(const RouterConfig& c) {
  nlohmann::json j;
  j["hard_rule"] = c.hard_rule == HardRule::hard_mass ? "hard_mass" : "argmax_in_hard";
  j["hard_mass_threshold"] = c.hard_mass_threshold;  // < 0: H / C
  j["cloud_check"] = c.cloud == CloudCheck::off ? "off" : c.cloud == CloudCheck::before_extension ? "before_extension"
                                                                                                   : "after_extension";
  j["entropy_unit"] = c.unit == EntropyUnit::nats ? "nats" : "normalized";
  // JSON has no infinity: null means "never send to the cloud".
  if (std::isfinite(c.entropy_threshold)) {
    j["entropy_threshold"] = c.entropy_threshold;
  } else {
    j["entropy_threshold"] = nullptr;
  }
  return j;
}

inline io::Result<RouterConfig> router_from_json(const nlohmann::json& j, const std::string& where) {
  RouterConfig c;
  if (!j.is_object()) return io::fail(Error::corrupt_data, where + ": router config is not an object");
  auto str = [&](const char* k, const char* def) {
    return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(def);
  };
  const std::string rule = str("hard_rule", "argmax_in_hard"), check = str("cloud_check", "before_extension"),
                    unit = str("entropy_unit", "nats");
  if (rule == "hard_mass") c.hard_rule = HardRule::hard_mass;
  else if (rule != "argmax_in_hard") return io::fail(Error::corrupt_data, where + ": unknown hard_rule '" + rule + "'");
  if (check == "off") c.cloud = CloudCheck::off;
  else if (check == "after_extension") c.cloud = CloudCheck::after_extension;
  else if (check != "before_extension") return io::fail(Error::corrupt_data, where + ": unknown cloud_check '" + check + "'");
  if (unit == "normalized") c.unit = EntropyUnit::normalized;
  else if (unit != "nats") return io::fail(Error::corrupt_data, where + ": unknown entropy_unit '" + unit + "'");
  if (j.contains("hard_mass_threshold")) {
    if (!j["hard_mass_threshold"].is_number()) return io::fail(Error::corrupt_data, where + ": hard_mass_threshold must be a number");
    c.hard_mass_threshold = j["hard_mass_threshold"].get<float>();
  }
  if (j.contains("entropy_threshold") && !j["entropy_threshold"].is_null()) {
    if (!j["entropy_threshold"].is_number()) return io::fail(Error::corrupt_data, where + ": entropy_threshold must be a number or null");
    c.entropy_threshold = j["entropy_threshold"].get<float>();
  }
  return c;
}

inline io::Result<EnergyModel> energy_from_json(const nlohmann::json& j, const std::string& where) {
  EnergyModel e;
  if (!j.is_object()) return io::fail(Error::corrupt_data, where + ": energy model is not an object");
  const std::pair<const char*, double*> fields[] = {
      {"mac_pj", &e.mac_pj},           {"weight_word_pj", &e.weight_word_pj}, {"act_word_pj", &e.act_word_pj},
      {"uplink_mbps", &e.uplink_mbps}, {"alpha_up_mw_per_mbps", &e.alpha_up_mw_per_mbps},
      {"beta_mw", &e.beta_mw},         {"promotion_ms", &e.promotion_ms},     {"promotion_mw", &e.promotion_mw},
      {"tail_ms", &e.tail_ms},         {"tail_mw", &e.tail_mw}};
  for (const auto& [k, dst] : fields) {
    if (!j.contains(k)) continue;
    const auto& v = j[k].is_object() && j[k].contains("value") ? j[k]["value"] : j[k];
    if (!v.is_number() || v.get<double>() < 0)
      return io::fail(Error::corrupt_data, where + ": '" + k + "' must be a non-negative number");
    *dst = v.get<double>();
  }
  if (e.uplink_mbps <= 0) return io::fail(Error::corrupt_data, where + ": uplink_mbps must be positive");
  if (j.contains("include_promotion_and_tail")) {
    const auto& v = j["include_promotion_and_tail"].is_object() ? j["include_promotion_and_tail"]["value"]
                                                                 : j["include_promotion_and_tail"];
    if (!v.is_boolean()) return io::fail(Error::corrupt_data, where + ": include_promotion_and_tail must be true or false");
    e.include_promotion_and_tail = v.get<bool>();
  }
  return e;
}

}  // namespace edgenn::meanet
