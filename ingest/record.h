// Record: one raw input record on its way from a source to the pipeline,
// owned, with its position. RecordSink: where sources deliver records.
// Acker: how a source learns that a record was fully processed.
//
// Sources (file tail, HTTP push, Kafka) run on their own threads and hand
// Records to a RecordSink (the pipeline). The sink is bounded: a full sink
// is backpressure, never an unbounded buffer --
//   - Push() blocks until there is room (file tail: reading waits);
//   - TryPushBatch() admits a whole batch or nothing (HTTP: 429; Kafka:
//     pause the partition and retry).
// When the pipeline has finished with a record (evaluated, or rejected by
// the decoder), it calls record.acker->Processed(record.ack_seq) exactly
// once, from a pipeline thread. Records of one stream may complete out of
// order when evaluation is sharded over several workers; a source that
// needs an in-order watermark (Kafka offsets, file positions) computes it
// itself (see AckWatermark).
#ifndef INVARIANTD_INGEST_RECORD_H_
#define INVARIANTD_INGEST_RECORD_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace invariantd {

class Acker {
 public:
  virtual ~Acker() = default;
  // Called once per record with the record's ack_seq. Thread-safe.
  virtual void Processed(uint64_t ack_seq) = 0;
  // The same for `n` records at once (the pipeline acknowledges a worker's
  // batch in one call); an acker that takes a lock per call overrides it.
  virtual void ProcessedBatch(const uint64_t* ack_seqs, size_t n) {
    for (size_t i = 0; i < n; ++i) Processed(ack_seqs[i]);
  }
};

struct Record {
  // --- position (deterministic: violation ids are built from it) ---
  std::string source;  // file path, "kafka:<topic>/<partition>", "http"
  // The source's kind, as SourceKindOf(source) gives it; set by the source
  // so the pipeline never reads the source name per event.
  uint8_t kind = 0;     // 0 file, 1 http, 2 kafka
  uint64_t line = 0;    // file: 1-based line; http: index in the batch
  uint64_t offset = 0;  // file: byte offset; kafka: offset; http: batch id
  uint64_t stream = 0;  // file: (device, inode) mix; see Position::stream
  // --- content ---
  std::string bytes;      // the record, without its newline
  bool too_long = false;  // over the line limit: bytes is empty
  uint64_t length = 0;    // original length in bytes
  // --- source metadata exposed to rules as $-fields ---
  std::vector<std::pair<std::string, std::string>> meta;
  // --- acknowledgement ---
  Acker* acker = nullptr;  // may be null
  uint64_t ack_seq = 0;
};

// Makes `r` an empty record again, keeping the capacity of its strings (a
// recycled shell: see RecordSink::TakeRecycled).
inline void ClearForReuse(Record* r) {
  r->source.clear();
  r->kind = 0;
  r->line = r->offset = r->stream = 0;
  r->bytes.clear();
  r->too_long = false;
  r->length = 0;
  r->meta.clear();
  r->acker = nullptr;
  r->ack_seq = 0;
}

class RecordSink {
 public:
  virtual ~RecordSink() = default;
  // Blocks until the record is admitted; false when the pipeline is
  // stopping (the record was not admitted).
  virtual bool Push(Record record) = 0;
  // Admits all of `batch` (moving from it) or nothing; false when there is
  // no room for the whole batch now (or the pipeline is stopping).
  virtual bool TryPushBatch(std::vector<Record>* batch) = 0;
  // Admits all of `batch` in order, blocking while the sink is full; false
  // when the sink is stopping, with the records not admitted left in
  // `batch` (the admitted ones are removed from its front).
  // Record shells the sink has finished with, their buffers (source name,
  // bytes) still allocated: a source builds its next records in them
  // instead of allocating two strings per line, which the sink would free
  // on another thread. Moves up to `max` into `out` (appended, contents
  // unspecified: ClearForReuse them); returns how many. Default: none.
  virtual size_t TakeRecycled(std::vector<Record>* out, size_t max) {
    return 0;
  }
  virtual bool PushAll(std::vector<Record>* batch) {
    size_t i = 0;
    for (; i < batch->size(); ++i) {
      if (!Push(std::move((*batch)[i]))) break;
    }
    batch->erase(batch->begin(), batch->begin() + static_cast<long>(i));
    return batch->empty();
  }
};

// Tracks out-of-order completions of an in-order sequence and reports the
// highest sequence number below which everything has completed. Sequence
// numbers are issued by Begin() in increasing order. Thread-safe.
class AckWatermark {
 public:
  // Registers the next sequence number; returns it.
  uint64_t Begin() {
    std::lock_guard<std::mutex> l(mu_);
    pending_.emplace(next_, false);
    return next_++;
  }
  // Marks `seq` complete. Returns the count of sequence numbers now known
  // complete from the start (the watermark), which only grows.
  uint64_t Complete(uint64_t seq) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = pending_.find(seq);
    if (it != pending_.end()) it->second = true;
    while (!pending_.empty() && pending_.begin()->second) {
      watermark_ = pending_.begin()->first + 1;
      pending_.erase(pending_.begin());
    }
    return watermark_;
  }
  uint64_t watermark() const {
    std::lock_guard<std::mutex> l(mu_);
    return watermark_;
  }
  size_t in_flight() const {
    std::lock_guard<std::mutex> l(mu_);
    return pending_.size();
  }

 private:
  mutable std::mutex mu_;
  std::map<uint64_t, bool> pending_;
  uint64_t next_ = 0;
  uint64_t watermark_ = 0;
};

}  // namespace invariantd

#endif  // INVARIANTD_INGEST_RECORD_H_
