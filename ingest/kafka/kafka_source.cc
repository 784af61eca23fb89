#include "ingest/kafka/kafka_source.h"

#include <librdkafka/rdkafka.h>
#include <syslog.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sidecar/core/sanitize.h"
#include "sidecar/core/strings.h"
#include "sidecar/core/thread_priority.h"

namespace invariantd {
namespace {

// ack_seq = slot << kOffsetBits | (offset - base of the slot). A slot names
// one assignment of one partition; 2^48 offsets per assignment.
constexpr int kOffsetBits = 48;
constexpr uint64_t kOffsetMask = (uint64_t{1} << kOffsetBits) - 1;
constexpr uint32_t kSlotLimit = uint32_t{1} << (64 - kOffsetBits);

constexpr std::chrono::seconds kLagInterval{1};

// Properties this source manages itself.
constexpr const char* kManaged[] = {"enable.auto.commit",
                                    "enable.auto.offset.store",
                                    "bootstrap.servers", "group.id"};

struct ListDeleter {
  void operator()(rd_kafka_topic_partition_list_t* l) const {
    rd_kafka_topic_partition_list_destroy(l);
  }
};
using ListPtr = std::unique_ptr<rd_kafka_topic_partition_list_t, ListDeleter>;

ListPtr NewList(int size) {
  return ListPtr(rd_kafka_topic_partition_list_new(std::max(size, 1)));
}

std::string Name(std::string_view topic, int32_t partition) {
  return absl::StrCat(AV(topic), "/", partition);
}

std::string Names(const rd_kafka_topic_partition_list_t* list) {
  std::string out;
  for (int i = 0; list != nullptr && i < list->cnt; ++i) {
    if (!out.empty()) out += ",";
    out += Name(list->elems[i].topic, list->elems[i].partition);
  }
  return out;
}

// Per-element errors of a partition list, or "" when there are none.
std::string ListErrors(const rd_kafka_topic_partition_list_t* list) {
  std::string out;
  for (int i = 0; i < list->cnt; ++i) {
    const rd_kafka_topic_partition_t& e = list->elems[i];
    if (e.err == RD_KAFKA_RESP_ERR_NO_ERROR) continue;
    if (!out.empty()) out += "; ";
    absl::StrAppend(&out, Name(e.topic, e.partition), ": ",
                    rd_kafka_err2str(e.err));
  }
  return out;
}

}  // namespace

struct KafkaSource::Part {
  std::string topic;
  int32_t partition = 0;
  uint32_t slot = 0;
  std::string source;         // "kafka:<topic>/<partition>"
  std::string partition_str;  // decimal
  // --- poll thread only ---
  int64_t next_offset = -1;   // after the last record taken from librdkafka
  int64_t first_offset = -1;  // first record taken in this assignment
  int64_t stored = -1;        // last offset stored
  int64_t committed = -1;     // last offset committed by us
  bool paused = false;
  // --- written by the poll thread under mu_ before the first record of the
  // slot is handed out; read under mu_ ---
  int64_t base = -1;
  // --- guarded by mu_ ---
  std::deque<Pending> pending;  // delivered, in offset order
  int64_t watermark = -1;       // next offset to store; -1: none yet
  bool dirty = false;           // watermark moved since the last store
};

KafkaSource::KafkaSource(KafkaOptions options, RecordSink* sink,
                         NoticeFn notice)
    : options_(std::move(options)), sink_(sink), notice_(std::move(notice)) {}

KafkaSource::~KafkaSource() { Stop(); }

absl::Status KafkaSource::Start() {
  if (started_) return absl::FailedPreconditionError("already started");
  if (sink_ == nullptr) return absl::InvalidArgumentError("no record sink");
  if (options_.topics.empty()) {
    return absl::InvalidArgumentError("kafka: no topics to subscribe to");
  }
  if (options_.brokers.empty()) {
    return absl::InvalidArgumentError("kafka: no brokers");
  }
  if (options_.group_id.empty()) {
    return absl::InvalidArgumentError("kafka: empty group id");
  }
  if (options_.batch == 0) {
    return absl::InvalidArgumentError("kafka: batch must be positive");
  }
  for (const char* key : kManaged) {
    if (options_.config.count(key) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("kafka: property \"", key,
                       "\" is managed by invariantd and cannot be set"));
    }
  }

  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[512];
  auto set = [&](const std::string& key,
                 const std::string& value) -> absl::Status {
    if (rd_kafka_conf_set(conf, key.c_str(), value.c_str(), errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK) {
      return absl::InvalidArgumentError(
          absl::StrCat("kafka: property \"", key, "\": ", errstr));
    }
    return absl::OkStatus();
  };
  absl::Status status = set("bootstrap.servers", options_.brokers);
  if (status.ok()) status = set("group.id", options_.group_id);
  if (status.ok()) status = set("auto.offset.reset", "earliest");
  if (status.ok()) status = set("log.queue", "true");
  for (const auto& [key, value] : options_.config) {
    if (!status.ok()) break;
    status = set(key, value);
  }
  if (status.ok()) status = set("enable.auto.commit", "true");
  if (status.ok()) status = set("enable.auto.offset.store", "false");
  if (!status.ok()) {
    rd_kafka_conf_destroy(conf);
    return status;
  }
  rd_kafka_conf_set_opaque(conf, this);
  rd_kafka_conf_set_rebalance_cb(
      conf, [](rd_kafka_t* rk, rd_kafka_resp_err_t err,
               rd_kafka_topic_partition_list_t* partitions,
               void* opaque) { RebalanceCb(rk, err, partitions, opaque); });
  rd_kafka_conf_set_error_cb(
      conf, [](rd_kafka_t* rk, int err, const char* reason, void* opaque) {
        ErrorCb(rk, err, reason, opaque);
      });
  rd_kafka_conf_set_log_cb(conf, &KafkaSource::LogCb);
  rd_kafka_conf_set_offset_commit_cb(
      conf, [](rd_kafka_t* rk, rd_kafka_resp_err_t err,
               rd_kafka_topic_partition_list_t* offsets, void* opaque) {
        static_cast<KafkaSource*>(opaque)->OnCommit(err, offsets);
      });

  // On success rd_kafka_new takes ownership of conf.
  rd_kafka_t* rk =
      rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);
    return absl::InvalidArgumentError(absl::StrCat("kafka: ", errstr));
  }
  // Logs, errors and rebalances are all served by rd_kafka_consumer_poll on
  // the poll thread.
  rd_kafka_set_log_queue(rk, nullptr);
  rd_kafka_poll_set_consumer(rk);

  ListPtr topics = NewList(static_cast<int>(options_.topics.size()));
  for (const std::string& t : options_.topics) {
    rd_kafka_topic_partition_list_add(topics.get(), t.c_str(),
                                      RD_KAFKA_PARTITION_UA);
  }
  rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, topics.get());
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_destroy(rk);
    return absl::InvalidArgumentError(
        absl::StrCat("kafka: subscribe: ", rd_kafka_err2str(err)));
  }
  rk_ = rk;
  started_ = true;
  thread_ = std::thread([this] {
    NameThisThread("inv-kafka");
    JoinViolationPath();  // sidecar/core/thread_priority.h
    PollLoop();
  });
  return absl::OkStatus();
}

