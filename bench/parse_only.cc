// parse_only: the physical floor for checking an etcd-format trace. It reads
// the file the way `invariantd replay` does (1 MiB reads, one JSON document
// per line, simdjson On-Demand, the library invariantd decodes with) and
// extracts exactly the fields the etcd-raft pack reads (event.nid,
// event.state.term, event.state.commit, event.role, event.log,
// event.applied), then throws them away: no rules, no state, no output.
// Whatever invariantd does on top of this is the cost of checking.
//
//   parse_only [--mode lines|many] trace.ndjson
//
// --mode lines (default): one `parser.iterate` per line, as invariantd does.
// --mode many: `iterate_many` over each buffer (batched stage 1), the
//   fastest simdjson parses NDJSON; a floor below invariantd's framing.
//
// Prints `RESULT impl=I lines=N bytes=B errors=E checksum=C`: I is the
// kernel this file's On-Demand walk was compiled for. simdjson dispatches
// stage 1 (the SIMD scan for structure) at run time whatever the build
// flags, but compiles the On-Demand walk for the build's target: the
// portable `fallback` in invariantd's build (no -march), `haswell` in the
// parse_only_avx2 target. The checksum keeps the compiler from dropping the
// extraction.
#include <fcntl.h>
#include <simdjson.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"

namespace {

#define PARSE_ONLY_STR2(x) #x
#define PARSE_ONLY_STR(x) PARSE_ONLY_STR2(x)
// The kernel this file's On-Demand code was compiled for (the library's
// builtin_implementation() names the shared library's, not ours).
constexpr const char* kKernel = PARSE_ONLY_STR(SIMDJSON_BUILTIN_IMPLEMENTATION);

namespace od = simdjson::ondemand;

struct Totals {
  uint64_t lines = 0;
  uint64_t checksum = 0;
  uint64_t errors = 0;
};

// Reads the fields of one trace event (a document or a document reference).
template <typename Doc>
void Extract(Doc& doc, Totals* t) {
  od::object event;
  if (doc["event"].get_object().get(event) != simdjson::SUCCESS) {
    ++t->errors;
    return;
  }
  uint64_t sum = 0;
  for (auto field : event) {
    std::string_view key;
    if (field.unescaped_key().get(key) != simdjson::SUCCESS) break;
    od::value v = field.value();
    std::string_view s;
    int64_t n = 0;
    if (key == "nid" || key == "role") {
      if (v.get_string().get(s) == simdjson::SUCCESS) sum += s.size();
    } else if (key == "log" || key == "applied") {
      if (v.get_int64().get(n) == simdjson::SUCCESS) sum += n;
    } else if (key == "state") {
      od::object state;
      if (v.get_object().get(state) != simdjson::SUCCESS) continue;
      for (auto sf : state) {
        std::string_view sk;
        if (sf.unescaped_key().get(sk) != simdjson::SUCCESS) break;
        if (sk == "term" || sk == "commit") {
          if (sf.value().get_int64().get(n) == simdjson::SUCCESS) sum += n;
        }
      }
    }
  }
  t->checksum += sum;
  ++t->lines;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = "lines";
  std::string path;
  CLI::App app{"Parse-only pass over an etcd-format trace (simdjson)"};
  app.add_option("--mode", mode, "lines (per-line iterate) or many")
      ->check(CLI::IsMember({"lines", "many"}));
  app.add_option("trace", path, "NDJSON trace")->required();
  CLI11_PARSE(app, argc, argv);

  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    std::perror(path.c_str());
    return 2;
  }
  constexpr size_t kChunk = 1 << 20;
  std::vector<char> buf(2 * kChunk + simdjson::SIMDJSON_PADDING);
  size_t have = 0;  // bytes carried over from the previous read
  uint64_t bytes = 0;
  Totals t;
  od::parser parser;
  od::document_stream stream;
  bool eof = false;
  while (!eof) {
    const ssize_t got = read(fd, buf.data() + have, 2 * kChunk - have);
    if (got < 0) {
      std::perror("read");
      return 2;
    }
    eof = got == 0;
    bytes += static_cast<uint64_t>(got);
    const size_t end = have + static_cast<size_t>(got);
    // Parse complete lines only; keep the partial last one for next time.
    size_t last = end;
    if (!eof) {
      while (last > 0 && buf[last - 1] != '\n') --last;
      if (last == 0 && end == 2 * kChunk) {
        std::fprintf(stderr, "line longer than %zu bytes\n", 2 * kChunk);
        return 2;
      }
    }
    std::memset(buf.data() + end, 0, simdjson::SIMDJSON_PADDING);
    if (mode == "many") {
      if (last > 0 &&
          parser.iterate_many(buf.data(), last, kChunk).get(stream) ==
              simdjson::SUCCESS) {
        for (auto doc : stream) {
          od::document_reference d;
          if (std::move(doc).get(d) != simdjson::SUCCESS) {
            ++t.errors;
            continue;
          }
          Extract(d, &t);
        }
      }
    } else {
      size_t pos = 0;
      while (pos < last) {
        const char* nl = static_cast<const char*>(
            std::memchr(buf.data() + pos, '\n', last - pos));
        const size_t stop = nl ? static_cast<size_t>(nl - buf.data()) : last;
        if (stop > pos) {
          od::document doc;
          if (parser.iterate(buf.data() + pos, stop - pos, buf.size() - pos)
                  .get(doc) == simdjson::SUCCESS) {
            Extract(doc, &t);
          } else {
            ++t.errors;
          }
        }
        pos = stop + 1;
      }
    }
    have = end - last;
    std::memmove(buf.data(), buf.data() + last, have);
  }
  close(fd);
  std::printf(
      "RESULT impl=%s lines=%llu bytes=%llu errors=%llu checksum=%llu\n",
      kKernel, static_cast<unsigned long long>(t.lines),
      static_cast<unsigned long long>(bytes),
      static_cast<unsigned long long>(t.errors),
      static_cast<unsigned long long>(t.checksum));
  return t.errors == 0 ? 0 : 1;
}
