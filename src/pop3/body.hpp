// Streams a stored message as a POP3 multi-line body: CRLF-normalised (see
// crlf.hpp), dot-stuffed (RFC 1939 §3), ended by "." CRLF. For TOP it stops
// after the header, the blank line and `body_lines` body lines.
//
// Contract: pulls from the ByteSource in bounded chunks; each produce() call
// appends at most about 2 * limits::kBodyChunk bytes, so a session's memory
// stays bounded whatever the message size. Owns the ByteSource.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/limits.hpp"
#include "common/result.hpp"
#include "pop3/interfaces.hpp"

namespace apop::pop3 {

class BodyStreamer {
 public:
  // top_lines: nullopt for RETR, m for TOP n m.
  BodyStreamer(std::unique_ptr<ByteSource> source, std::optional<std::uint64_t> top_lines);

  // Appends the next piece of output. Returns true when the whole body,
  // terminator included, has been produced. An error from the source is
  // returned as is; the body is then unfinishable.
  Result<bool> produce(std::string& out);

 private:
  // Transforms one chunk of raw input; returns false when TOP's limit is hit.
  bool transform(std::string_view in, std::string& out);

  std::unique_ptr<ByteSource> source_;
  std::optional<std::uint64_t> top_lines_;
  std::string buf_;
  bool at_line_start_ = true;
  bool prev_cr_ = false;
  bool in_header_ = true;
  bool line_empty_ = true;  // current line has no octets but CR so far
  std::uint64_t body_lines_ = 0;
  bool done_ = false;
};

// Pure transform of a whole message, for tests and small messages.
std::string encode_body(std::string_view raw, std::optional<std::uint64_t> top_lines);

}  // namespace apop::pop3
