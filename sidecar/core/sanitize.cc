#include "sidecar/core/sanitize.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sidecar/core/json_text.h"

namespace invariantd {
std::string SanitizeText(std::string_view in, size_t max_bytes) {
  std::string out;
  out.reserve(in.size() < max_bytes ? in.size() : max_bytes);
  size_t i = 0;
  while (i < in.size()) {
    std::string piece;
    size_t consumed = 1;
    const uint8_t c = static_cast<uint8_t>(in[i]);
    if (c < 0x20 || c == 0x7F) {
      switch (c) {
        case '\n':
          piece = "\\n";
          break;
        case '\r':
          piece = "\\r";
          break;
        case '\t':
          piece = "\\t";
          break;
        default:
          piece = absl::StrFormat("\\x%02x", c);
      }
    } else if (c == '\\') {
      piece = "\\\\";
    } else if (c < 0x80) {
      piece.assign(1, static_cast<char>(c));
    } else {
      char32_t cp;
      const size_t len = DecodeUtf8(in, i, &cp);
      if (len == 0) {
        piece = absl::StrFormat("\\x%02x", c);
      } else {
        consumed = len;
        if (IsInvisibleControl(cp)) {
          piece = absl::StrFormat("\\u%04x", static_cast<uint32_t>(cp));
        } else {
          piece.assign(in.substr(i, len));
        }
      }
    }
    if (out.size() + piece.size() > max_bytes) {
      absl::StrAppend(&out, "...[+", in.size() - i, " bytes]");
      return out;
    }
    out.append(piece);
    i += consumed;
  }
  return out;
}

}  // namespace invariantd
