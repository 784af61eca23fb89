#include "sidecar/core/field_path.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace invariantd {
namespace {

bool IsIdentStart(char c) { return absl::ascii_isalpha(c) || c == '_'; }
bool IsIdentChar(char c) {
  return absl::ascii_isalnum(c) || c == '_' || c == '-' || c == '$' || c == '@';
}
bool IsPlainSegment(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsIdentChar(c)) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<FieldPath> FieldPath::Parse(std::string_view text) {
  std::vector<std::string> segs;
  size_t i = 0;
  auto error = [&](std::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(
        AV(what), " at offset ", i, " in field path '", AV(text), "'"));
  };
  if (text.empty()) return error("empty field path");
  while (i < text.size()) {
    if (text[i] == '[') {
      // ["quoted segment"]
      ++i;
      if (i >= text.size() || (text[i] != '"' && text[i] != '\'')) {
        return error("expected a quoted segment after '['");
      }
      const char quote = text[i++];
      std::string seg;
      while (i < text.size() && text[i] != quote) {
        if (text[i] == '\\' && i + 1 < text.size()) ++i;
        seg.push_back(text[i++]);
      }
      if (i >= text.size()) return error("unterminated quoted segment");
      ++i;  // closing quote
      if (i >= text.size() || text[i] != ']') return error("expected ']'");
      ++i;
      segs.push_back(std::move(seg));
    } else {
      const size_t start = i;
      if (!IsIdentStart(text[i]) && !absl::ascii_isdigit(text[i]) &&
          text[i] != '$' && text[i] != '@') {
        return error(absl::StrCat("unexpected character '",
                                  absl::string_view(&text[i], 1), "'"));
      }
      while (i < text.size() && IsIdentChar(text[i])) ++i;
      segs.emplace_back(text.substr(start, i - start));
    }
    if (i < text.size()) {
      if (text[i] == '.') {
        ++i;
        if (i >= text.size()) return error("path ends with '.'");
      } else if (text[i] != '[') {
        return error(absl::StrCat("unexpected character '",
                                  absl::string_view(&text[i], 1), "'"));
      }
    }
  }
  return FieldPath(std::move(segs));
}

std::string FieldPath::ToString() const {
  std::string out;
  for (size_t k = 0; k < segments_.size(); ++k) {
    const std::string& s = segments_[k];
    if (IsPlainSegment(s)) {
      if (k > 0) out.push_back('.');
      out.append(s);
    } else {
      absl::StrAppend(&out, "[\"");
      for (char c : s) {
        if (c == '"' || c == '\\') out.push_back('\\');
        out.push_back(c);
      }
      absl::StrAppend(&out, "\"]");
    }
  }
  return out;
}

std::string FieldPath::Dotted() const { return absl::StrJoin(segments_, "."); }

int FieldSet::Add(const FieldPath& path) {
  auto it = by_path_.find(path);
  if (it != by_path_.end()) return it->second;
  const int slot = size();
  paths_.push_back(path);
  by_path_.emplace(path, slot);
  by_dotted_.emplace(path.Dotted(), slot);
  int node = 0;
  for (const std::string& seg : path.segments()) {
    auto child = trie_[node].children.find(seg);
    if (child == trie_[node].children.end()) {
      const int next = static_cast<int>(trie_.size());
      trie_[node].children.emplace(seg, next);
      trie_.emplace_back();
      node = next;
    } else {
      node = child->second;
    }
  }
  trie_[node].slot = slot;
  return slot;
}

int FieldSet::Find(const FieldPath& path) const {
  auto it = by_path_.find(path);
  return it == by_path_.end() ? -1 : it->second;
}

int FieldSet::FindDotted(std::string_view dotted) const {
  auto it = by_dotted_.find(dotted);
  return it == by_dotted_.end() ? -1 : it->second;
}

}  // namespace invariantd
