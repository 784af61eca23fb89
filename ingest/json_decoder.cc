// JSON lines decoder: simdjson On-Demand, one pass guided by the FieldSet's
// trie.
//
// For each object the decoder walks the fields in document order, looks the
// key up among the current trie node's children and only descends into (or
// materializes) values somebody asked for; everything else is skipped by
// simdjson without being parsed. Consequences worth knowing:
//
// - Duplicate keys: the last occurrence wins, per path. (`{"a":1,"a":2}`
//   yields a=2; for `{"a":{"x":1},"a":{"y":2}}` both a.x=1 and a.y=2 are
//   set, since each occurrence fills what it contains.)
// - Validation is what On-Demand gives, plus: the whole line is checked for
//   UTF-8 and string termination, nesting depth is checked here, the
//   top-level object's structure and every value that is read are fully
//   validated, and so is every object/array handed out as raw JSON.
//   Malformed bytes *inside* a value nobody reads (e.g. `"x":[1 2]` when no
//   rule reads `x`) may go unnoticed; such a record decodes fine.
// - An object/array requested as a whole gets its raw JSON text; that text
//   is parsed again by a second parser, which validates it and fills the
//   paths below it when those are requested too (`a` and `a.b`).
//
// Strings without escapes are viewed in place in the line; escaped strings
// are unescaped by simdjson into its parser buffer (top level) or copied into
// `arena_` (re-parsed sub-documents, whose parsers may be reused within the
// same Decode). All of it is valid until the next Decode.
#include <simdjson.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ingest/decoder.h"
#include "ingest/decoder_internal.h"
#include "sidecar/core/event.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace ingest_internal {

bool IsValidUtf8Fast(std::string_view s) {
  return simdjson::validate_utf8(s.data(), s.size());
}

namespace {

namespace od = simdjson::ondemand;
using simdjson::error_code;
using simdjson::SUCCESS;

static_assert(kLinePadding >= simdjson::SIMDJSON_PADDING,
              "LineReader's padding must cover simdjson's");
static_assert(std::endian::native == std::endian::little,
              "FindChild masks a key's low bytes as the first ones");

// Up to this many children a trie node is searched linearly (faster than
// hashing for the handful of keys a rule set typically reads per object).
constexpr uint32_t kLinearChildren = 8;

bool IsJsonSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

std::string_view TrimRight(std::string_view s) {
  while (!s.empty() && IsJsonSpace(s.back())) s.remove_suffix(1);
  return s;
}

// `p` points just past the opening quote of a JSON string that simdjson's
// stage 1 has seen closed. When the string has no escape, stores its length
// and returns true.
inline bool PlainStringLength(const char* p, size_t* len) {
  const char* q = p;
  while (*q != '"') {
    if (*q == '\\') return false;
    ++q;
  }
  *len = static_cast<size_t>(q - p);
  return true;
}

// The index a canonical decimal array segment ("0", "17") stands for, or -1.
int64_t ArrayIndexOf(std::string_view seg) {
  if (seg.empty() || seg.size() > 18) return -1;
  if (seg.size() > 1 && seg[0] == '0') return -1;
  int64_t v = 0;
  const auto r = std::from_chars(seg.data(), seg.data() + seg.size(), v);
  if (r.ec != std::errc() || r.ptr != seg.data() + seg.size()) return -1;
  return v;
}

std::string_view TypeName(od::json_type t) {
  switch (t) {
    case od::json_type::array:
      return "an array";
    case od::json_type::object:
      return "an object";
    case od::json_type::number:
      return "a number";
    case od::json_type::string:
      return "a string";
    case od::json_type::boolean:
      return "a boolean";
    case od::json_type::null:
      return "null";
  }
  return "a value";
}

// Counts '{' and '[' (and, with kColons, ':') in `line`, strings included.
// Byte-wide counters over blocks of 255 (they cannot wrap): the compiler
// keeps the loop in byte lanes, 4x fewer instructions than widening every
// byte to a size_t.
template <bool kColons>
void CountOpensAndColons(std::string_view line, size_t* opens, size_t* colons) {
  const size_t n = line.size();
  for (size_t i = 0; i < n;) {
    const size_t stop = std::min(n, i + 255);
    uint8_t block_opens = 0;
    uint8_t block_colons = 0;
    for (; i < stop; ++i) {
      const char c = line[i];
      block_opens += static_cast<uint8_t>((c == '{') | (c == '['));
      if constexpr (kColons) block_colons += static_cast<uint8_t>(c == ':');
    }
    *opens += block_opens;
    if constexpr (kColons) *colons += block_colons;
  }
}

// Checks the record's shape against the limits before it is parsed: the
// nesting depth, the object members at every depth (a ':' outside a
// string) and the bytes of each string as written. Returns the rejection of
// the first limit passed, naming its column. Cheap for records that cannot
// pass a limit: one branch-free pass counts the brackets and colons, which
// bound the depth and the members, and a record no longer than the string
// limit holds no string over it; only a record that might be over a limit
// is scanned string by string.
absl::Status CheckShape(std::string_view line, const DecoderLimits& limits,
                        std::string_view* reason) {
  const size_t max_depth = static_cast<size_t>(limits.max_depth);
  const size_t n = line.size();
  bool may_fail = n > limits.max_string_bytes;
  if (!may_fail && n > limits.max_fields) {
    size_t opens = 0;
    size_t colons = 0;
    CountOpensAndColons<true>(line, &opens, &colons);
    may_fail = opens > max_depth || colons > limits.max_fields;
  } else if (!may_fail && n > max_depth) {
    // Too short for too many members (each has a ':'): brackets only.
    size_t opens = 0;
    CountOpensAndColons<false>(line, &opens, nullptr);
    may_fail = opens > max_depth;
  }
  if (!may_fail) return absl::OkStatus();
  size_t depth = 0;
  size_t fields = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = line[i];
    if (c == '"') {
      const size_t open = i;
      for (++i; i < n && line[i] != '"'; ++i) {
        if (line[i] == '\\') ++i;
      }
      // An unterminated string is the parser's to report.
      const size_t size = std::min(i, n) - open - 1;
      if (absl::Status st = CheckStringSize(size, open, limits, reason);
          !st.ok()) {
        return st;
      }
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) {
        return Reject(reject::kTooDeep,
                      absl::StrCat("JSON nesting deeper than ", max_depth),
                      i + 1, reason);
      }
    } else if ((c == '}' || c == ']') && depth > 0) {
      --depth;
    } else if (c == ':' && ++fields > limits.max_fields) {
      return Reject(reject::kTooManyFields,
                    absl::StrCat("more than ", limits.max_fields, " fields"),
                    i + 1, reason);
    }
  }
  return absl::OkStatus();
}