void KafkaSource::Stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  stop_.store(true);
  thread_.join();
}

void KafkaSource::Processed(uint64_t ack_seq) {
  const uint32_t slot = static_cast<uint32_t>(ack_seq >> kOffsetBits);
  std::lock_guard<std::mutex> l(mu_);
  auto it = parts_.find(slot);
  if (it == parts_.end()) return;  // revoked or stopped: stale
  Part& p = *it->second;
  if (p.base < 0) return;
  const int64_t offset = p.base + static_cast<int64_t>(ack_seq & kOffsetMask);
  auto e = std::lower_bound(
      p.pending.begin(), p.pending.end(), offset,
      [](const Pending& a, int64_t o) { return a.offset < o; });
  if (e == p.pending.end() || e->offset != offset || e->done) return;
  e->done = true;
  processed_.fetch_add(1, std::memory_order_relaxed);
  bool moved = false;
  while (!p.pending.empty() && p.pending.front().done) {
    p.watermark = p.pending.front().offset + 1;
    p.pending.pop_front();
    moved = true;
  }
  if (moved && !p.dirty) {
    p.dirty = true;
    dirty_.push_back(slot);
  }
}

KafkaStats KafkaSource::Stats() const {
  KafkaStats s;
  s.records = records_.load();
  s.processed = processed_.load();
  s.assigned_partitions = assigned_.load();
  s.paused_partitions = paused_.load();
  s.pauses = pauses_.load();
  s.resumes = resumes_.load();
  s.buffered = buffered_.load();
  s.max_buffered = max_buffered_.load();
  s.rebalances = rebalances_.load();
  s.revoked_dropped = revoked_dropped_.load();
  s.errors = errors_.load();
  s.polls = polls_.load();
  s.lag = lag_.load();
  return s;
}

