#include "sidecar/violation_format.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
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

std::string Dump(const Json& j) {
  // ensure_ascii: every non-ASCII character is written as \uXXXX, so no
  // raw line separator (U+2028/2029), bidi control or C1 control from the
  // input ever reaches a log pipeline; invalid UTF-8 becomes U+FFFD.
  return j.dump(-1, ' ', /*ensure_ascii=*/true, Json::error_handler_t::replace);
}

Json ParseOrString(const std::string& text) {
  Json parsed = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return text;
  return parsed;
}

// The fields a violation is reported with everywhere (replay, run, the
// evidence API), in that order: a Violation and an EvidenceRecord name
// them alike.
template <typename R>
Json ReportedFields(const R& r, Json key, Json observed, Json previous) {
  Json j;
  j["id"] = r.id;
  j["rule"] = r.rule;
  j["kind"] = r.kind;
  j["severity"] = r.severity;
  j["reason"] = r.reason;
  j["key"] = std::move(key);
  j["source"] = r.source;
  j["line"] = r.line;
  j["offset"] = r.offset;
  j["observed"] = std::move(observed);
  j["previous"] = std::move(previous);
  if (r.previous_line != 0) {
    j["previous_line"] = r.previous_line;
  } else {
    j["previous_line"] = nullptr;
  }
  j["message"] = r.message;
  return j;
}

}  // namespace

std::string ViolationJson(const Violation& v) {
  Json key = Json::object();
  for (const auto& [name, value] : v.key) key[name] = ValueToJson(value);
  Json j = ReportedFields(v, std::move(key), ValueToJson(v.observed),
                          ValueToJson(v.previous));
  j["description"] = v.description;
  j["runbook"] = v.runbook;
  Json labels = Json::object();
  for (const auto& [k, val] : v.labels) labels[k] = val;
  j["labels"] = std::move(labels);
  return Dump(j);
}

EvidenceRecord ViolationEvidence(const Violation& v,
                                 std::string_view ruleset_digest,
                                 std::string_view version,
                                 int64_t detected_unix_ms) {
  EvidenceRecord r;
  r.id = v.id;
  r.rule = v.rule;
  r.kind = v.kind;
  r.severity = v.severity;
  r.reason = v.reason;
  r.message = v.message;
  Json key = Json::object();
  for (const auto& [name, value] : v.key) {
    key[name] = ValueToJson(value);
    r.key.emplace_back(name, value.ToText());
  }
  r.key_json = Dump(key);
  r.observed_json = Dump(ValueToJson(v.observed));
  r.previous_json = Dump(ValueToJson(v.previous));
  r.source = v.source;
  r.stream = v.stream;
  r.line = v.line;
  r.offset = v.offset;
  r.previous_line = v.previous_line;
  r.witness = v.witness;
  r.ruleset_digest = std::string(ruleset_digest);
  r.version = std::string(version);
  r.detected_unix_ms = detected_unix_ms;
  return r;
}

std::string EvidenceJson(const EvidenceRecord& r) {
  Json j = ReportedFields(r, ParseOrString(r.key_json),
                          ParseOrString(r.observed_json),
                          ParseOrString(r.previous_json));
  j["seq"] = r.seq;
  j["stream"] = r.stream;
  j["witness"] = r.witness;
  j["witness_base64"] = absl::Base64Escape(r.witness);
  j["ruleset_digest"] = r.ruleset_digest;
  j["version"] = r.version;
  j["detected_at"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ",
                                      absl::FromUnixMillis(r.detected_unix_ms),
                                      absl::UTCTimeZone());
  j["prev_hash"] = r.prev_hash;
  j["hash"] = r.hash;
  return Dump(j);
}

std::string EvidenceText(const EvidenceRecord& r) {
  std::string key;
  const Json parsed = ParseOrString(r.key_json);
  if (parsed.is_object()) {
    for (const auto& [name, value] : parsed.items()) {
      absl::StrAppend(
          &key, key.empty() ? "" : " ", name, "=",
          value.is_string() ? value.get<std::string>() : Dump(value));
    }
  }
  return absl::StrCat(r.seq, " ", r.id, " ", SanitizeText(r.source), ":",
                      r.line, ": ", r.severity, " ", r.rule, " (", r.kind, "/",
                      r.reason, ") {", SanitizeText(key, 512),
                      "}: ", SanitizeText(r.message, 1024));
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
