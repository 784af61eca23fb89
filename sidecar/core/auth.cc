#include "sidecar/core/auth.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "sidecar/core/strings.h"

namespace invariantd {

std::string_view AuthScopeName(AuthScope scope) {
  return scope == AuthScope::kIngest ? "ingest" : "query";
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  // Every byte of `a` is compared against the secret (cycled when lengths
  // differ); differences are OR-ed together, never branched on.
  size_t len_diff = a.size() ^ b.size();
  volatile unsigned char diff = len_diff != 0 ? 1 : 0;
  if (b.empty()) return a.empty();
  for (size_t i = 0; i < a.size(); ++i) {
    diff = diff | static_cast<unsigned char>(a[i] ^ b[i % b.size()]);
  }
  return diff == 0;
}

bool ParseBearer(std::string_view header, std::string_view* token) {
  constexpr std::string_view kScheme = "bearer";
  if (header.size() <= kScheme.size()) return false;
  if (!absl::EqualsIgnoreCase(AV(header.substr(0, kScheme.size())),
                              AV(kScheme))) {
    return false;
  }
  std::string_view rest = header.substr(kScheme.size());
  if (rest[0] != ' ' && rest[0] != '\t') return false;
  *token = SV(absl::StripAsciiWhitespace(AV(rest)));
  return true;
}

std::vector<std::string> ParseTokenFile(std::string_view content) {
  std::vector<std::string> out;
  for (absl::string_view line : absl::StrSplit(AV(content), '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    out.emplace_back(line);
  }
  return out;
}

void TokenAuth::Add(AuthScope scope, std::string token) {
  if (!token.empty()) {
    tokens_[static_cast<int>(scope)].push_back(std::move(token));
  }
}

AuthDecision TokenAuth::Check(AuthScope scope,
                              std::string_view authorization) const {
  if (!Required(scope)) return AuthDecision{};
  if (authorization.empty()) return AuthDecision{401, "missing"};
  std::string_view presented;
  if (!ParseBearer(authorization, &presented) || presented.empty()) {
    return AuthDecision{401, "invalid"};
  }
  // Every token of both scopes, no early exit.
  bool match[2] = {false, false};
  for (int s = 0; s < 2; ++s) {
    for (const std::string& t : tokens_[s]) {
      match[s] = ConstantTimeEquals(presented, t) | match[s];
    }
  }
  const int own = static_cast<int>(scope);
  if (match[own]) return AuthDecision{};
  if (match[1 - own]) return AuthDecision{403, "wrong_scope"};
  return AuthDecision{401, "invalid"};
}

}  // namespace invariantd