// ---------------------------------------------------------------------------
// Poll thread.

void KafkaSource::PollLoop() {
  poll_thread_.store(std::this_thread::get_id());
  const auto poll_timeout =
      std::max(options_.poll_timeout, std::chrono::milliseconds(1));
  std::chrono::milliseconds backoff(1);
  bool blocked = false;
  while (!stop_.load()) {
    polls_.fetch_add(1, std::memory_order_relaxed);
    const auto timeout = blocked ? backoff : poll_timeout;
    rd_kafka_message_t* m =
        rd_kafka_consumer_poll(rk_, static_cast<int>(timeout.count()));
    size_t n = 0;
    while (m != nullptr) {
      HandleMessage(m);
      rd_kafka_message_destroy(m);
      if (++n >= options_.batch || stop_.load()) break;
      m = rd_kafka_consumer_poll(rk_, 0);
    }
    if (!waiting_.empty()) {
      if (Deliver()) {
        blocked = false;
        backoff = std::chrono::milliseconds(1);
      } else {
        PauseWaiting();
        backoff = blocked ? std::min(backoff * 2, poll_timeout) : backoff;
        blocked = true;
      }
    }
    if (waiting_.empty()) {
      blocked = false;
      ResumeAll();
    }
    buffered_.store(waiting_.size());
    if (waiting_.size() > max_buffered_.load()) {
      max_buffered_.store(waiting_.size());
    }
    FlushStores(nullptr, /*commit_sync=*/false);
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_lag_update_) {
      UpdateLag();
      next_lag_update_ = now + kLagInterval;
    }
  }
  Shutdown();
}

void KafkaSource::Shutdown() {
  // Records never admitted are simply not stored: the next owner reads them.
  waiting_.clear();
  buffered_.store(0);
  std::vector<Part*> all;
  for (auto& [tp, part] : by_tp_) all.push_back(part);
  FlushStores(&all, /*commit_sync=*/true);
  // Leaves the group; the revoke callback runs on this thread.
  rd_kafka_resp_err_t err = rd_kafka_consumer_close(rk_);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    Error("error", absl::StrCat("consumer close: ", rd_kafka_err2str(err)));
  }
  rd_kafka_destroy(rk_);
  rk_ = nullptr;
  // Anything left (close failed to revoke): late acks are ignored.
  std::vector<Part*> left;
  for (auto& [tp, part] : by_tp_) left.push_back(part);
  for (Part* p : left) DropPart(p);
  paused_.store(0);
  lag_.store(-1);
}

KafkaSource::Part* KafkaSource::FindPart(std::string_view topic,
                                         int32_t partition) {
  auto it = by_tp_.find(std::make_pair(topic, partition));
  return it == by_tp_.end() ? nullptr : it->second;
}

