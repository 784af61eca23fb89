#include "sidecar/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sidecar/core/thread_priority.h"
#include "sidecar/replayer.h"

namespace invariantd {

namespace {

constexpr std::string_view kSourceKinds[] = {"file", "http", "kafka"};

// Table slots a worker copies of the next checkpoint's slice between two
// batches: 2,048 slots of 40 bytes, tens of microseconds
// (bench/checkpoint_bench).
constexpr size_t kSliceStepSlots = 2048;
// Old-array positions a rule table's migration moves per idle step: about
// 150 us at ~150 ns per entry moved, the most an event arriving meanwhile
// waits for it.
constexpr size_t kMigrateIdleSlots = 1024;

int SourceKindIndex(std::string_view source) {
  if (source.substr(0, 6) == "kafka:") return 2;
  if (source == "http") return 1;
  return 0;
}

// Out of line: inlined into Dispatch, GCC 12 reports a false -Wrestrict in
// std::string::swap (GCC bug 105329).
[[gnu::noinline]] void SwapBuffers(std::string* a, std::string* b) {
  a->swap(*b);
}

}  // namespace

std::string_view SourceKind(std::string_view source) {
  return kSourceKinds[SourceKindIndex(source)];
}

// One event in flight between the dispatcher and the workers. Owns every
// byte its Values point at: the record (raw bytes, source name, metadata)
// and an arena for strings the decoder unescaped into its own buffers.
struct Pipeline::Work {
  std::promise<void>* barrier = nullptr;  // reload: a marker, not an event
  Marker* marker = nullptr;               // checkpoint: not an event
  uint64_t epoch = 0;                     // checkpoint epoch of the record
  Record record;
  std::string raw;    // record bytes + kLinePadding
  std::string arena;  // copies of decoder-owned strings
  Event event;
  PreparedEvent prepared;
  std::vector<uint16_t> shard;  // by rule: which worker evaluates it
  std::atomic<int> remaining{0};
  uint64_t generation = ~uint64_t{0};  // rule set `prepared` is sized for
};

// One checkpoint in the making: the dispatcher's image, then each
// worker's, as they reach the marker.
struct Pipeline::Marker {
  uint64_t epoch = 0;
  StateCheckpoint checkpoint;
  ImageSpec spec;
  // The next checkpoint's, when decided (planned_): the workers copy its
  // slice between batches, so that marker does not stop them for the scan.
  std::optional<ImageSpec> next;
  double fraction = 0;  // of the hash space the slice covers (1: full)
  std::atomic<int> remaining{0};
  std::atomic<int64_t> save_ns{0};  // the slowest part's
  std::atomic<uint64_t> slice_bytes{0};
};

struct Pipeline::Worker {
  explicit Worker(std::shared_ptr<const RuleSet> rules, size_t capacity,
                  EngineOptions engine)
      : queue(capacity),
        engine(std::make_unique<Engine>(std::move(rules), engine)) {}
  int index = 0;
  BoundedQueue<Work*> queue;
  // State of the keys that hash to this worker. Replaced only by Reload,
  // while the worker is idle behind a barrier.
  std::unique_ptr<Engine> engine;
  std::thread thread;
  std::vector<std::vector<uint8_t>> masks;  // of the batch being evaluated
  uint64_t sampled = 0;
  bool copying_slice = false;  // of the next checkpoint (Engine::BeginSlice)
  std::chrono::steady_clock::time_point last_publish;
  mutable std::mutex mu;
  std::vector<RuleStats> published ABSL_GUARDED_BY(mu);
};

absl::StatusOr<std::unique_ptr<Decoder>> Pipeline::MakeDecoderFor(
    const RuleSet& rules) const {
  DecoderOptions dopts;
  if (options_.decoder.has_value()) {
    dopts = *options_.decoder;
  } else {
    auto d = DecoderOptionsFor(rules);
    if (!d.ok()) return d.status();
    dopts = *d;
  }
  dopts.limits = options_.input_limits;
  return MakeDecoder(dopts, rules.fields());
}

absl::StatusOr<std::unique_ptr<Pipeline>> Pipeline::Create(
    std::shared_ptr<const RuleSet> rules, PipelineOptions options,
    ViolationFn on_violation) {
  if (options.workers < 1 || options.workers > 64) {
    return absl::InvalidArgumentError("workers must be from 1 to 64");
  }
  std::unique_ptr<Pipeline> p(
      new Pipeline(rules, std::move(options), std::move(on_violation)));
  auto decoder = p->MakeDecoderFor(*rules);
  if (!decoder.ok()) return decoder.status();
  p->decoder_ = *std::move(decoder);
  return p;
}

namespace {
// The dispatcher's engine only prepares events and keeps the redelivery
// window: its rule states are never filled, so they are not sized.
EngineOptions RouterOptions(EngineOptions o) {
  o.reserve_expected_keys = false;
  return o;
}
}  // namespace

Pipeline::Pipeline(std::shared_ptr<const RuleSet> rules,
                   PipelineOptions options, ViolationFn on_violation)
    : rules_(rules),
      options_(std::move(options)),
      on_violation_(std::move(on_violation)),
      router_(std::make_unique<Engine>(rules, RouterOptions(options_.engine))),
      admission_(options_.queue_capacity) {
  EngineOptions worker_engine = options_.engine;
  worker_engine.dedupe_window = 0;  // the router owns redelivery detection
  worker_engine.shards = static_cast<size_t>(options_.workers);
  for (int i = 0; i < options_.workers; ++i) {
    auto w = std::make_unique<Worker>(rules, options_.worker_queue_capacity,
                                      worker_engine);
    w->index = i;
    workers_.push_back(std::move(w));
  }
  stats_.queue_capacity = options_.queue_capacity;
}

Pipeline::~Pipeline() {
  Stop();
  for (Work* w : local_pool_) delete w;
  std::lock_guard<std::mutex> l(pool_mu_);
  for (Work* w : pool_) delete w;
}

void Pipeline::Start() {
  if (started_) return;
  started_ = true;
  if (options_.on_checkpoint) {
    router_->TrackChanges();
    for (auto& w : workers_) w->engine->TrackChanges();
    last_marker_ = std::chrono::steady_clock::now();
  }
  for (auto& w : workers_) {
    Worker* raw = w.get();
    raw->last_publish = std::chrono::steady_clock::now();
    raw->thread = std::thread([this, raw] {
      NameThisThread(absl::StrCat("inv-worker-", raw->index));
      JoinViolationPath();  // sidecar/core/thread_priority.h
      WorkerLoop(raw);
    });
  }
  dispatcher_ = std::thread([this] {
    NameThisThread("inv-dispatch");
    JoinViolationPath();  // sidecar/core/thread_priority.h
    DispatchLoop();
  });
}

void Pipeline::Stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  stopping_.store(true);
  admission_.Close();
  dispatcher_.join();  // drains admission, then closes worker queues
  for (auto& w : workers_) w->thread.join();
}

