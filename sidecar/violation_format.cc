#include "sidecar/violation_format.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "sidecar/core/sanitize.h"

namespace invariantd {
namespace {

using Json = nlohmann::ordered_json;

Json ValueToJson(const OwnedValue& owned) {
  const Value v = owned.view();
  switch (v.kind()) {
    case ValueKind::kMissing:
    case ValueKind::kNull:
      return nullptr;
    case ValueKind::kBool:
      return v.bool_value();
    case ValueKind::kInt:
      return v.int_value();
    case ValueKind::kDouble:
      return v.double_value();
    case ValueKind::kString:
      return std::string(v.str());
    case ValueKind::kJson: {
      Json parsed = Json::parse(v.str(), nullptr, /*allow_exceptions=*/false);
      if (parsed.is_discarded()) return std::string(v.str());
      return parsed;
    }
  }
  return nullptr;
}

}  // namespace

std::string ViolationJson(const Violation& v) {
  Json j;
  j["id"] = v.id;
  j["rule"] = v.rule;
  j["kind"] = v.kind;
  j["severity"] = v.severity;
  j["reason"] = v.reason;
  Json key = Json::object();
  for (const auto& [name, value] : v.key) key[name] = ValueToJson(value);
  j["key"] = std::move(key);
  j["source"] = v.source;
  j["line"] = v.line;
  j["offset"] = v.offset;
  j["observed"] = ValueToJson(v.observed);
  j["previous"] = ValueToJson(v.previous);
  if (v.previous_line != 0) {
    j["previous_line"] = v.previous_line;
  } else {
    j["previous_line"] = nullptr;
  }
  j["message"] = v.message;
  j["description"] = v.description;
  j["runbook"] = v.runbook;
  Json labels = Json::object();
  for (const auto& [k, val] : v.labels) labels[k] = val;
  j["labels"] = std::move(labels);
  // ensure_ascii: every non-ASCII character is written as \uXXXX, so no
  // raw line separator (U+2028/2029), bidi control or C1 control from the
  // input ever reaches a log pipeline; invalid UTF-8 becomes U+FFFD.
  return j.dump(-1, ' ', /*ensure_ascii=*/true, Json::error_handler_t::replace);
}

std::string ViolationText(const Violation& v) {
  std::string key;
  for (const auto& [name, value] : v.key) {
    absl::StrAppend(&key, key.empty() ? "" : " ", name, "=", value.ToText());
  }
  return absl::StrCat(SanitizeText(v.source), ":", v.line, ": ", v.severity,
                      " ", v.rule, " (", v.kind, "/", v.reason, ") {",
                      SanitizeText(key, 512),
                      "}: ", SanitizeText(v.message, 1024));
}

}  // namespace invariantd