void KafkaSource::HandleMessage(rd_kafka_message_t* msg) {
  const char* topic_c =
      msg->rkt != nullptr ? rd_kafka_topic_name(msg->rkt) : nullptr;
  if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) return;
    std::string where;
    if (topic_c != nullptr) {
      where = msg->partition >= 0
                  ? absl::StrCat(Name(topic_c, msg->partition), ": ")
                  : absl::StrCat(topic_c, ": ");
    }
    Error("error", absl::StrCat(where, rd_kafka_err2name(msg->err), ": ",
                                rd_kafka_message_errstr(msg)));
    return;
  }
  if (topic_c == nullptr) return;
  Part* part = FindPart(topic_c, msg->partition);
  if (part == nullptr) return;  // not (or no longer) ours
  const int64_t offset = msg->offset;
  if (offset < 0 || (part->next_offset >= 0 && offset < part->next_offset)) {
    return;  // already taken
  }
  if (part->base < 0) {
    std::lock_guard<std::mutex> l(mu_);
    part->base = offset;
  }
  const uint64_t delta = static_cast<uint64_t>(offset - part->base);
  if (delta > kOffsetMask) {
    // 2^48 records in one assignment; not expected in practice.
    Error("error", absl::StrCat(Name(part->topic, part->partition),
                                ": offset range of one assignment exceeded"));
    return;
  }

  Record r;
  r.source = part->source;
  r.kind = 2;
  r.line = 0;
  r.offset = static_cast<uint64_t>(offset);
  r.length = msg->len;
  if (msg->len > options_.max_record_bytes) {
    r.too_long = true;
  } else if (msg->payload != nullptr) {
    r.bytes.assign(static_cast<const char*>(msg->payload), msg->len);
  }
  r.meta.reserve(4);
  r.meta.emplace_back("$kafka.topic", part->topic);
  r.meta.emplace_back("$kafka.partition", part->partition_str);
  r.meta.emplace_back("$kafka.offset", absl::StrCat(offset));
  if (msg->key != nullptr) {
    r.meta.emplace_back(
        "$kafka.key",
        std::string(static_cast<const char*>(msg->key), msg->key_len));
  }
  rd_kafka_headers_t* headers = nullptr;
  if (rd_kafka_message_headers(msg, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR &&
      headers != nullptr) {
    const char* name;
    const void* value;
    size_t size;
    for (size_t i = 0;
         rd_kafka_header_get_all(headers, i, &name, &value, &size) ==
         RD_KAFKA_RESP_ERR_NO_ERROR;
         ++i) {
      r.meta.emplace_back(
          absl::StrCat("$kafka.headers.", name),
          value == nullptr
              ? std::string()
              : std::string(static_cast<const char*>(value), size));
    }
  }
  r.acker = this;
  r.ack_seq = (uint64_t{part->slot} << kOffsetBits) | delta;
  part->next_offset = offset + 1;
  if (part->first_offset < 0) part->first_offset = offset;
  waiting_.push_back(std::move(r));
}

bool KafkaSource::Deliver() {
  while (!waiting_.empty()) {
    const size_t n = std::min(options_.batch, waiting_.size());
    std::vector<Record> batch;
    batch.reserve(n);
    std::move(waiting_.begin(), waiting_.begin() + n,
              std::back_inserter(batch));
    // Register before the push: the pipeline may finish a record before
    // TryPushBatch returns.
    {
      std::lock_guard<std::mutex> l(mu_);
      for (const Record& r : batch) {
        auto it = parts_.find(static_cast<uint32_t>(r.ack_seq >> kOffsetBits));
        if (it == parts_.end()) continue;  // cannot happen: revoke drops them
        it->second->pending.push_back(
            Pending{static_cast<int64_t>(r.offset), false});
      }
    }
    if (sink_->TryPushBatch(&batch)) {
      waiting_.erase(waiting_.begin(), waiting_.begin() + n);
      records_.fetch_add(n, std::memory_order_relaxed);
      continue;
    }
    // Not admitted (so nobody can have finished them): unregister, newest
    // first, and put them back.
    {
      std::lock_guard<std::mutex> l(mu_);
      for (auto r = batch.rbegin(); r != batch.rend(); ++r) {
        auto it = parts_.find(static_cast<uint32_t>(r->ack_seq >> kOffsetBits));
        if (it == parts_.end()) continue;
        std::deque<Pending>& pending = it->second->pending;
        if (!pending.empty() &&
            pending.back().offset == static_cast<int64_t>(r->offset)) {
          pending.pop_back();
        }
      }
    }
    std::move(batch.begin(), batch.end(), waiting_.begin());
    return false;
  }
  return true;
}

