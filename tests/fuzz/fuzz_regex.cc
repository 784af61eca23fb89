// libFuzzer: the regex decoder (RE2 with named groups) and every rule kind,
// fed one input as a stream of lines (see fuzz_common.h).
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static auto* replayer =
      invariantd::fuzz::MakeReplayer(
          R"({format: regex, pattern: '^(?P<node>\S+) (?P<term>-?\d+) (?P<commit>\d+) (?P<role>\w+)(?: (?P<msg>.*))?$'})")
          .release();
  invariantd::fuzz::Replay(replayer, data, size);
  return 0;
}
