// Small durable state files in the data directory (tail positions until
// the evidence store of the durability work takes over): written whole to
// a temporary file, fsync'd, renamed over the old one, and the directory
// fsync'd, so a crash leaves either the old or the new file, never a torn
// one. A file that fails to parse is reported, not silently replaced.
#ifndef INVARIANTD_SIDECAR_CHECKPOINT_FILE_H_
#define INVARIANTD_SIDECAR_CHECKPOINT_FILE_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace invariantd {

absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& content);
// nullopt when the file does not exist.
absl::StatusOr<std::optional<std::string>> ReadFileIfExists(
    const std::string& path);
// Creates `dir` (and parents) and checks it is writable.
absl::Status EnsureWritableDir(const std::string& dir);

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_CHECKPOINT_FILE_H_