void KafkaSource::PauseWaiting() {
  std::vector<Part*> to_pause;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const Record& r : waiting_) {
      auto it = parts_.find(static_cast<uint32_t>(r.ack_seq >> kOffsetBits));
      if (it == parts_.end()) continue;
      Part* p = it->second.get();
      if (p->paused) continue;
      if (std::find(to_pause.begin(), to_pause.end(), p) == to_pause.end()) {
        to_pause.push_back(p);
      }
    }
  }
  if (to_pause.empty()) return;
  ListPtr list = NewList(static_cast<int>(to_pause.size()));
  for (Part* p : to_pause) {
    rd_kafka_topic_partition_list_add(list.get(), p->topic.c_str(),
                                      p->partition);
  }
  rd_kafka_pause_partitions(rk_, list.get());
  // A partition that failed to pause keeps fetching; its records still
  // wait here (bounded by librdkafka's own prefetch limits).
  if (std::string errors = ListErrors(list.get()); !errors.empty()) {
    Error("error", absl::StrCat("pause: ", errors));
  }
  for (Part* p : to_pause) p->paused = true;
  paused_.fetch_add(to_pause.size());
  pauses_.fetch_add(to_pause.size());
  Notice("paused", Names(list.get()));
}

void KafkaSource::ResumeAll() {
  if (paused_.load() == 0) return;
  ListPtr list = NewList(static_cast<int>(by_tp_.size()));
  for (auto& [tp, p] : by_tp_) {
    if (!p->paused) continue;
    rd_kafka_topic_partition_list_add(list.get(), p->topic.c_str(),
                                      p->partition);
    p->paused = false;
  }
  paused_.store(0);
  if (list->cnt == 0) return;
  rd_kafka_resume_partitions(rk_, list.get());
  if (std::string errors = ListErrors(list.get()); !errors.empty()) {
    Error("error", absl::StrCat("resume: ", errors));
  }
  resumes_.fetch_add(list->cnt);
  Notice("resumed", Names(list.get()));
}

void KafkaSource::FlushStores(const std::vector<Part*>* only,
                              bool commit_sync) {
  struct Store {
    Part* part;
    int64_t offset;
  };
  std::vector<Store> stores;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (only == nullptr) {
      for (uint32_t slot : dirty_) {
        auto it = parts_.find(slot);
        if (it == parts_.end() || !it->second->dirty) continue;
        it->second->dirty = false;
        stores.push_back({it->second.get(), it->second->watermark});
      }
      dirty_.clear();
    } else {
      for (Part* p : *only) {
        p->dirty = false;
        if (p->watermark >= 0) stores.push_back({p, p->watermark});
      }
    }
  }
  ListPtr list = NewList(static_cast<int>(stores.size()));
  for (const Store& s : stores) {
    if (s.offset <= s.part->stored) continue;
    rd_kafka_topic_partition_list_add(list.get(), s.part->topic.c_str(),
                                      s.part->partition)
        ->offset = s.offset;
  }
  if (list->cnt > 0) {
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(rk_, list.get());
    std::string errors = ListErrors(list.get());
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && errors.empty()) {
      errors = rd_kafka_err2str(err);
    }
    if (!errors.empty()) {
      Error("commit_failed", absl::StrCat("offset store: ", errors));
    }
    for (int i = 0; i < list->cnt; ++i) {
      if (list->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
      Part* p = FindPart(list->elems[i].topic, list->elems[i].partition);
      if (p != nullptr) p->stored = list->elems[i].offset;
    }
  }
  if (!commit_sync || only == nullptr) return;
  ListPtr commit = NewList(static_cast<int>(only->size()));
  for (Part* p : *only) {
    if (p->stored < 0 || p->stored <= p->committed) continue;
    rd_kafka_topic_partition_list_add(commit.get(), p->topic.c_str(),
                                      p->partition)
        ->offset = p->stored;
  }
  if (commit->cnt == 0) return;
  // The outcome (either way) is reported by the offset commit callback.
  if (rd_kafka_commit(rk_, commit.get(), /*async=*/0) !=
      RD_KAFKA_RESP_ERR_NO_ERROR) {
    return;
  }
  for (int i = 0; i < commit->cnt; ++i) {
    if (commit->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
    Part* p = FindPart(commit->elems[i].topic, commit->elems[i].partition);
    if (p != nullptr) p->committed = commit->elems[i].offset;
  }
}