bool Pipeline::Push(Record record) {
  if (!admission_.Push(std::move(record))) return false;
  records_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool Pipeline::PushAll(std::vector<Record>* batch) {
  const uint64_t n = batch->size();
  const bool ok = admission_.PushAll(batch);
  records_.fetch_add(n - batch->size(), std::memory_order_relaxed);
  return ok;
}

bool Pipeline::TryPushBatch(std::vector<Record>* batch) {
  const uint64_t n = batch->size();
  if (!admission_.TryPushAll(batch)) return false;
  records_.fetch_add(n, std::memory_order_relaxed);
  return true;
}

void Pipeline::Reject(const Record& record, std::string_view reason) {
  ++dispatch_
        .rejected[{std::string(kSourceKinds[record.kind < 3 ? record.kind : 0]),
                   std::string(reason)}];
  if (record.acker != nullptr) record.acker->Processed(record.ack_seq);
}

void Pipeline::PublishDispatchStats() {
  last_dispatch_publish_ = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> l(stats_mu_);
  stats_.events = stats_.redelivered = 0;
  for (int k = 0; k < 3; ++k) {
    const std::string kind(kSourceKinds[k]);
    stats_.events += dispatch_.events[k];
    stats_.redelivered += dispatch_.redelivered[k];
    if (dispatch_.events[k] != 0) {
      stats_.events_by_kind[kind] = dispatch_.events[k];
    }
    if (dispatch_.redelivered[k] != 0) {
      stats_.redelivered_by_kind[kind] = dispatch_.redelivered[k];
    }
  }
  stats_.rejected_by_kind = dispatch_.rejected;
  stats_.rejected.clear();
  for (const auto& [kind_reason, n] : dispatch_.rejected) {
    stats_.rejected[kind_reason.second] += n;
  }
}

size_t Pipeline::TakeRecycled(std::vector<Record>* out, size_t max) {
  std::lock_guard<std::mutex> l(recycle_mu_);
  const size_t n = std::min(max, recycled_.size());
  for (size_t i = 0; i < n; ++i) {
    Record& r = recycled_.back();
    recycled_bytes_ -= r.bytes.capacity() + r.source.capacity();
    out->push_back(std::move(r));
    recycled_.pop_back();
  }
  return n;
}

Pipeline::Work* Pipeline::NewWork() {
  if (local_pool_.empty()) {
    std::lock_guard<std::mutex> l(pool_mu_);
    local_pool_.swap(pool_);
  }
  if (local_pool_.empty()) return new Work();
  Work* w = local_pool_.back();
  local_pool_.pop_back();
  return w;
}

void Pipeline::DispatchLoop() {
  std::vector<Record> batch;
  std::vector<std::vector<Work*>> outbox(workers_.size());
  std::vector<Work*> done;
  bool drained = false;
  // Markers: every `load` gap while records flow, and once the input has
  // been quiet for the `idle` gap (a few milliseconds: acknowledgements
  // stay prompt at low rates, and a steady stream does not cost one
  // checkpoint per batch). A checkpoint's work is proportional to what
  // changed since the last one (plus a slice of the same order), so the
  // load gap stays fixed: a longer one would only make each stall longer.
  // The idle gap grows with the time the last checkpoint took.
  auto gaps = [&] {
    const auto save =
        std::chrono::nanoseconds(last_save_ns_.load(std::memory_order_relaxed));
    const auto idle = std::max<std::chrono::steady_clock::duration>(
        std::chrono::milliseconds(2), 4 * save);
    const std::chrono::steady_clock::duration load =
        options_.checkpoint_interval;
    return std::make_pair(idle, load);
  };
  while (true) {
    // A store that cannot commit holds evaluation back (bounded memory).
    auto held = [&] {
      if (!options_.uncommitted_checkpoints) return false;
      const PipelineOptions::Uncommitted u = options_.uncommitted_checkpoints();
      return u.checkpoints >= options_.max_uncommitted_checkpoints ||
             u.bytes >= options_.max_uncommitted_checkpoint_bytes;
    };
    while (held() && !stopping_.load(std::memory_order_relaxed)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    bool ok;
    bool quiet = false;  // nothing arrived for the idle gap
    if (options_.on_checkpoint && since_marker_ > 0) {
      ok = admission_.PopBatchUntil(
          &batch, 256, std::chrono::steady_clock::now() + gaps().first,
          &drained);
      quiet = ok && batch.empty();
    } else {
      ok = admission_.PopBatch(&batch, 256, &drained);
    }
    if (!ok) break;
    std::lock_guard<std::mutex> l(dispatch_mu_);
    for (Record& r : batch) {
      // After a restart: records already in the restored state.
      if (has_restored_.load(std::memory_order_relaxed) &&
          AlreadyCheckpointed(r)) {
        ++dispatch_.redelivered[r.kind < 3 ? r.kind : 0];
        if (r.acker != nullptr) r.acker->Processed(r.ack_seq);
        continue;
      }
      Dispatch(std::move(r), &outbox);
    }
    batch.clear();
    for (size_t k = 0; k < workers_.size(); ++k) {
      if (outbox[k].empty()) continue;
      if (!workers_[k]->queue.PushAll(&outbox[k])) {
        for (Work* w : outbox[k]) Finish(w, &done);
        outbox[k].clear();
        Retire(&done);
      }
    }
    const auto now = std::chrono::steady_clock::now();
    if (options_.on_checkpoint && since_marker_ > 0 &&
        (quiet || now - last_marker_ >= gaps().second)) {
      EmitMarker();
    }
    if (drained ||
        now - last_dispatch_publish_ > std::chrono::milliseconds(100)) {
      PublishDispatchStats();
    }
  }
  PublishDispatchStats();
  if (options_.on_checkpoint && since_marker_ > 0) {
    std::lock_guard<std::mutex> l(dispatch_mu_);
    EmitMarker();
  }
  for (auto& w : workers_) w->queue.Close();
}

void Pipeline::Dispatch(Record record,
                        std::vector<std::vector<Work*>>* outbox) {
  if (record.too_long) {
    Reject(record, reject::kLineTooLong);
    return;
  }
  Work& w = *NewWork();
  w.barrier = nullptr;
  w.marker = nullptr;
  w.epoch = epoch_;
  // The record this work item carried last time goes back to the sources
  // with its buffers (allocated on the source's thread: freeing them here
  // cost ~10% of the daemon's CPU in malloc/free).
  if (w.record.bytes.capacity() <= kMaxRecycledBytes) {
    recycle_out_.push_back(std::move(w.record));
  }
  if (recycle_out_.size() >= 256) {
    {
      std::lock_guard<std::mutex> l(recycle_mu_);
      for (Record& r : recycle_out_) {
        const size_t bytes = r.bytes.capacity() + r.source.capacity();
        if (recycled_.size() >= kMaxRecycled ||
            recycled_bytes_ + bytes > kMaxRecycledTotal) {
          break;
        }
        recycled_bytes_ += bytes;
        recycled_.push_back(std::move(r));
      }
    }
    recycle_out_.clear();  // what did not fit is freed
  }
  w.record = std::move(record);
  // The decoder reads up to kLinePadding bytes past the end: take the
  // record's buffer when the source left room for that, else copy.
  const size_t size = w.record.bytes.size();
  if (w.record.bytes.capacity() >= size + kLinePadding) {
    SwapBuffers(&w.raw, &w.record.bytes);
  } else {
    w.raw.assign(w.record.bytes);
  }
  w.raw.append(kLinePadding, '\0');
  const std::string_view text(w.raw.data(), size);
  const RuleSet& rule_set = router_->rules();
  const FieldSet& fields = rule_set.fields();
  w.event.Reset(fields.size());
  w.event.position = Position{w.record.source, w.record.line, w.record.offset,
                              w.record.stream};
  w.event.raw = text;
  std::string_view reason;
  if (!decoder_->Decode(text, &w.event, &reason).ok()) {
    Reject(w.record, reason);
    local_pool_.push_back(&w);
    return;
  }
  // Strings the decoder unescaped live in its buffers, which the next
  // Decode overwrites: copy them into the work item.
  const char* lo = w.raw.data();
  const char* hi = lo + w.raw.size();
  size_t need = 0;
  for (const Value& v : w.event.fields) {
    if ((v.is_string() || v.is_json()) &&
        !(v.str().data() >= lo && v.str().data() < hi)) {
      need += v.str().size();
    }
  }
  w.arena.clear();
  w.arena.reserve(need);
  for (Value& v : w.event.fields) {
    if ((v.is_string() || v.is_json()) &&
        !(v.str().data() >= lo && v.str().data() < hi)) {
      const size_t at = w.arena.size();
      w.arena.append(v.str());
      const std::string_view copy(w.arena.data() + at, v.str().size());
      v = v.is_string() ? Value::String(copy) : Value::Json(copy);
    }
  }
  // Source metadata ($kafka.key, ...) as fields, when a rule reads them.
  for (const auto& [key, value] : w.record.meta) {
    const int slot = fields.FindDotted(key);
    if (slot >= 0) w.event.fields[slot] = Value::String(value);
  }
  if (w.generation != generation_) {
    w.prepared = router_->NewPrepared();
    w.generation = generation_;
  }
  router_->Prepare(w.event, &w.prepared);
  const int kind = w.record.kind < 3 ? w.record.kind : 0;
  if (router_->IsRedelivery(w.prepared.identity)) {
    ++dispatch_.redelivered[kind];
    if (w.record.acker != nullptr) {
      if (options_.ack_gate) {
        // Its first copy may not be durable yet: acknowledge it with the
        // checkpoint that covers the records dispatched so far.
        Acker* acker = w.record.acker;
        const uint64_t seq = w.record.ack_seq;
        options_.ack_gate(epoch_, [acker, seq] { acker->Processed(seq); });
        if (options_.on_checkpoint) ++since_marker_;
      } else {
        w.record.acker->Processed(w.record.ack_seq);
      }
    }
    local_pool_.push_back(&w);
    return;
  }
  // Route each rule to the worker owning its key; rules that do not apply
  // to this event go to worker 0, which counts them.
  const std::vector<Rule>& rules = rule_set.rules();
  const uint64_t n = workers_.size();
  w.shard.assign(rules.size(), 0);
  uint64_t targets = 0;  // bitmask of workers
  for (size_t i = 0; i < rules.size(); ++i) {
    if (w.prepared.rule_status[i] == ObserveStatus::kOk &&
        !w.prepared.rule_filtered[i]) {
      w.shard[i] =
          static_cast<uint16_t>(w.prepared.key_hash[rules[i].key_group].hi % n);
    }
    targets |= uint64_t{1} << w.shard[i];
  }
  if (targets == 0) targets = 1;
  w.remaining.store(__builtin_popcountll(targets), std::memory_order_relaxed);
  ++dispatch_.events[kind];
  if (options_.on_checkpoint) {
    ++since_marker_;
    NotePosition(w.record);
  }
  for (size_t k = 0; k < workers_.size(); ++k) {
    if (targets & (uint64_t{1} << k)) (*outbox)[k].push_back(&w);
  }
}

void Pipeline::Finish(Work* work, std::vector<Work*>* done) {
  if (work->remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  done->push_back(work);
}

void Pipeline::Retire(std::vector<Work*>* done) {
  if (done->empty()) return;
  // (acker, its sequence numbers), one entry per run of the same acker.
  std::vector<std::pair<Acker*, std::vector<uint64_t>>> acks;
  uint64_t epoch = 0;  // the latest of the batch: covers them all
  for (const Work* w : *done) {
    epoch = std::max(epoch, w->epoch);
    if (w->record.acker == nullptr) continue;
    if (acks.empty() || acks.back().first != w->record.acker) {
      acks.emplace_back(w->record.acker, std::vector<uint64_t>());
    }
    acks.back().second.push_back(w->record.ack_seq);
  }
  auto ack = [acks = std::move(acks)] {
    for (const auto& [acker, seqs] : acks) {
      acker->ProcessedBatch(seqs.data(), seqs.size());
    }
  };
  if (options_.ack_gate) {
    options_.ack_gate(epoch, std::move(ack));
  } else {
    ack();
  }
  std::lock_guard<std::mutex> l(pool_mu_);
  pool_.insert(pool_.end(), done->begin(), done->end());
  done->clear();
}

void Pipeline::PublishRules(Worker* w) {
  std::vector<RuleStats> s = w->engine->Stats();
  std::lock_guard<std::mutex> l(w->mu);
  w->published = std::move(s);
}

void Pipeline::WorkerLoop(Worker* w) {
  std::vector<Work*> batch;
  std::vector<Work*> done;
  std::vector<Violation> out;
  PublishRules(w);
  bool drained = false;
  while (w->queue.PopBatch(&batch, 64, &drained)) {
    const auto now = std::chrono::steady_clock::now();
    if (now - w->last_publish > std::chrono::milliseconds(500)) {
      w->last_publish = now;
      PublishRules(w);
    }
    std::promise<void>* barrier = nullptr;
    // The masks of a batch first, then prefetch the state of event k + 2
    // while evaluating event k: the rule tables' cache misses overlap.
    w->masks.resize(batch.size());
    auto control = [](const Work* work) {
      return work->barrier != nullptr || work->marker != nullptr;
    };
    for (size_t k = 0; k < batch.size(); ++k) {
      const Work* work = batch[k];
      if (control(work)) continue;
      std::vector<uint8_t>& mask = w->masks[k];
      mask.resize(work->shard.size());
      for (size_t i = 0; i < mask.size(); ++i) {
        mask[i] = work->shard[i] == w->index ? 1 : 0;
      }
    }
    constexpr size_t kAhead = 2;
    for (size_t k = 0; k < batch.size() && k < kAhead; ++k) {
      if (!control(batch[k])) {
        w->engine->PrefetchState(batch[k]->prepared, w->masks[k].data());
      }
    }
    for (size_t k = 0; k < batch.size(); ++k) {
      Work* work = batch[k];
      if (k + kAhead < batch.size() && !control(batch[k + kAhead])) {
        w->engine->PrefetchState(batch[k + kAhead]->prepared,
                                 w->masks[k + kAhead].data());
      }
      if (work->barrier != nullptr) {
        barrier = work->barrier;  // answered once this batch is done
        continue;
      }
      if (work->marker != nullptr) {
        const std::optional<ImageSpec> next = work->marker->next;
        SaveAtMarker(w, work->marker);  // may delete the marker
        if (next) {
          w->engine->BeginSlice(*next);
          w->copying_slice = true;
        }
        delete work;
        continue;
      }
      out.clear();
      const bool sample = options_.on_eval_latency && (++w->sampled & 63) == 0;
      const auto t0 = sample ? std::chrono::steady_clock::now()
                             : std::chrono::steady_clock::time_point();
      w->engine->Evaluate(work->event, work->prepared, w->masks[k].data(),
                          &out);
      if (sample) {
        options_.on_eval_latency(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
                .count());
      }
      if (!out.empty()) {
        violations_.fetch_add(out.size(), std::memory_order_relaxed);
        for (const Violation& v : out) on_violation_(v);
      }
      Finish(work, &done);
    }
    batch.clear();
    Retire(&done);
    // A step of the next checkpoint's slice between batches (and, when
    // idle, until it is copied or events arrive): the marker then writes
    // what was copied instead of stopping this thread to scan it.
    // Not while a reload waits for this worker, nor once the queue is
    // closed (stopping: that slice will not be written).
    if (w->copying_slice && !w->queue.closed()) {
      do {
        w->copying_slice = !w->engine->CaptureSlice(kSliceStepSlots);
      } while (w->copying_slice && drained && barrier == nullptr &&
               w->queue.size() == 0 && !w->queue.closed());
    }
    // Nothing queued: finish any rule table's growth (its old array moves a
    // few slots per lookup otherwise, and would stay held while the input
    // is quiet), a step at a time while the queue stays empty.
    if (drained && barrier == nullptr) {
      while (w->queue.size() == 0 && !w->queue.closed() &&
             !w->engine->MigrateIdle(kMigrateIdleSlots)) {
      }
    }
    // About to wait for work: what it did so far is what the metrics
    // should show, however long the wait.
    if (drained) PublishRules(w);
    // Last touch of this round: after it, Reload may replace the engine;
    // the next PopBatch (under the queue's mutex) sees the new one.
    if (barrier != nullptr) barrier->set_value();
  }
  PublishRules(w);
}

void Pipeline::EmitMarker() {
  auto* m = new Marker();
  m->epoch = ++epoch_;
  const auto now = std::chrono::steady_clock::now();
  StateCheckpoint& c = m->checkpoint;
  // The plan made at the last marker, unless a reload or restore since
  // then asks for a full image.
  const std::optional<PlannedImage> plan = std::exchange(planned_, {});
  if (plan && !force_full_) {
    m->spec = plan->spec;
    m->fraction = plan->fraction;
    c.keep = plan->keep;
  } else {
    m->spec = NextImageSpec(now, &m->fraction, &c.keep);
  }
  if (!force_full_) {
    PlannedImage next;
    next.spec = NextImageSpec(now, &next.fraction, &next.keep);
    m->next = next.spec;
    planned_ = next;
  }
  c.full = m->spec.full;
  c.workers = static_cast<int>(workers_.size());
  c.ruleset_digest = router_->rules().digest().Hex();
  c.parts.resize(workers_.size() + 1);
  const auto t0 = std::chrono::steady_clock::now();
  m->slice_bytes.store(router_->SaveState(m->spec, &c.parts[0]),
                       std::memory_order_relaxed);
  m->save_ns.store((std::chrono::steady_clock::now() - t0).count(),
                   std::memory_order_relaxed);
  // Streams quiet for 10 minutes are done (rotated away or deleted; their
  // records were acknowledged long ago): dropped, so that a file reusing
  // the inode is not skipped against them.
  for (auto it = stream_seen_.begin(); it != stream_seen_.end();) {
    if (now - it->second > std::chrono::minutes(10)) {
      positions_.erase(it->first);
      it = stream_seen_.erase(it);
      last_position_ = nullptr;
    } else {
      ++it;
    }
  }
  c.positions.assign(positions_.begin(), positions_.end());
  m->remaining.store(static_cast<int>(workers_.size()),
                     std::memory_order_relaxed);
  for (auto& w : workers_) {
    Work* mw = new Work();
    mw->marker = m;
    w->queue.Push(mw);  // after every record dispatched before it
  }
  since_marker_ = 0;
  last_marker_ = now;
}

// The rolling base. A full image (after Start without a stored state, a
// Reload, or a state that could not be restored) is one large write, so
// the state is otherwise rewritten a slice at a time: each checkpoint adds
// to its changes the keys of the next stretch of the hash space, and once
// a round of slices has covered all of it, a restore needs only the
// checkpoints since that round began (`keep`); the store deletes the older
// ones. A slice is sized so that the base is rewritten at a quarter of the
// rate the state changes (the checkpoints a restore reads then stay within
// about five times the state), at most an eighth of the state at once,
// and at least fast enough for a round to end within a minute.
ImageSpec Pipeline::NextImageSpec(std::chrono::steady_clock::time_point now,
                                  double* fraction, uint64_t* keep) {
  constexpr double kSliceRatio = 0.25;
  constexpr double kMaxFraction = 0.125;
  constexpr double kRoundSeconds = 60;
  ImageSpec spec;
  ++ckpt_index_;
  // What the workers reported since the last marker.
  credit_ +=
      static_cast<double>(change_bytes_.exchange(0, std::memory_order_relaxed));
  measured_bytes_ += static_cast<double>(
      reported_slice_bytes_.exchange(0, std::memory_order_relaxed));
  measured_fraction_ += static_cast<double>(reported_fraction_.exchange(
                            0, std::memory_order_relaxed)) /
                        kFractionScale;
  // The state's size: measured by the slices of a whole round, and raised
  // as soon as a few percent of one show it larger (a growing state).
  if (measured_fraction_ >= 0.02) {
    const double est = measured_bytes_ / measured_fraction_;
    if (measured_fraction_ >= 1 || est > state_bytes_) state_bytes_ = est;
    if (measured_fraction_ >= 1) measured_bytes_ = measured_fraction_ = 0;
  }
  if (force_full_) {
    force_full_ = false;
    spec.full = true;
    *fraction = 1;
    window_start_ = ckpt_index_;
    round_start_ = ckpt_index_ + 1;
    sweep_ = 0;
    credit_ = 0;
    *keep = 1;
    return spec;
  }
  // (At most a second counts: the first marker has no predecessor.)
  const double since =
      std::min(1.0, std::chrono::duration<double>(now - last_marker_).count());
  double f = std::max(kSliceRatio * credit_ / std::max(state_bytes_, 1.0),
                      since / kRoundSeconds);
  // Capped also while the estimate is small: a state that grows fast
  // (from empty) would otherwise be written whole, at the size it has
  // reached, before the estimate catches up.
  f = std::min(f, kMaxFraction);
  if (options_.slice_fraction > 0) f = options_.slice_fraction;
  f = std::min(f, 1.0);
  credit_ = std::max(0.0, credit_ - f * state_bytes_ / kSliceRatio);
  // [sweep_, sweep_ + width - 1] of the 2^64 hashes; the last slice of a
  // round ends at the top.
  constexpr double kSpace = 18446744073709551616.0;  // 2^64
  const double width = std::max(1.0, f * kSpace);
  spec.slice = true;
  spec.first = sweep_;
  const double room = kSpace - static_cast<double>(sweep_);
  if (width >= room) {
    spec.last = UINT64_MAX;
  } else {
    spec.last = sweep_ + static_cast<uint64_t>(width) - 1;
  }
  *fraction =
      (static_cast<double>(spec.last) - static_cast<double>(spec.first) + 1) /
      kSpace;
  if (spec.last == UINT64_MAX) {
    // The round is complete with this checkpoint: a restore needs nothing
    // before its start.
    window_start_ = round_start_;
    round_start_ = ckpt_index_ + 1;
    sweep_ = 0;
  } else {
    sweep_ = spec.last + 1;
  }
  *keep = static_cast<uint64_t>(ckpt_index_ - window_start_ + 1);
  return spec;
}

void Pipeline::SaveAtMarker(Worker* w, Marker* m) {
  const auto t0 = std::chrono::steady_clock::now();
  m->slice_bytes.fetch_add(
      w->engine->SaveState(
          m->spec, &m->checkpoint.parts[static_cast<size_t>(w->index) + 1]),
      std::memory_order_relaxed);
  const int64_t ns = (std::chrono::steady_clock::now() - t0).count();
  if (options_.on_checkpoint_pause) {
    options_.on_checkpoint_pause(static_cast<double>(ns) / 1e9);
  }
  int64_t prev = m->save_ns.load(std::memory_order_relaxed);
  while (ns > prev && !m->save_ns.compare_exchange_weak(prev, ns)) {
  }
  if (m->remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  last_save_ns_.store(m->save_ns.load(std::memory_order_relaxed),
                      std::memory_order_relaxed);
  uint64_t bytes = 0;
  for (const Pieces& p : m->checkpoint.parts) bytes += p.size();
  const uint64_t slice = m->slice_bytes.load(std::memory_order_relaxed);
  change_bytes_.fetch_add(bytes - std::min(bytes, slice),
                          std::memory_order_relaxed);
  reported_slice_bytes_.fetch_add(slice, std::memory_order_relaxed);
  reported_fraction_.fetch_add(
      static_cast<uint64_t>(m->fraction * kFractionScale),
      std::memory_order_relaxed);
  if (m->checkpoint.full) {
    full_checkpoints_.fetch_add(1, std::memory_order_relaxed);
  }
  checkpoints_.fetch_add(1, std::memory_order_relaxed);
  checkpoint_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  const uint64_t epoch = m->epoch;
  StateCheckpoint c = std::move(m->checkpoint);
  delete m;
  options_.on_checkpoint(epoch, std::move(c));
}

namespace {
// The stream a record's position belongs to; empty for HTTP (no position).
std::string StreamOf(const Record& r) {
  if (r.kind == 1) return std::string();
  if (r.kind == 2) return r.source;
  return absl::StrCat("file:", r.stream);
}
}  // namespace

void Pipeline::NotePosition(const Record& r) {
  if (r.kind == 1) return;
  if (last_position_ != nullptr &&
      (r.kind == 0 ? last_source_.empty() && r.stream == last_stream_
                   : r.source == last_source_)) {
    *last_position_ = r.offset;
    return;
  }
  const std::string stream = StreamOf(r);
  last_position_ = &positions_[stream];
  *last_position_ = r.offset;
  stream_seen_[stream] = std::chrono::steady_clock::now();
  last_stream_ = r.stream;
  if (r.kind == 0) {
    last_source_.clear();
  } else {
    last_source_ = r.source;
  }
}

bool Pipeline::AlreadyCheckpointed(const Record& r) {
  if (r.kind == 1) return false;
  std::lock_guard<std::mutex> l(restored_mu_);
  auto it = restored_positions_.find(StreamOf(r));
  if (it == restored_positions_.end()) return false;
  if (r.offset <= it->second) return true;
  restored_positions_.erase(it);  // the stream is past it: stop checking
  if (restored_positions_.empty()) has_restored_.store(false);
  return false;
}

void Pipeline::ForgetPosition(uint64_t stream) {
  std::lock_guard<std::mutex> l(restored_mu_);
  restored_positions_.erase(absl::StrCat("file:", stream));
  if (restored_positions_.empty()) has_restored_.store(false);
}

Pipeline::RestoreReport Pipeline::Restore(const StoredState& state) {
  RestoreReport report;
  if (static_cast<size_t>(state.workers) != workers_.size()) {
    report.problem =
        absl::StrCat("the rule state was written by ", state.workers,
                     " workers and this run has ", workers_.size(),
                     "; keys are sharded by worker, so the rules start empty");
    return report;
  }
  auto load = [&](Engine* e, const std::vector<std::string>& images) {
    for (const std::string& image : images) {
      absl::Status st =
          e->RestoreState(image, &report.skipped, &report.discarded);
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  };
  absl::Status st = load(router_.get(), state.parts[0]);
  for (size_t k = 0; st.ok() && k < workers_.size(); ++k) {
    st = load(workers_[k]->engine.get(), state.parts[k + 1]);
  }
  if (!st.ok()) {
    // Partly applied: throw all of it away rather than run on half a state.
    auto fresh = [&](std::unique_ptr<Engine>* e, EngineOptions o) {
      *e = std::make_unique<Engine>(rules(), o);
    };
    fresh(&router_, RouterOptions(options_.engine));
    EngineOptions worker_engine = options_.engine;
    worker_engine.dedupe_window = 0;
    worker_engine.shards = workers_.size();
    for (auto& w : workers_) fresh(&w->engine, worker_engine);
    report.problem = absl::StrCat("the rule state could not be read (",
                                  st.message(), "); the rules start empty");
    report.skipped.clear();
    report.discarded.clear();
    return report;
  }
  // The restored checkpoints are the start of the rolling base: the next
  // ones keep them until a round of slices has rewritten every key. A
  // rule whose image could not be read starts empty, and a full image
  // then replaces the unreadable ones.
  const auto restored = static_cast<int64_t>(state.checkpoints);
  window_start_ = ckpt_index_ + 1 - std::max<int64_t>(restored, 1);
  round_start_ = ckpt_index_ + 1;
  sweep_ = 0;
  state_bytes_ = static_cast<double>(state.bytes);
  force_full_ = !report.discarded.empty() || restored == 0;
  {
    std::lock_guard<std::mutex> l(restored_mu_);
    const auto now = std::chrono::steady_clock::now();
    for (const auto& [stream, offset] : state.positions) {
      restored_positions_[stream] = offset;
      positions_[stream] = offset;
      stream_seen_[stream] = now;
    }
    has_restored_.store(!restored_positions_.empty());
  }
  if (!report.discarded.empty()) {
    // Unreadable on one worker: empty on all, not half restored.
    router_->ResetRules(report.discarded);
    for (auto& w : workers_) w->engine->ResetRules(report.discarded);
  }
  report.positions = state.positions.size();
  report.restored = true;
  return report;
}

PipelineStats Pipeline::Stats() const {
  PipelineStats s;
  {
    std::lock_guard<std::mutex> l(stats_mu_);
    s = stats_;
  }
  s.records = records_.load(std::memory_order_relaxed);
  s.violations = violations_.load(std::memory_order_relaxed);
  s.checkpoints = checkpoints_.load(std::memory_order_relaxed);
  s.full_checkpoints = full_checkpoints_.load(std::memory_order_relaxed);
  s.checkpoint_bytes = checkpoint_bytes_.load(std::memory_order_relaxed);
  s.queue_depth = admission_.size();
  return s;
}

std::shared_ptr<const RuleSet> Pipeline::rules() const {
  std::lock_guard<std::mutex> l(rules_mu_);
  return rules_;
}

void Pipeline::DrainWorkers() {
  // A barrier through every worker queue: when all have passed it, no
  // event dispatched before it is still being evaluated.
  std::vector<std::promise<void>> done(workers_.size());
  std::vector<std::unique_ptr<Work>> markers;
  for (size_t k = 0; k < workers_.size(); ++k) {
    markers.push_back(std::make_unique<Work>());
    markers.back()->barrier = &done[k];
    workers_[k]->queue.Push(markers.back().get());
  }
  for (auto& d : done) d.get_future().wait();
}

absl::StatusOr<Pipeline::ReloadResult> Pipeline::Reload(
    std::shared_ptr<const RuleSet> rules) {
  auto decoder = MakeDecoderFor(*rules);
  if (!decoder.ok()) return decoder.status();
  EngineOptions worker_engine = options_.engine;
  worker_engine.dedupe_window = 0;
  worker_engine.shards = static_cast<size_t>(options_.workers);
  // Build the new engines off the hot path, then swap at a batch boundary.
  auto router = std::make_unique<Engine>(rules, RouterOptions(options_.engine));
  std::vector<std::unique_ptr<Engine>> engines;
  for (size_t k = 0; k < workers_.size(); ++k) {
    engines.push_back(std::make_unique<Engine>(rules, worker_engine));
  }
  ReloadResult result;
  std::lock_guard<std::mutex> l(dispatch_mu_);
  if (started_ && !stopped_) DrainWorkers();
  router->TakeStateFrom(*router_);
  for (size_t k = 0; k < workers_.size(); ++k) {
    result.carried = engines[k]->TakeStateFrom(*workers_[k]->engine);
    workers_[k]->engine = std::move(engines[k]);
  }
  router_ = std::move(router);
  decoder_ = *std::move(decoder);
  ++generation_;       // pooled work items re-size their PreparedEvent
  force_full_ = true;  // images name rules by digest: start a new base
  if (options_.on_checkpoint) {
    router_->TrackChanges();
    for (auto& w : workers_) w->engine->TrackChanges();
  }
  for (auto& w : workers_) {
    PublishRules(w.get());
  }
  for (const Rule& r : rules->rules()) {
    if (std::find(result.carried.begin(), result.carried.end(), r.name) ==
        result.carried.end()) {
      result.fresh.push_back(r.name);
    }
  }
  {
    std::lock_guard<std::mutex> rl(rules_mu_);
    rules_ = std::move(rules);
  }
  return result;
}

std::vector<RuleSnapshot> Pipeline::Rules() const {
  std::vector<RuleSnapshot> out;
  for (const Rule& r : this->rules()->rules()) {
    out.push_back(RuleSnapshot{r.name, r.kind, {}, {}});
  }
  for (const auto& w : workers_) {
    std::lock_guard<std::mutex> l(w->mu);
    for (size_t i = 0; i < w->published.size() && i < out.size(); ++i) {
      const RuleCounters& c = w->published[i].counters;
      RuleCounters& t = out[i].counters;
      t.evaluated += c.evaluated;
      t.filtered += c.filtered;
      t.skipped_missing += c.skipped_missing;
      t.skipped_type += c.skipped_type;
      t.rejected += c.rejected;
      t.redelivered += c.redelivered;
      t.violations += c.violations;
      const TableStats& ts = w->published[i].table;
      out[i].table.keys += ts.keys;
      out[i].table.bytes += ts.bytes;
      out[i].table.evicted += ts.evicted;
      out[i].table.rejected += ts.rejected;
      out[i].table.budget_refusals += ts.budget_refusals;
    }
  }
  return out;
}

}  // namespace invariantd
