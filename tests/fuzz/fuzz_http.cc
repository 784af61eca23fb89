// libFuzzer: the HTTP ingest body parser -- NDJSON splitting, per-line
// limits and UTF-8 checks, the response -- with a sink that admits all.
#include <string_view>
#include <vector>

#include "ingest/http/http_ingest.h"

namespace {
class Sink : public invariantd::RecordSink {
 public:
  bool Push(invariantd::Record) override { return true; }
  bool TryPushBatch(std::vector<invariantd::Record>* batch) override {
    batch->clear();
    return true;
  }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Sink sink;
  static auto* ingest = [] {
    invariantd::HttpIngestOptions o;
    o.max_line_bytes = 512;  // small limits: the limit paths get exercised
    o.max_events = 64;
    o.max_body_bytes = 1 << 16;
    return new invariantd::HttpIngest(o, &sink);
  }();
  invariantd::HttpRequestView req;
  req.method = "POST";
  req.path = "/v1/events";
  req.content_type = "application/x-ndjson";
  req.body = std::string_view(reinterpret_cast<const char*>(data), size);
  (void)ingest->Handle(req);
  return 0;
}
