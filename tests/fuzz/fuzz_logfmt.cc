// libFuzzer: the logfmt decoder and every rule kind, fed one input as a stream
// of lines (see fuzz_common.h).
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One replayer for the whole run: state carries over between inputs, as
  // it does between the lines of a long stream.
  static auto* replayer =
      invariantd::fuzz::MakeReplayer("{format: logfmt}").release();
  invariantd::fuzz::Replay(replayer, data, size);
  return 0;
}
