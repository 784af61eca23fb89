// A fresh directory under the system's temporary directory, removed with
// everything in it when the object goes out of scope.
#ifndef INVARIANTD_TESTS_TEMP_DIR_H_
#define INVARIANTD_TESTS_TEMP_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <string_view>

namespace invariantd {

class TempDir {
 public:
  TempDir() {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "invariantd-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(std::string_view name) const {
    return (std::filesystem::path(path_) / name).string();
  }

 private:
  std::string path_;
};

}  // namespace invariantd

#endif  // INVARIANTD_TESTS_TEMP_DIR_H_