void KafkaSource::OnCommit(int err,
                           const rd_kafka_topic_partition_list_t* offsets) {
  const auto code = static_cast<rd_kafka_resp_err_t>(err);
  if (code == RD_KAFKA_RESP_ERR__NO_OFFSET) return;  // nothing new
  std::string done;
  for (int i = 0; offsets != nullptr && i < offsets->cnt; ++i) {
    const rd_kafka_topic_partition_t& e = offsets->elems[i];
    if (e.err != RD_KAFKA_RESP_ERR_NO_ERROR || e.offset < 0) continue;
    if (!done.empty()) done += ",";
    absl::StrAppend(&done, Name(e.topic, e.partition), "@", e.offset);
  }
  if (code == RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (!done.empty()) Notice("committed", done);
    return;
  }
  std::string errors = offsets != nullptr ? ListErrors(offsets) : "";
  Error("commit_failed", absl::StrCat("commit: ", rd_kafka_err2str(code),
                                      errors.empty() ? "" : ": ", errors));
  if (!done.empty()) Notice("committed", done);
}

void KafkaSource::UpdateLag() {
  if (by_tp_.empty()) {
    lag_.store(-1);
    return;
  }
  int64_t total = 0;
  for (auto& [tp, p] : by_tp_) {
    int64_t lo = -1, hi = -1;
    rd_kafka_resp_err_t err = rd_kafka_get_watermark_offsets(
        rk_, p->topic.c_str(), p->partition, &lo, &hi);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR || hi < 0) {
      lag_.store(-1);
      return;
    }
    int64_t pos;
    {
      std::lock_guard<std::mutex> l(mu_);
      pos = p->watermark;
    }
    if (pos < 0) pos = p->first_offset;
    if (pos < 0) {
      if (lo >= 0 && lo == hi) continue;  // empty partition
      lag_.store(-1);
      return;
    }
    total += std::max<int64_t>(0, hi - pos);
  }
  lag_.store(total);
}

// ---------------------------------------------------------------------------
// Rebalances (called by rd_kafka_consumer_poll/close on the poll thread).

void KafkaSource::RebalanceCb(rd_kafka_t* rk, int err,
                              rd_kafka_topic_partition_list_t* partitions,
                              void* opaque) {
  static_cast<KafkaSource*>(opaque)->OnRebalance(err, partitions);
}

void KafkaSource::OnRebalance(int err,
                              rd_kafka_topic_partition_list_t* partitions) {
  const char* protocol = rd_kafka_rebalance_protocol(rk_);
  const bool cooperative =
      protocol != nullptr && std::strcmp(protocol, "COOPERATIVE") == 0;
  rd_kafka_error_t* error = nullptr;
  rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
  switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
      Assign(partitions);
      if (cooperative) {
        error = rd_kafka_incremental_assign(rk_, partitions);
      } else {
        aerr = rd_kafka_assign(rk_, partitions);
      }
      break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
      Revoke(partitions, rd_kafka_assignment_lost(rk_) != 0);
      if (cooperative) {
        error = rd_kafka_incremental_unassign(rk_, partitions);
      } else {
        aerr = rd_kafka_assign(rk_, nullptr);
      }
      break;
    default:
      Error("error", absl::StrCat("rebalance: ",
                                  rd_kafka_err2str(
                                      static_cast<rd_kafka_resp_err_t>(err))));
      Revoke(partitions, /*lost=*/true);
      if (cooperative) {
        error = rd_kafka_incremental_unassign(rk_, partitions);
      } else {
        aerr = rd_kafka_assign(rk_, nullptr);
      }
      break;
  }
  if (error != nullptr) {
    Error("error", absl::StrCat("(un)assign: ", rd_kafka_error_string(error)));
    rd_kafka_error_destroy(error);
  }
  if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
    Error("error", absl::StrCat("(un)assign: ", rd_kafka_err2str(aerr)));
  }
}

