// Least authority on the HTTP listener: bearer tokens by scope. An ingest
// token may push events (POST /v1/events); a query token may read the
// evidence and act on alerts (/v1/violations, /v1/alerts). A token
// configured for both is valid for both. /metrics and the health endpoints
// need none (scrapers and probes).
//
// A request is refused when its scope has tokens and it presents
//   no Authorization header              -> 401, reason "missing"
//   a token no scope knows (or no Bearer) -> 401, reason "invalid"
//   a valid token of the other scope      -> 403, reason "wrong_scope"
// The presented token is compared with every configured token, each in
// constant time and without stopping at a match, so timing tells neither
// a token's bytes nor which scope it belongs to. Tokens are never logged
// nor echoed.
//
// Thread-safety: immutable after construction; Check is const.
#ifndef INVARIANTD_CORE_AUTH_H_
#define INVARIANTD_CORE_AUTH_H_

#include <string>
#include <string_view>
#include <vector>

namespace invariantd {

enum class AuthScope { kIngest = 0, kQuery = 1 };

std::string_view AuthScopeName(AuthScope scope);  // "ingest" | "query"

struct AuthDecision {
  int status = 200;         // 200, 401 or 403
  std::string_view reason;  // empty when allowed
  bool allowed() const { return status == 200; }
};

class TokenAuth {
 public:
  // A token (non-empty) valid for `scope`.
  void Add(AuthScope scope, std::string token);
  // Whether requests of `scope` must present a token.
  bool Required(AuthScope scope) const {
    return !tokens_[static_cast<int>(scope)].empty();
  }
  AuthDecision Check(AuthScope scope, std::string_view authorization) const;

 private:
  std::vector<std::string> tokens_[2];
};

// True when `a` and `b` are equal. Runs in time that depends only on the
// length of `a` (the presented value), never on where the two differ nor on
// the contents or length of `b` (the secret).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// The token of an "Authorization: Bearer <token>" value (scheme
// case-insensitive, surrounding blanks ignored); false for another scheme.
bool ParseBearer(std::string_view header, std::string_view* token);

// Tokens in a token file: one per line; blank lines and lines starting with
// '#' are ignored (several tokens: rotation without downtime).
std::vector<std::string> ParseTokenFile(std::string_view content);

}  // namespace invariantd

#endif  // INVARIANTD_CORE_AUTH_H_
