// FieldPath and FieldSet: how rules name event fields, and how decoders learn
// which fields to extract.
//
// A FieldPath is a dotted path into a nested event: `event.state.term`,
// `sourceIPs.0`, `metadata.labels["app.kubernetes.io/name"]`. A numeric
// segment indexes an array (and also matches an object key spelled the same).
//
// A FieldSet is the projection a compiled RuleSet needs: every distinct path
// any rule reads, each given a dense *slot*. Decoders fill `Event::fields`
// by slot and never materialize fields nobody reads; that is what keeps
// decoding at parse speed. Phases: built with Add() while rules compile,
// then frozen and used const from any number of threads.
#ifndef INVARIANTD_CORE_FIELD_PATH_H_
#define INVARIANTD_CORE_FIELD_PATH_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "sidecar/core/strings.h"

namespace invariantd {

class FieldPath {
 public:
  FieldPath() = default;
  explicit FieldPath(std::vector<std::string> segments)
      : segments_(std::move(segments)) {}

  // Parses `a.b.0` and `a["x.y"].b`. Errors name the offending byte offset.
  static absl::StatusOr<FieldPath> Parse(std::string_view text);

  const std::vector<std::string>& segments() const { return segments_; }
  bool empty() const { return segments_.empty(); }
  // Canonical text: segments joined by '.', a segment that is not a plain
  // identifier or index is written as ["..."].
  std::string ToString() const;
  // Segments joined by '.', unquoted: how flat formats (logfmt) spell keys.
  std::string Dotted() const;

  friend bool operator==(const FieldPath& a, const FieldPath& b) {
    return a.segments_ == b.segments_;
  }
  template <typename H>
  friend H AbslHashValue(H h, const FieldPath& p) {
    return H::combine(std::move(h), p.segments_);
  }

 private:
  std::vector<std::string> segments_;
};

class FieldSet {
 public:
  struct TrieNode {
    // Child node index by segment text.
    StringMap<int> children;
    int slot = -1;  // >= 0 when a requested path ends at this node
  };

  // Returns the slot of `path`, adding it when new.
  int Add(const FieldPath& path);
  int size() const { return static_cast<int>(paths_.size()); }
  const FieldPath& path(int slot) const { return paths_[slot]; }
  // Slot of `path`, or -1.
  int Find(const FieldPath& path) const;
  // Slot for a flat key spelled `a.b.c` (see FieldPath::Dotted), or -1.
  int FindDotted(std::string_view dotted) const;

  // The trie of all paths; node 0 is the root (the event object itself).
  const std::vector<TrieNode>& trie() const { return trie_; }

 private:
  std::vector<FieldPath> paths_;
  absl::flat_hash_map<FieldPath, int> by_path_;
  StringMap<int> by_dotted_;
  std::vector<TrieNode> trie_{TrieNode{}};
};

}  // namespace invariantd

#endif  // INVARIANTD_CORE_FIELD_PATH_H_