void KafkaSource::Assign(rd_kafka_topic_partition_list_t* partitions) {
  rebalances_.fetch_add(1);
  for (int i = 0; i < partitions->cnt; ++i) {
    const rd_kafka_topic_partition_t& e = partitions->elems[i];
    if (Part* old = FindPart(e.topic, e.partition)) DropPart(old);
    auto part = std::make_unique<Part>();
    part->topic = e.topic;
    part->partition = e.partition;
    part->source = absl::StrCat("kafka:", part->topic, "/", e.partition);
    part->partition_str = absl::StrCat(e.partition);
    Part* raw = part.get();
    {
      std::lock_guard<std::mutex> l(mu_);
      // A slot not in use (there are far fewer live partitions than slots).
      while (next_slot_ == 0 || parts_.contains(next_slot_)) {
        next_slot_ = (next_slot_ + 1) % kSlotLimit;
      }
      part->slot = next_slot_;
      next_slot_ = (next_slot_ + 1) % kSlotLimit;
      parts_.emplace(raw->slot, std::move(part));
    }
    by_tp_.emplace(std::make_pair(raw->topic, raw->partition), raw);
    assigned_.fetch_add(1);
  }
  Notice("assigned", Names(partitions));
}

void KafkaSource::Revoke(rd_kafka_topic_partition_list_t* partitions,
                         bool lost) {
  rebalances_.fetch_add(1);
  // Announced before anything is stored: everything processed before this
  // notice is committed below (unless the partitions are lost).
  Notice("revoked", absl::StrCat(Names(partitions), lost ? " (lost)" : ""));
  std::vector<Part*> parts;
  for (int i = 0; partitions != nullptr && i < partitions->cnt; ++i) {
    Part* p =
        FindPart(partitions->elems[i].topic, partitions->elems[i].partition);
    if (p != nullptr) parts.push_back(p);
  }
  if (partitions == nullptr) {
    for (auto& [tp, p] : by_tp_) parts.push_back(p);
  }
  if (parts.empty()) return;
  if (!lost) FlushStores(&parts, /*commit_sync=*/true);

  // Give partitions up unpaused, so that a later assignment starts clean.
  ListPtr resume = NewList(static_cast<int>(parts.size()));
  for (Part* p : parts) {
    if (!p->paused) continue;
    rd_kafka_topic_partition_list_add(resume.get(), p->topic.c_str(),
                                      p->partition);
    p->paused = false;
    paused_.fetch_sub(1);
  }
  if (resume->cnt > 0) rd_kafka_resume_partitions(rk_, resume.get());

  // Waiting records of revoked partitions go to the next owner.
  size_t before = waiting_.size();
  std::vector<uint32_t> slots;
  for (Part* p : parts) slots.push_back(p->slot);
  std::erase_if(waiting_, [&](const Record& r) {
    const uint32_t slot = static_cast<uint32_t>(r.ack_seq >> kOffsetBits);
    return std::find(slots.begin(), slots.end(), slot) != slots.end();
  });
  revoked_dropped_.fetch_add(before - waiting_.size());
  buffered_.store(waiting_.size());
  for (Part* p : parts) DropPart(p);
}

void KafkaSource::DropPart(Part* part) {
  by_tp_.erase(std::make_pair(part->topic, part->partition));
  assigned_.fetch_sub(1);
  std::lock_guard<std::mutex> l(mu_);
  parts_.erase(part->slot);  // destroys *part
}

// ---------------------------------------------------------------------------
// Errors, logs, notices.

void KafkaSource::ErrorCb(rd_kafka_t* rk, int err, const char* reason,
                          void* opaque) {
  auto* self = static_cast<KafkaSource*>(opaque);
  self->Error(
      "error",
      absl::StrCat(rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err)),
                   ": ", reason != nullptr ? reason : ""));
}

void KafkaSource::LogCb(const rd_kafka_t* rk, int level, const char* fac,
                        const char* buf) {
  if (level > LOG_WARNING) return;
  auto* self = static_cast<KafkaSource*>(rd_kafka_opaque(rk));
  // Only lines served by the poll thread (log.queue): the few emitted
  // before the log queue is set up, or from librdkafka's own threads,
  // are dropped rather than reported from a foreign thread.
  if (self == nullptr ||
      std::this_thread::get_id() != self->poll_thread_.load()) {
    return;
  }
  self->Notice("log", absl::StrCat(fac != nullptr ? fac : "", ": ",
                                   buf != nullptr ? buf : ""));
}

void KafkaSource::Error(std::string_view event, std::string_view detail) {
  errors_.fetch_add(1);
  Notice(event, detail);
}

void KafkaSource::Notice(std::string_view event, std::string_view detail) {
  if (notice_) notice_(event, SanitizeText(detail));
}

}  // namespace invariantd