class JsonDecoder final : public Decoder {
 public:
  JsonDecoder(const FieldSet& fields, const DecoderLimits& limits);

  absl::Status Decode(std::string_view line, Event* event,
                      std::string_view* reason) override;

 private:
  struct Node {
    int slot = -1;
    uint32_t first = 0;      // children in keys_/key_nodes_[first, first+count)
    uint32_t count = 0;      // number of children
    int64_t max_index = -1;  // largest array-index child, -1 if none
    const StringMap<int>* map = nullptr;  // set when children are many
  };

  // `padded`: at least 8 bytes are readable from key.data() (a key viewed
  // in the line, which is followed by kLinePadding bytes).
  int FindChild(const Node& node, std::string_view key, bool padded) const;
  // The Visit functions fill the slots of `node`'s subtree from a value.
  // With `strict`, values no path selects are validated instead of skipped.
  error_code VisitObject(od::object object, int node, int level, bool strict);
  error_code VisitArray(od::array array, int node, int level, bool strict);
  error_code VisitValue(od::value& value, int node, int level, bool strict);
  // Re-parses `raw` (an object or array inside the line) at re-parse level
  // `level` and visits it strictly.
  error_code VisitRawContainer(std::string_view raw, int node, int level);
  // Parses all of `value`, to validate it.
  static error_code Validate(od::value value);
  error_code StoreScalar(od::value& value, od::json_type type, int slot,
                         int level);
  std::string_view Keep(std::string_view s, int level);
  absl::Status Fail(error_code error, std::string_view* reason);

  const int slots_;
  const DecoderLimits limits_;
  std::vector<Node> nodes_;
  std::vector<std::string> keys_;
  std::vector<int> key_nodes_;
  // The first 8 bytes of keys_[i], zero-extended: keys of up to 8 bytes
  // (most) are matched by one compare.
  std::vector<uint64_t> key_words_;

  od::parser parser_;
  // sub_parsers_[k] re-parses containers at re-parse nesting level k + 1.
  std::vector<std::unique_ptr<od::parser>> sub_parsers_;
  std::string arena_;

  // State of the Decode in progress.
  Value* fields_ = nullptr;
  std::string_view line_;
  const char* padded_end_ = nullptr;
  const char* error_location_ = nullptr;
  bool error_located_ = false;
};

