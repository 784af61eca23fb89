// Event: one decoded input record, as the rules engine sees it.
//
// An Event is a view: `raw` points at the input line and `fields` hold
// Values that may point into the line or into the decoder's buffers. It is
// valid until the decoder decodes the next line. Whoever needs anything past
// that (state, violations) copies.
#ifndef INVARIANTD_CORE_EVENT_H_
#define INVARIANTD_CORE_EVENT_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "sidecar/core/value.h"

namespace invariantd {

// Where an event came from. `line` is 1-based; `offset` is the byte offset of
// the line's first byte in the source (a Kafka offset; an HTTP batch id).
// Together with the source name and stream they identify the event's place
// in its stream.
struct Position {
  std::string_view source;
  uint64_t line = 0;
  uint64_t offset = 0;
  // Which incarnation of the source: for a tailed file its (device, inode),
  // so a file rotated into the same name does not repeat positions; 0
  // where the source name and offset already identify the record.
  uint64_t stream = 0;
};

// Decoders may read up to this many bytes past the end of a line (simdjson
// needs it); LineReader guarantees they are readable.
inline constexpr size_t kLinePadding = 64;

struct Event {
  Position position;
  std::string_view raw;       // the record's bytes, without the newline
  std::vector<Value> fields;  // by FieldSet slot; kMissing when absent

  // Prepares for decoding a record with `slots` projected fields.
  void Reset(int slots) { fields.assign(static_cast<size_t>(slots), Value()); }
};

}  // namespace invariantd

#endif  // INVARIANTD_CORE_EVENT_H_
