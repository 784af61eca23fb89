// Format selection and decoding of the real corpora end to end (LineReader
// feeding the JSON decoder).
#include "ingest/decoder.h"

#include <fcntl.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ingest/line_reader.h"
#include "tests/ingest/ingest_test_util.h"

namespace invariantd {
namespace {

using testing_util::CorpusPath;
using testing_util::DecoderHarness;
using testing_util::IsInt;
using testing_util::IsInvalidArgumentWith;
using testing_util::IsMissing;
using testing_util::IsString;
using testing_util::JsonOptions;

TEST(InputFormatTest, ParsesNamesAndAliases) {
  EXPECT_EQ(*ParseInputFormat("json"), InputFormat::kJson);
  EXPECT_EQ(*ParseInputFormat("jsonl"), InputFormat::kJson);
  EXPECT_EQ(*ParseInputFormat("ndjson"), InputFormat::kJson);
  EXPECT_EQ(*ParseInputFormat("logfmt"), InputFormat::kLogfmt);
  EXPECT_EQ(*ParseInputFormat("regex"), InputFormat::kRegex);
  EXPECT_THAT(ParseInputFormat("JSON").status(),
              IsInvalidArgumentWith("unknown input format 'JSON'"));
  EXPECT_FALSE(ParseInputFormat("").ok());
  EXPECT_FALSE(ParseInputFormat("yaml").ok());
}

TEST(InputFormatTest, NamesRoundTrip) {
  for (InputFormat f :
       {InputFormat::kJson, InputFormat::kLogfmt, InputFormat::kRegex}) {
    auto parsed = ParseInputFormat(InputFormatName(f));
    ASSERT_TRUE(parsed.ok()) << InputFormatName(f);
    EXPECT_EQ(*parsed, f);
  }
  EXPECT_EQ(InputFormatName(InputFormat::kJson), "json");
}

TEST(RejectReasonTest, CodesAreStableAndDistinct) {
  const std::vector<std::string_view> codes = {
      reject::kInvalidJson,  reject::kInvalidUtf8,   reject::kNotAnObject,
      reject::kTooDeep,      reject::kInvalidLogfmt, reject::kNoMatch,
      reject::kLineTooLong,  reject::kEmptyLine,     reject::kTooManyFields,
      reject::kStringTooLong};
  for (size_t i = 0; i < codes.size(); ++i) {
    for (size_t j = i + 1; j < codes.size(); ++j) {
      EXPECT_NE(codes[i], codes[j]);
    }
  }
  EXPECT_EQ(reject::kInvalidJson, "invalid_json");
  EXPECT_EQ(reject::kLineTooLong, "line_too_long");
}

// Record limits, in every format: a record over a limit is rejected with
// the limit's reason and a column; one at the limit passes.
DecoderOptions WithLimits(DecoderOptions o, size_t fields, size_t string) {
  o.limits.max_fields = fields;
  o.limits.max_string_bytes = string;
  return o;
}

std::unique_ptr<DecoderHarness> Harness(const DecoderOptions& o,
                                        const std::vector<std::string>& paths) {
  auto h = DecoderHarness::Make(o, paths);
  EXPECT_TRUE(h.ok()) << h.status();
  return h.ok() ? std::move(*h) : nullptr;
}

TEST(RecordLimitsTest, JsonFieldsAreCountedAtEveryDepth) {
  auto h = Harness(WithLimits(JsonOptions(), 3, 100), {"a"});
  ASSERT_TRUE(h);
  EXPECT_TRUE(h->Decode(R"({"a":1,"b":{"c":2}})").ok());  // 3 members
  EXPECT_THAT(h->Decode(R"({"a":1,"b":{"c":2,"d":3}})"),
              IsInvalidArgumentWith("more than 3 fields at column 22"));
  EXPECT_EQ(h->reason(), reject::kTooManyFields);
  // Colons inside strings and array elements are not fields.
  EXPECT_TRUE(h->Decode(R"({"a":"x:y:z:w","b":[1,2,3,4,5,6]})").ok());
  EXPECT_THAT(h->Get("a"), IsString("x:y:z:w"));
}

// A record longer than the string limit's 255-byte counting blocks: the
// quick count that decides whether to scan must see every byte.
TEST(RecordLimitsTest, JsonLimitsHoldPastTheFirstBlocksOfALongRecord) {
  auto h = Harness(WithLimits(JsonOptions(/*max_depth=*/3), 3, 10000), {"a"});
  ASSERT_TRUE(h);
  const std::string pad(600, 'x');
  EXPECT_TRUE(
      h->Decode(absl::StrCat(R"({"p":")", pad, R"(","a":1,"b":2})")).ok());
  EXPECT_THAT(h->Get("a"), IsInt(1));
  EXPECT_FALSE(
      h->Decode(absl::StrCat(R"({"p":")", pad, R"(","a":1,"b":2,"c":3})"))
          .ok());
  EXPECT_EQ(h->reason(), reject::kTooManyFields);
  EXPECT_FALSE(
      h->Decode(absl::StrCat(R"({"p":")", pad, R"(","a":[[[0]]]})")).ok());
  EXPECT_EQ(h->reason(), reject::kTooDeep);
  // 255 brackets: one full block of counts, which must not wrap to 0; and
  // 256 from the first byte, which a 256-byte block would wrap.
  const std::string brackets(255, '[');
  EXPECT_FALSE(h->Decode(absl::StrCat(R"({"a":)", brackets)).ok());
  EXPECT_EQ(h->reason(), reject::kTooDeep);
  EXPECT_FALSE(h->Decode(std::string(256, '[')).ok());
  EXPECT_EQ(h->reason(), reject::kTooDeep);
  // Records shorter than max_fields count brackets only: the same.
  auto d =
      Harness(WithLimits(JsonOptions(/*max_depth=*/3), 10000, 10000), {"a"});
  ASSERT_TRUE(d);
  EXPECT_FALSE(
      d->Decode(absl::StrCat(R"({"p":")", pad, R"(","a":[[[0]]]})")).ok());
  EXPECT_EQ(d->reason(), reject::kTooDeep);
  EXPECT_FALSE(d->Decode(absl::StrCat(R"({"a":)", brackets)).ok());
  EXPECT_EQ(d->reason(), reject::kTooDeep);
  EXPECT_FALSE(d->Decode(std::string(256, '[')).ok());
  EXPECT_EQ(d->reason(), reject::kTooDeep);
  EXPECT_TRUE(
      d->Decode(absl::StrCat(R"({"p":")", pad, R"(","a":[[0]]})")).ok());
}

TEST(RecordLimitsTest, JsonStringsAreMeasuredAsWritten) {
  auto h = Harness(WithLimits(JsonOptions(), 100, 8), {"a"});
  ASSERT_TRUE(h);
  EXPECT_TRUE(h->Decode(R"({"a":"12345678"})").ok());
  EXPECT_THAT(h->Get("a"), IsString("12345678"));
  EXPECT_THAT(
      h->Decode(R"({"a":"123456789"})"),
      IsInvalidArgumentWith("a string of 9 bytes (limit 8) at column 6"));
  EXPECT_EQ(h->reason(), reject::kStringTooLong);
  // Keys count, fields no rule reads count, escapes count as written.
  EXPECT_FALSE(h->Decode(R"({"a":1,"a_long_key_":2})").ok());
  EXPECT_EQ(h->reason(), reject::kStringTooLong);
  EXPECT_FALSE(h->Decode(R"({"a":1,"z":"\"\"\"\"\""})").ok());
  EXPECT_EQ(h->reason(), reject::kStringTooLong);
  EXPECT_TRUE(h->Decode(R"({"a":"\"\"\"\""})").ok());
  EXPECT_THAT(h->Get("a"), IsString("\"\"\"\""));
}

TEST(RecordLimitsTest, LogfmtPairsAndValues) {
  auto h = Harness(WithLimits(testing_util::LogfmtOptions(), 2, 5), {"a"});
  ASSERT_TRUE(h);
  EXPECT_TRUE(h->Decode("a=12345 b").ok());
  EXPECT_THAT(h->Get("a"), IsInt(12345));
  EXPECT_THAT(h->Decode("a=1 b=2 c=3"),
              IsInvalidArgumentWith("more than 2 fields at column 9"));
  EXPECT_EQ(h->reason(), reject::kTooManyFields);
  EXPECT_THAT(
      h->Decode("a=123456"),
      IsInvalidArgumentWith("a string of 6 bytes (limit 5) at column 3"));
  EXPECT_EQ(h->reason(), reject::kStringTooLong);
  EXPECT_FALSE(h->Decode(R"(a=1 z="quoted")").ok());
  EXPECT_EQ(h->reason(), reject::kStringTooLong);
}

TEST(RecordLimitsTest, RegexCaptures) {
  auto h = Harness(
      WithLimits(testing_util::RegexOptions(R"(id=(?P<id>\w+))"), 10, 4),
      {"id"});
  ASSERT_TRUE(h);
  EXPECT_TRUE(h->Decode("x id=abcd").ok());
  EXPECT_THAT(
      h->Decode("x id=abcde"),
      IsInvalidArgumentWith("a string of 5 bytes (limit 4) at column 6"));
  EXPECT_EQ(h->reason(), reject::kStringTooLong);
}

TEST(RecordLimitsTest, BadLimitsAreRefused) {
  FieldSet fields;
  EXPECT_THAT(MakeDecoder(WithLimits(JsonOptions(), 0, 10), fields).status(),
              IsInvalidArgumentWith("max_fields must be at least 1"));
  EXPECT_THAT(MakeDecoder(WithLimits(JsonOptions(), 10, 0), fields).status(),
              IsInvalidArgumentWith("max_string_bytes must be at least 1"));
}

// Reads `relative` line by line and decodes every line with `h`; calls
// `check` after each successful decode. Returns the number of lines.
int DecodeCorpus(const std::string& relative, DecoderHarness* h,
                 const std::function<void(const Line&)>& check) {
  const std::string path = CorpusPath(relative);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << path;
  if (fd < 0) return 0;
  LineReader reader(fd);
  int lines = 0;
  while (true) {
    auto next = reader.Next();
    EXPECT_TRUE(next.ok()) << next.status();
    if (!next.ok() || !next->has_value()) break;
    const Line& line = **next;
    ++lines;
    EXPECT_FALSE(line.too_long) << relative << ":" << line.number;
    const absl::Status s = h->DecodeInPlace(line.text);
    EXPECT_TRUE(s.ok()) << relative << ":" << line.number << ": " << s;
    if (s.ok()) check(line);
  }
  ::close(fd);
  return lines;
}

TEST(CorpusTest, EtcdRaftTraceDecodes) {
  auto h = DecoderHarness::Make(
      JsonOptions(), {"event.name", "event.nid", "event.state.term",
                      "event.state.vote", "event.state.commit", "event.role",
                      "event.log", "event.applied", "level"});
  ASSERT_TRUE(h.ok()) << h.status();
  DecoderHarness& d = **h;
  int with_term = 0;
  const int lines =
      DecodeCorpus("etcd-raft/trace-3node.ndjson", &d, [&](const Line& line) {
        EXPECT_TRUE(d.Get("event.name").is_string()) << line.number;
        EXPECT_TRUE(d.Get("event.nid").is_string()) << line.number;
        EXPECT_TRUE(d.Get("event.role").is_string()) << line.number;
        EXPECT_TRUE(d.Get("event.log").is_int()) << line.number;
        if (d.Get("event.state.term").is_int()) ++with_term;
        if (line.number == 1) {
          EXPECT_THAT(d.Get("event.name"), IsString("InitState"));
          EXPECT_THAT(d.Get("event.nid"), IsString("1"));
          EXPECT_THAT(d.Get("event.state.term"), IsInt(0));
          EXPECT_THAT(d.Get("event.state.vote"), IsString("0"));
          EXPECT_THAT(d.Get("event.role"), IsString("StateFollower"));
          EXPECT_THAT(d.Get("event.applied"), IsInt(0));
          EXPECT_THAT(d.Get("level"), IsString("debug"));
        }
      });
  EXPECT_EQ(lines, 386);
  EXPECT_EQ(with_term, 386);
}

TEST(CorpusTest, EtcdRaftTenNodeTraceDecodes) {
  auto h = DecoderHarness::Make(
      JsonOptions(), {"event.name", "event.nid", "event.state.term",
                      "event.state.commit", "event.role", "event.log"});
  ASSERT_TRUE(h.ok()) << h.status();
  DecoderHarness& d = **h;
  const int lines =
      DecodeCorpus("etcd-raft/trace-10node.ndjson", &d, [&](const Line& l) {
        EXPECT_TRUE(d.Get("event.state.term").is_int()) << l.number;
        EXPECT_TRUE(d.Get("event.state.commit").is_int()) << l.number;
      });
  EXPECT_EQ(lines, 4888);
}

TEST(CorpusTest, CcfTracesDecode) {
  auto h = DecoderHarness::Make(
      JsonOptions(),
      {"tag", "msg.node", "msg.leadership", "msg.state.current_view",
       "msg.state.commit_idx", "msg.event.function", "msg.function",
       "msg.state.node_id", "msg.state.leadership_state", "msg.index",
       "msg.configurations.0.idx"});
  ASSERT_TRUE(h.ok()) << h.status();
  DecoderHarness& d = **h;
  int total = 0;
  for (const char* file : {"ccf/check_quorum.ndjson", "ccf/election.ndjson",
                           "ccf/late_candidate.ndjson", "ccf/reconnect.ndjson",
                           "ccf/reconnect_node.ndjson", "ccf/replicate.ndjson",
                           "ccf/replicate2.ndjson"}) {
    total += DecodeCorpus(file, &d, [&](const Line& line) {
      EXPECT_TRUE(d.Get("tag").is_string()) << file << ":" << line.number;
      EXPECT_TRUE(d.Get("msg.state.commit_idx").is_int())
          << file << ":" << line.number;
    });
  }
  EXPECT_EQ(total, 162 + 73 + 63 + 73 + 73 + 64 + 62);
  // Old-format lines carry a configurations array; index into it.
  ASSERT_TRUE(d.Decode(R"({"tag":"tla","msg":{"configurations":[{"idx":3}],)"
                       R"("state":{"commit_idx":1}}})")
                  .ok());
  EXPECT_THAT(d.Get("msg.configurations.0.idx"), IsInt(3));
}

TEST(CorpusTest, K8sAuditArrayIndexPaths) {
  auto h = DecoderHarness::Make(
      JsonOptions(),
      {"sourceIPs.0", "sourceIPs.1", "user.username", "user.groups.1",
       "auditID", "stage", "objectRef.resource", "responseStatus.code"});
  ASSERT_TRUE(h.ok()) << h.status();
  DecoderHarness& d = **h;
  int with_ip = 0;
  const int lines =
      DecodeCorpus("k8s-audit/audit2rbac-demo.log", &d, [&](const Line& line) {
        if (d.Get("sourceIPs.0").is_string()) ++with_ip;
        EXPECT_TRUE(d.Get("auditID").is_string()) << line.number;
        if (line.number == 1) {
          EXPECT_THAT(d.Get("sourceIPs.0"), IsString("::1"));
          EXPECT_THAT(d.Get("sourceIPs.1"), IsMissing());
          EXPECT_THAT(d.Get("user.username"), IsString("system:admin"));
          EXPECT_THAT(d.Get("user.groups.1"), IsString("system:authenticated"));
          EXPECT_THAT(d.Get("auditID"),
                      IsString("033d17af-082d-4b24-aa22-627752e83d71"));
          EXPECT_THAT(d.Get("objectRef.resource"), IsString("pods"));
          EXPECT_THAT(d.Get("responseStatus.code"), IsInt(403));
        }
      });
  EXPECT_EQ(lines, 757);
  EXPECT_EQ(with_ip, 757);
}

}  // namespace
}  // namespace invariantd