JsonDecoder::JsonDecoder(const FieldSet& fields, const DecoderLimits& limits)
    : slots_(fields.size()), limits_(limits) {
  const std::vector<FieldSet::TrieNode>& trie = fields.trie();
  nodes_.resize(trie.size());
  for (size_t i = 0; i < trie.size(); ++i) {
    Node& node = nodes_[i];
    node.slot = trie[i].slot;
    node.count = static_cast<uint32_t>(trie[i].children.size());
    for (const auto& [key, child] : trie[i].children) {
      node.max_index = std::max(node.max_index, ArrayIndexOf(key));
    }
    if (node.count > kLinearChildren) {
      node.map = &trie[i].children;
      continue;
    }
    node.first = static_cast<uint32_t>(keys_.size());
    for (const auto& [key, child] : trie[i].children) {
      keys_.push_back(key);
      key_nodes_.push_back(child);
      uint64_t word = 0;
      std::memcpy(&word, key.data(), std::min<size_t>(key.size(), 8));
      key_words_.push_back(word);
    }
  }
}

int JsonDecoder::FindChild(const Node& node, std::string_view key,
                           bool padded) const {
  if (node.map != nullptr) {
    const auto it = node.map->find(key);
    return it == node.map->end() ? -1 : it->second;
  }
  const uint32_t end = node.first + node.count;
  if (key.size() <= 8) {
    // One word compare: the key's bytes, zero-extended.
    uint64_t word = 0;
    if (padded) {
      std::memcpy(&word, key.data(), 8);
      if (key.size() < 8) word &= (uint64_t{1} << (8 * key.size())) - 1;
    } else {
      std::memcpy(&word, key.data(), key.size());
    }
    for (uint32_t i = node.first; i < end; ++i) {
      if (key_words_[i] == word && keys_[i].size() == key.size()) {
        return key_nodes_[i];
      }
    }
    return -1;
  }
  for (uint32_t i = node.first; i < end; ++i) {
    const std::string& k = keys_[i];
    // Length and first byte reject most candidates without a memcmp call.
    if (k.size() == key.size() && k[0] == key[0] &&
        std::memcmp(k.data(), key.data(), key.size()) == 0) {
      return key_nodes_[i];
    }
  }
  return -1;
}

error_code JsonDecoder::VisitObject(od::object object, int node_index,
                                    int level, bool strict) {
  const Node& node = nodes_[node_index];
  for (auto field_result : object) {
    error_code error = field_result.error();
    if (error) return error;
    od::field& field = field_result.value_unsafe();
    std::string_view key;
    const char* raw = field.key().raw();
    size_t len;
    const bool in_line = PlainStringLength(raw, &len);
    if (in_line) {
      key = std::string_view(raw, len);
    } else {
      error = field.unescaped_key().get(key);
      if (error) return error;
    }
    const int child = FindChild(node, key, in_line);
    if (child >= 0) {
      error = VisitValue(field.value(), child, level, strict);
    } else if (strict) {
      error = Validate(field.value());
    }  // else simdjson skips the value
    if (error) return error;
  }
  return SUCCESS;
}

error_code JsonDecoder::VisitArray(od::array array, int node_index, int level,
                                   bool strict) {
  const Node& node = nodes_[node_index];
  if (node.max_index < 0 && !strict) return SUCCESS;  // the parent skips it
  char digits[24];
  int64_t index = 0;
  for (auto element : array) {
    error_code error = element.error();
    if (error) return error;
    od::value& value = element.value_unsafe();
    int child = -1;
    if (index <= node.max_index) {
      const auto r = std::to_chars(digits, digits + sizeof(digits), index);
      child = FindChild(
          node, std::string_view(digits, static_cast<size_t>(r.ptr - digits)),
          /*padded=*/false);
    }
    if (child >= 0) {
      error = VisitValue(value, child, level, strict);
    } else if (strict) {
      error = Validate(value);
    }
    if (error) return error;
    // Past the last requested index the parent skips the rest.
    if (++index > node.max_index && !strict) break;
  }
  return SUCCESS;
}

