// Value: one typed field value taken from an event.
//
// A `Value` is a small, trivially copyable, *non-owning* view: strings and
// raw JSON point into memory owned by whoever decoded the event (the line
// buffer or the decoder's string buffer). Such a Value is valid only while
// the event it came from is being evaluated. Anything that must outlive the
// event (per-key state, violations) copies it into an `OwnedValue`.
//
// Kinds:
//   kMissing  the field is absent from the event (distinct from JSON null)
//   kNull     JSON null
//   kBool, kInt (int64), kDouble, kString (UTF-8 text, unescaped)
//   kJson     an object or array, kept as its raw JSON text
//
// Numbers compare numerically across kInt/kDouble. Equality and hashing are
// canonical: an integral double equals (and hashes like) the same int, so a
// key of `5` and `5.0` is one key.
//
// Thread-safety: plain values; safe to copy between threads together with the
// memory they point to.
#ifndef INVARIANTD_CORE_VALUE_H_
#define INVARIANTD_CORE_VALUE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace invariantd {

enum class ValueKind : uint8_t {
  kMissing = 0,
  kNull,
  kBool,
  kInt,
  kDouble,
  kString,
  kJson,
};

// Name of a kind as it appears in diagnostics ("int", "string", ...).
std::string_view ValueKindName(ValueKind kind);

class Value {
 public:
  constexpr Value() = default;  // missing

  static constexpr Value Missing() { return Value(); }
  static constexpr Value Null() {
    Value v;
    v.kind_ = ValueKind::kNull;
    return v;
  }
  static constexpr Value Bool(bool b) {
    Value v;
    v.kind_ = ValueKind::kBool;
    v.i_ = b ? 1 : 0;
    return v;
  }
  static constexpr Value Int(int64_t i) {
    Value v;
    v.kind_ = ValueKind::kInt;
    v.i_ = i;
    return v;
  }
  static Value Double(double d) {
    Value v;
    v.kind_ = ValueKind::kDouble;
    v.d_ = d;
    return v;
  }
  static Value String(std::string_view s) {
    Value v;
    v.kind_ = ValueKind::kString;
    v.ptr_ = s.data();
    v.len_ = s.size();
    return v;
  }
  // `raw` is the JSON text of an object or array.
  static Value Json(std::string_view raw) {
    Value v;
    v.kind_ = ValueKind::kJson;
    v.ptr_ = raw.data();
    v.len_ = raw.size();
    return v;
  }

  ValueKind kind() const { return kind_; }
  bool is_missing() const { return kind_ == ValueKind::kMissing; }
  bool is_null() const { return kind_ == ValueKind::kNull; }
  bool is_bool() const { return kind_ == ValueKind::kBool; }
  bool is_int() const { return kind_ == ValueKind::kInt; }
  bool is_double() const { return kind_ == ValueKind::kDouble; }
  bool is_number() const { return is_int() || is_double(); }
  bool is_string() const { return kind_ == ValueKind::kString; }
  bool is_json() const { return kind_ == ValueKind::kJson; }

  // Accessors; calling one for the wrong kind is a programming error.
  bool bool_value() const { return i_ != 0; }
  int64_t int_value() const { return i_; }
  double double_value() const { return d_; }
  // kInt or kDouble as a double.
  double AsDouble() const { return is_int() ? static_cast<double>(i_) : d_; }
  // Text of kString, or raw JSON of kJson.
  std::string_view str() const { return std::string_view(ptr_, len_); }

  // Canonical equality (see the file comment). Missing equals only Missing.
  friend bool operator==(const Value& a, const Value& b);

  // Numeric three-way comparison: nullopt unless both are numbers (NaN also
  // yields nullopt). Strings compare bytewise via CompareStrings.
  // Two ints (the common case: terms, indexes) compare inline.
  static std::optional<int> CompareNumbers(const Value& a, const Value& b) {
    if (a.is_int() && b.is_int()) {
      return a.int_value() < b.int_value()   ? -1
             : a.int_value() > b.int_value() ? 1
                                             : 0;
    }
    return CompareMixedNumbers(a, b);
  }

  // JSON text of the value ("missing" encodes as null). Strings are escaped
  // per RFC 8259; invalid UTF-8 becomes U+FFFD.
  std::string ToJson() const;
  // Human-readable text: strings unquoted, numbers shortest round-trip.
  // NOT sanitized: pass through core/sanitize.h before printing.
  std::string ToText() const;

 private:
  // CompareNumbers unless both are ints.
  static std::optional<int> CompareMixedNumbers(const Value& a, const Value& b);
  ValueKind kind_ = ValueKind::kMissing;
  union {
    int64_t i_ = 0;
    double d_;
  };
  const char* ptr_ = nullptr;
  size_t len_ = 0;
};

// An owning copy of a Value, for state and violations.
class OwnedValue {
 public:
  OwnedValue() = default;
  explicit OwnedValue(const Value& v);

  Value view() const;
  ValueKind kind() const { return value_.kind(); }
  std::string ToJson() const { return view().ToJson(); }
  std::string ToText() const { return view().ToText(); }
  friend bool operator==(const OwnedValue& a, const OwnedValue& b) {
    return a.view() == b.view();
  }

 private:
  Value value_;       // scalar payload; ptr_ is rebound to text_ in view()
  std::string text_;  // owned bytes for kString / kJson
};

}  // namespace invariantd

#endif  // INVARIANTD_CORE_VALUE_H_
