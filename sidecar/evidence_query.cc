#include "sidecar/evidence_query.h"

#include <charconv>
#include <ostream>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "sidecar/commands.h"
#include "sidecar/core/sanitize.h"
#include "sidecar/core/strings.h"
#include "sidecar/violation_format.h"

namespace invariantd {
namespace {

template <typename T>
bool ParseNumber(std::string_view s, T* out) {
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, *out);
  return ec == std::errc() && p == end && !s.empty();
}

}  // namespace

std::string EvidencePath(const std::string& data_dir) {
  return data_dir + "/evidence.db";
}

std::string StatePath(const std::string& data_dir) {
  return data_dir + "/state.db";
}

absl::StatusOr<int64_t> ParseTimeBound(std::string_view text) {
  int64_t ms = 0;
  if (ParseNumber(text, &ms)) return ms;
  absl::Time t;
  std::string error;
  if (absl::ParseTime(absl::RFC3339_full, AV(text), &t, &error)) {
    return absl::ToUnixMillis(t);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("time '", SanitizeText(text, 64),
                   "' is neither RFC 3339 (2026-11-22T07:00:00Z) nor "
                   "milliseconds since the epoch"));
}

absl::StatusOr<EvidenceQuery> ParseEvidenceQuery(
    const std::vector<std::pair<std::string, std::string>>& params) {
  EvidenceQuery q;
  for (const auto& [name, value] : params) {
    if (name == "rule") {
      q.rule = value;
    } else if (name == "key") {
      const size_t eq = value.find('=');
      if (eq == std::string::npos || eq == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("key '", SanitizeText(value, 128),
                         "' is not field=value (e.g. event.nid=3)"));
      }
      q.key.emplace_back(value.substr(0, eq), value.substr(eq + 1));
    } else if (name == "since" || name == "until") {
      auto t = ParseTimeBound(value);
      if (!t.ok()) return t.status();
      (name == "since" ? q.since_unix_ms : q.until_unix_ms) = *t;
    } else if (name == "limit") {
      size_t n = 0;
      if (!ParseNumber(value, &n) || n < 1 || n > kMaxEvidencePage) {
        return absl::InvalidArgumentError(
            absl::StrCat("limit must be from 1 to ", kMaxEvidencePage));
      }
      q.limit = n;
    } else if (name == "cursor") {
      if (!ParseNumber(value, &q.after_seq)) {
        return absl::InvalidArgumentError("cursor is not one this API gave");
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown parameter '", SanitizeText(name, 64),
                       "' (rule, key, since, until, limit, cursor)"));
    }
  }
  return q;
}

std::string EvidencePageJson(const std::vector<EvidenceRecord>& page,
                             size_t limit) {
  std::string out = "{\"violations\":[";
  for (size_t i = 0; i < page.size(); ++i) {
    if (i > 0) out += ",";
    out += EvidenceJson(page[i]);
  }
  out += "],\"next_cursor\":";
  if (!page.empty() && page.size() >= limit) {
    absl::StrAppend(&out, "\"", page.back().seq, "\"");
  } else {
    out += "null";
  }
  out += "}";
  return out;
}

int RunEvidence(const EvidenceCommand& cmd, std::ostream& out,
                std::ostream& err) {
  const std::string path = EvidencePath(cmd.data_dir);
  auto opened = EvidenceStore::Open(path, /*read_only=*/true);
  if (!opened.ok()) {
    err << "invariantd evidence: " << opened.status().message() << "\n";
    return kExitError;
  }
  EvidenceStore& store = **opened;
  if (cmd.action == "verify") {
    auto v = store.Verify();
    if (!v.ok()) {
      err << "invariantd evidence verify: " << v.status().message() << "\n";
      return kExitError;
    }
    if (cmd.json) {
      nlohmann::ordered_json j;
      j["ok"] = v->ok;
      j["records"] = v->records;
      j["anchor_seq"] = v->anchor_seq;
      if (v->ok) {
        j["head_seq"] = v->head_seq;
        j["head_hash"] = v->head_hash;
      } else {
        j["bad_seq"] = v->bad_seq;
        j["bad_id"] = v->bad_id;
        j["problem"] = v->problem;
      }
      out << j.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace)
          << "\n";
    } else if (v->ok) {
      out << "evidence chain intact: " << v->records << " records";
      if (v->anchor_seq > 0) {
        out << " (" << v->anchor_seq << " older ones pruned)";
      }
      out << ", head " << v->head_seq << " " << v->head_hash << "\n";
    } else {
      out << "evidence chain BROKEN at record " << v->bad_seq;
      if (!v->bad_id.empty()) out << " (id " << v->bad_id << ")";
      out << ": " << v->problem << "; " << v->records
          << " records before it verified\n";
    }
    return v->ok ? kExitOk : kExitViolations;
  }
  auto print = [&](const EvidenceRecord& r) {
    out << (cmd.format == "text" ? EvidenceText(r) : EvidenceJson(r)) << "\n";
  };
  if (cmd.action == "show") {
    auto r = store.Get(cmd.id);
    if (!r.ok()) {
      err << "invariantd evidence show: " << r.status().message() << "\n";
      return kExitError;
    }
    if (!r->has_value()) {
      err << "invariantd evidence show: no violation with id "
          << SanitizeText(cmd.id, 64) << "\n";
      return kExitViolations;
    }
    print(**r);
    return kExitOk;
  }
  // query: every page, in order.
  auto q = ParseEvidenceQuery(cmd.params);
  if (!q.ok()) {
    err << "invariantd evidence query: " << q.status().message() << "\n";
    return kExitError;
  }
  size_t remaining = q->limit;
  bool unlimited = true;
  for (const auto& [name, value] : cmd.params) {
    if (name == "limit") unlimited = false;
  }
  EvidenceQuery page = *q;
  page.limit = kMaxEvidencePage;
  while (unlimited || remaining > 0) {
    if (!unlimited) page.limit = std::min(remaining, kMaxEvidencePage);
    auto rows = store.Find(page);
    if (!rows.ok()) {
      err << "invariantd evidence query: " << rows.status().message() << "\n";
      return kExitError;
    }
    for (const EvidenceRecord& r : *rows) print(r);
    if (!unlimited) remaining -= rows->size();
    if (rows->size() < page.limit) break;
    page.after_seq = rows->back().seq;
  }
  return kExitOk;
}

}  // namespace invariantd