error_code JsonDecoder::Validate(od::value value) {
  od::json_type type;
  error_code error = value.type().get(type);
  if (error) return error;
  switch (type) {
    case od::json_type::object: {
      od::object object;
      error = value.get_object().get(object);
      if (error) return error;
      for (auto field_result : object) {
        od::field field;
        error = std::move(field_result).get(field);
        if (error) return error;
        std::string_view key;
        error = field.unescaped_key().get(key);
        if (!error) error = Validate(field.value());
        if (error) return error;
      }
      return SUCCESS;
    }
    case od::json_type::array: {
      od::array array;
      error = value.get_array().get(array);
      if (error) return error;
      for (auto element : array) {
        od::value v;
        error = std::move(element).get(v);
        if (!error) error = Validate(v);
        if (error) return error;
      }
      return SUCCESS;
    }
    case od::json_type::string:
      return value.get_string().error();
    case od::json_type::number: {
      od::number number;
      if (value.get_number().get(number) == SUCCESS) return SUCCESS;
      return value.get_double().error();
    }
    case od::json_type::boolean:
      return value.get_bool().error();
    case od::json_type::null: {
      bool is_null = false;
      error = value.is_null().get(is_null);
      if (error) return error;
      return is_null ? SUCCESS : simdjson::INCORRECT_TYPE;
    }
  }
  return simdjson::INCORRECT_TYPE;
}

error_code JsonDecoder::VisitValue(od::value& value, int node_index, int level,
                                   bool strict) {
  const Node& node = nodes_[node_index];
  od::json_type type;
  error_code error = value.type().get(type);
  if (error) return error;
  if (type != od::json_type::object && type != od::json_type::array) {
    // A scalar where paths continue below: those stay missing.
    if (node.slot < 0) return strict ? Validate(value) : SUCCESS;
    return StoreScalar(value, type, node.slot, level);
  }
  if (node.slot < 0) {
    if (type == od::json_type::object) {
      od::object object;
      error = value.get_object().get(object);
      if (error) return error;
      return VisitObject(object, node_index, level, strict);
    }
    od::array array;
    error = value.get_array().get(array);
    if (error) return error;
    return VisitArray(array, node_index, level, strict);
  }
  // Requested as a whole: keep the raw text (it lives in the line).
  std::string_view raw;
  if (type == od::json_type::object) {
    od::object object;
    error = value.get_object().get(object);
    if (!error) error = object.raw_json().get(raw);
  } else {
    od::array array;
    error = value.get_array().get(array);
    if (!error) error = array.raw_json().get(raw);
  }
  if (error) return error;
  raw = TrimRight(raw);
  fields_[node.slot] = Value::Json(raw);
  // Parse it again: to validate what we hand out, and for the paths below.
  return VisitRawContainer(raw, node_index, level + 1);
}

error_code JsonDecoder::VisitRawContainer(std::string_view raw, int node_index,
                                          int level) {
  while (sub_parsers_.size() < static_cast<size_t>(level)) {
    sub_parsers_.push_back(std::make_unique<od::parser>());
  }
  od::parser& parser = *sub_parsers_[static_cast<size_t>(level) - 1];
  // `raw` is inside the line, so the line's padding follows it.
  const size_t capacity = static_cast<size_t>(padded_end_ - raw.data());
  od::document doc;
  error_code error = parser.iterate(raw.data(), raw.size(), capacity).get(doc);
  if (error) return error;
  od::json_type type;
  error = doc.type().get(type);
  if (!error) {
    if (type == od::json_type::object) {
      od::object object;
      error = doc.get_object().get(object);
      if (!error) error = VisitObject(object, node_index, level, true);
    } else {
      od::array array;
      error = doc.get_array().get(array);
      if (!error) error = VisitArray(array, node_index, level, true);
    }
  }
  if (error && !error_located_) {
    error_located_ = true;
    if (doc.current_location().get(error_location_) != SUCCESS) {
      error_location_ = nullptr;
    }
  }
  return error;
}

std::string_view JsonDecoder::Keep(std::string_view s, int level) {
  // Top-level strings stay in parser_'s buffer, which lives until the next
  // Decode. Strings of re-parsed containers are copied: their parser may be
  // reused for a sibling container in this same Decode. Every string token
  // of the line is unescaped at most once and unescaping never grows it, so
  // the total fits in line_.size() bytes and the reserve below (done while
  // the arena is still empty, i.e. before any view into it exists) keeps
  // earlier views valid.
  if (level == 0) return s;
  if (arena_.empty() && arena_.capacity() < line_.size()) {
    arena_.reserve(line_.size());
  }
  assert(arena_.size() + s.size() <= arena_.capacity());
  const size_t at = arena_.size();
  arena_.append(s);
  return std::string_view(arena_.data() + at, s.size());
}

