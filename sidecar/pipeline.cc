#include "sidecar/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sidecar/replayer.h"

namespace invariantd {

namespace {

constexpr std::string_view kSourceKinds[] = {"file", "http", "kafka"};

int SourceKindIndex(std::string_view source) {
  if (source.substr(0, 6) == "kafka:") return 2;
  if (source == "http") return 1;
  return 0;
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
  Record record;
  std::string raw;    // record bytes + kLinePadding
  std::string arena;  // copies of decoder-owned strings
  Event event;
  PreparedEvent prepared;
  std::vector<uint16_t> shard;  // by rule: which worker evaluates it
  std::atomic<int> remaining{0};
  uint64_t generation = ~uint64_t{0};  // rule set `prepared` is sized for
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

Pipeline::Pipeline(std::shared_ptr<const RuleSet> rules,
                   PipelineOptions options, ViolationFn on_violation)
    : rules_(rules),
      options_(std::move(options)),
      on_violation_(std::move(on_violation)),
      router_(std::make_unique<Engine>(rules, options_.engine)),
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
  for (auto& w : workers_) {
    Worker* raw = w.get();
    raw->last_publish = std::chrono::steady_clock::now();
    raw->thread = std::thread([this, raw] { WorkerLoop(raw); });
  }
  dispatcher_ = std::thread([this] { DispatchLoop(); });
}

void Pipeline::Stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
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
  while (admission_.PopBatch(&batch, 256, &drained)) {
    std::lock_guard<std::mutex> l(dispatch_mu_);
    for (Record& r : batch) Dispatch(std::move(r), &outbox);
    batch.clear();
    for (size_t k = 0; k < workers_.size(); ++k) {
      if (outbox[k].empty()) continue;
      if (!workers_[k]->queue.PushAll(&outbox[k])) {
        for (Work* w : outbox[k]) Finish(w, &done);
        outbox[k].clear();
        Retire(&done);
      }
    }
    if (drained || std::chrono::steady_clock::now() - last_dispatch_publish_ >
                       std::chrono::milliseconds(100)) {
      PublishDispatchStats();
    }
  }
  PublishDispatchStats();
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
  w.record = std::move(record);
  // The decoder reads up to kLinePadding bytes past the end: take the
  // record's buffer when the source left room for that, else copy.
  const size_t size = w.record.bytes.size();
  if (w.record.bytes.capacity() >= size + kLinePadding) {
    w.raw.swap(w.record.bytes);
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
    if (w.record.acker != nullptr) w.record.acker->Processed(w.record.ack_seq);
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
  for (const Work* w : *done) {
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
    options_.ack_gate(std::move(ack));
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
  while (w->queue.PopBatch(&batch, 64)) {
    const auto now = std::chrono::steady_clock::now();
    if (now - w->last_publish > std::chrono::milliseconds(500)) {
      w->last_publish = now;
      PublishRules(w);
    }
    std::promise<void>* barrier = nullptr;
    // The masks of a batch first, then prefetch the state of event k + 2
    // while evaluating event k: the rule tables' cache misses overlap.
    w->masks.resize(batch.size());
    for (size_t k = 0; k < batch.size(); ++k) {
      const Work* work = batch[k];
      if (work->barrier != nullptr) continue;
      std::vector<uint8_t>& mask = w->masks[k];
      mask.resize(work->shard.size());
      for (size_t i = 0; i < mask.size(); ++i) {
        mask[i] = work->shard[i] == w->index ? 1 : 0;
      }
    }
    constexpr size_t kAhead = 2;
    for (size_t k = 0; k < batch.size() && k < kAhead; ++k) {
      if (batch[k]->barrier == nullptr) {
        w->engine->PrefetchState(batch[k]->prepared, w->masks[k].data());
      }
    }
    for (size_t k = 0; k < batch.size(); ++k) {
      Work* work = batch[k];
      if (k + kAhead < batch.size() && batch[k + kAhead]->barrier == nullptr) {
        w->engine->PrefetchState(batch[k + kAhead]->prepared,
                                 w->masks[k + kAhead].data());
      }
      if (work->barrier != nullptr) {
        barrier = work->barrier;  // answered once this batch is done
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
    // Last touch of this round: after it, Reload may replace the engine;
    // the next PopBatch (under the queue's mutex) sees the new one.
    if (barrier != nullptr) barrier->set_value();
  }
  PublishRules(w);
}

PipelineStats Pipeline::Stats() const {
  PipelineStats s;
  {
    std::lock_guard<std::mutex> l(stats_mu_);
    s = stats_;
  }
  s.records = records_.load(std::memory_order_relaxed);
  s.violations = violations_.load(std::memory_order_relaxed);
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
  auto router = std::make_unique<Engine>(rules, options_.engine);
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
  ++generation_;  // pooled work items re-size their PreparedEvent
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
    }
  }
  return out;
}

}  // namespace invariantd
