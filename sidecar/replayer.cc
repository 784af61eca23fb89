#include "sidecar/replayer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sidecar/core/sanitize.h"
#include "sidecar/core/strings.h"

namespace invariantd {

absl::StatusOr<DecoderOptions> DecoderOptionsFor(const RuleSet& rules) {
  DecoderOptions o;
  if (!rules.input().has_value()) return o;
  auto f = ParseInputFormat(rules.input()->format);
  if (!f.ok()) return f.status();
  o.format = *f;
  o.pattern = rules.input()->pattern;
  return o;
}

absl::StatusOr<std::unique_ptr<Replayer>> Replayer::Create(
    std::shared_ptr<const RuleSet> rules, ReplayerOptions options) {
  DecoderOptions dopts;
  if (options.decoder.has_value()) {
    dopts = *options.decoder;
  } else {
    auto o = DecoderOptionsFor(*rules);
    if (!o.ok()) return o.status();
    dopts = *o;
  }
  dopts.limits = options.limits;
  auto a = MakeDecoder(dopts, rules->fields());
  if (!a.ok()) return a.status();
  auto b = MakeDecoder(dopts, rules->fields());
  if (!b.ok()) return b.status();
  return std::unique_ptr<Replayer>(new Replayer(
      std::move(rules), std::move(options), *std::move(a), *std::move(b)));
}

Replayer::Replayer(std::shared_ptr<const RuleSet> rules,
                   ReplayerOptions options, std::unique_ptr<Decoder> a,
                   std::unique_ptr<Decoder> b)
    : rules_(rules),
      options_(std::move(options)),
      engine_(std::move(rules), options_.engine) {
  slots_[0].decoder = std::move(a);
  slots_[1].decoder = std::move(b);
  for (Slot& s : slots_) s.prepared = engine_.NewPrepared();
}

void Replayer::CommitSlot(Slot& slot, const ViolationSink& sink) {
  pending_.clear();
  engine_.Commit(slot.event, slot.prepared, &pending_);
  for (const Violation& v : pending_) {
    ++stats_.violations;
    sink(v);
  }
}

void Replayer::Reject(std::string_view source, uint64_t line,
                      std::string_view reason, std::string_view detail) {
  ++stats_.rejected[std::string(reason)];
  if (reject_messages_.size() < options_.max_reported_rejects) {
    reject_messages_.push_back(absl::StrCat(SanitizeText(source, 512), ":",
                                            line, ": skipped (", AV(reason),
                                            "): ", SanitizeText(detail, 512)));
  }
}

absl::Status Replayer::ProcessFd(int fd, std::string_view source,
                                 const ViolationSink& sink) {
  LineReaderOptions lopts;
  lopts.max_line_bytes = options_.max_line_bytes;
  LineReader reader(fd, lopts);
  const int fields = rules_->fields().size();
  Slot* in_flight = nullptr;  // prepared, not yet committed
  int next = 0;
  while (true) {
    auto line_or = reader.Next();
    if (!line_or.ok()) {
      if (in_flight != nullptr) CommitSlot(*in_flight, sink);
      return line_or.status();
    }
    if (!line_or->has_value()) break;
    const Line& line = **line_or;
    ++stats_.records;
    stats_.bytes += line.length + (line.no_newline ? 0 : 1);
    if (line.too_long) {
      Reject(source, line.number, reject::kLineTooLong,
             absl::StrCat("line of ", line.length, " bytes exceeds the ",
                          options_.max_line_bytes, "-byte limit"));
      continue;
    }
    Slot& slot = slots_[next];
    slot.line.assign(line.text);
    slot.line.resize(line.text.size() + kLinePadding, '\0');
    const std::string_view text(slot.line.data(), line.text.size());
    slot.event.Reset(fields);
    slot.event.position = Position{source, line.number, line.offset};
    slot.event.raw = text;
    std::string_view reason;
    const absl::Status st = slot.decoder->Decode(text, &slot.event, &reason);
    if (!st.ok()) {
      if (reason == reject::kEmptyLine) {
        ++stats_.rejected[std::string(reason)];
      } else {
        Reject(source, line.number, reason, SV(st.message()));
      }
      continue;
    }
    engine_.Prepare(slot.event, &slot.prepared);
    if (in_flight != nullptr) CommitSlot(*in_flight, sink);
    in_flight = &slot;
    next ^= 1;
  }
  if (in_flight != nullptr) CommitSlot(*in_flight, sink);
  return absl::OkStatus();
}

absl::Status Replayer::ProcessText(std::string_view text,
                                   std::string_view source,
                                   const ViolationSink& sink) {
  const int fd = ::memfd_create("invariantd-text", MFD_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("memfd_create: ", std::strerror(errno)));
  }
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return absl::InternalError(absl::StrCat("write: ", std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  ::lseek(fd, 0, SEEK_SET);
  absl::Status st = ProcessFd(fd, source, sink);
  ::close(fd);
  return st;
}

absl::Status Replayer::ProcessPath(const std::string& path,
                                   const ViolationSink& sink) {
  if (path == "-") return ProcessFd(STDIN_FILENO, "-", sink);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  absl::Status st = ProcessFd(fd, path, sink);
  ::close(fd);
  if (!st.ok()) {
    return absl::Status(st.code(), absl::StrCat(path, ": ", st.message()));
  }
  return st;
}

void Replayer::WriteSummary(std::ostream& out) const {
  for (const std::string& m : reject_messages_) out << m << "\n";
  const uint64_t rejected = stats_.rejected_total();
  if (rejected > reject_messages_.size() &&
      reject_messages_.size() == options_.max_reported_rejects) {
    out << "... more skipped records not shown (see counts below)\n";
  }
  out << absl::StrFormat(
      "summary: %d records (%d bytes), %d events checked, %d skipped, %d "
      "redelivered, %d violations\n",
      stats_.records, stats_.bytes,
      engine_.events() - engine_.redelivered_events(), rejected,
      engine_.redelivered_events(), stats_.violations);
  if (rejected > 0) {
    out << "  skipped by reason:";
    for (const auto& [reason, n] : stats_.rejected) {
      out << " " << reason << "=" << n;
    }
    out << "\n";
  }
  for (const RuleStats& s : engine_.Stats()) {
    const RuleCounters& c = s.counters;
    out << absl::StrFormat(
        "  rule %s (%s): evaluated=%d violations=%d filtered=%d "
        "skipped_missing=%d skipped_type=%d keys=%d state_bytes=%d",
        s.rule->name, s.rule->kind, c.evaluated, c.violations, c.filtered,
        c.skipped_missing, c.skipped_type, s.table.keys, s.table.bytes);
    if (c.redelivered > 0) out << " redelivered=" << c.redelivered;
    if (s.table.evicted > 0 || s.table.rejected > 0) {
      out << absl::StrFormat(
          " LOST COVERAGE: evicted=%d rejected=%d (max_keys=%d)",
          s.table.evicted, s.table.rejected, s.rule->max_keys);
      if (s.table.budget_refusals > 0) {
        out << absl::StrFormat(" of which at the memory budget=%d",
                               s.table.budget_refusals);
      }
    }
    out << "\n";
  }
}

}  // namespace invariantd