error_code JsonDecoder::StoreScalar(od::value& value, od::json_type type,
                                    int slot, int level) {
  error_code error = SUCCESS;
  switch (type) {
    case od::json_type::string: {
      const std::string_view token = value.raw_json_token();
      size_t len;
      if (PlainStringLength(token.data() + 1, &len)) {
        fields_[slot] = Value::String(std::string_view(token.data() + 1, len));
        return SUCCESS;
      }
      std::string_view s;
      error = value.get_string().get(s);
      if (error) return error;
      fields_[slot] = Value::String(Keep(s, level));
      return SUCCESS;
    }
    case od::json_type::number: {
      od::number number;
      if (value.get_number().get(number) == SUCCESS) {
        switch (number.get_number_type()) {
          case od::number_type::signed_integer:
            fields_[slot] = Value::Int(number.get_int64());
            return SUCCESS;
          case od::number_type::unsigned_integer:  // beyond int64
            fields_[slot] =
                Value::Double(static_cast<double>(number.get_uint64()));
            return SUCCESS;
          case od::number_type::floating_point_number:
            fields_[slot] = Value::Double(number.get_double());
            return SUCCESS;
        }
      }
      // Integers beyond 64 bits are rejected by get_number(); as doubles
      // they are fine.
      double d;
      error = value.get_double().get(d);
      if (error) return error;
      fields_[slot] = Value::Double(d);
      return SUCCESS;
    }
    case od::json_type::boolean: {
      bool b;
      error = value.get_bool().get(b);
      if (error) return error;
      fields_[slot] = Value::Bool(b);
      return SUCCESS;
    }
    case od::json_type::null: {
      bool is_null;
      error = value.is_null().get(is_null);
      if (error) return error;
      if (!is_null) return simdjson::INCORRECT_TYPE;
      fields_[slot] = Value::Null();
      return SUCCESS;
    }
    case od::json_type::object:
    case od::json_type::array:
      break;
  }
  return simdjson::INCORRECT_TYPE;
}

absl::Status JsonDecoder::Fail(error_code error, std::string_view* reason) {
  if (error == simdjson::UTF8_ERROR) return InvalidUtf8Error(line_, reason);
  size_t column = 0;
  if (error_location_ != nullptr && error_location_ >= line_.data() &&
      error_location_ <= line_.data() + line_.size()) {
    column = static_cast<size_t>(error_location_ - line_.data()) + 1;
  }
  const std::string what =
      absl::StrCat("invalid JSON: ", simdjson::error_message(error));
  return Reject(
      error == simdjson::DEPTH_ERROR ? reject::kTooDeep : reject::kInvalidJson,
      what, column, reason);
}

absl::Status JsonDecoder::Decode(std::string_view line, Event* event,
                                 std::string_view* reason) {
  if (IsBlank(line)) return Reject(reject::kEmptyLine, "empty line", 0, reason);
  if (absl::Status st = CheckShape(line, limits_, reason); !st.ok()) {
    return st;
  }
  if (event->fields.size() != static_cast<size_t>(slots_)) {
    event->Reset(slots_);
  }
  fields_ = event->fields.data();
  line_ = line;
  padded_end_ = line.data() + line.size() + kLinePadding;
  error_location_ = nullptr;
  error_located_ = false;
  arena_.clear();

  od::document doc;
  error_code error =
      parser_.iterate(line.data(), line.size(), line.size() + kLinePadding)
          .get(doc);
  if (error) return Fail(error, reason);
  od::json_type type;
  error = doc.type().get(type);
  if (!error && type != od::json_type::object) {
    size_t first = 0;
    while (first < line.size() && IsJsonSpace(line[first])) ++first;
    return Reject(
        reject::kNotAnObject,
        absl::StrCat("expected a JSON object, got ", AV(TypeName(type))),
        first + 1, reason);
  }
  od::object object;
  if (!error) error = doc.get_object().get(object);
  // Walking the top-level fields (even with nothing requested) checks the
  // object's structure.
  if (!error) error = VisitObject(object, 0, 0, /*strict=*/false);
  if (!error) {
    const char* trailing = nullptr;
    if (doc.current_location().get(trailing) == SUCCESS) {
      return Reject(
          reject::kInvalidJson,
          "invalid JSON: unexpected content after the top-level object",
          static_cast<size_t>(trailing - line.data()) + 1, reason);
    }
  }
  if (error) {
    if (!error_located_ &&
        doc.current_location().get(error_location_) != SUCCESS) {
      error_location_ = nullptr;
    }
    return Fail(error, reason);
  }
  if (nodes_[0].slot >= 0) {
    size_t first = 0;
    while (IsJsonSpace(line[first])) ++first;
    fields_[nodes_[0].slot] = Value::Json(TrimRight(line.substr(first)));
  }
  return absl::OkStatus();
}

}  // namespace

std::unique_ptr<Decoder> MakeJsonDecoder(const FieldSet& fields,
                                         const DecoderLimits& limits) {
  return std::make_unique<JsonDecoder>(fields, limits);
}

}  // namespace ingest_internal
}  // namespace invariantd
