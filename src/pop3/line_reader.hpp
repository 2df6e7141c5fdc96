// Splits client input into command lines and enforces the line limits
// before any command sees a line (RFC 2449 §4: 255 octets with CRLF).
//
// Contract: memory is bounded by the unconsumed input the driver fed plus
// kMaxCommandLine; an overlong line is discarded up to its LF and reported
// once as TooLong, so none of it (not even its tail) is ever executed.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "common/limits.hpp"

namespace apop::pop3 {

class LineReader {
 public:
  enum class Kind {
    line,      // a complete line; text() excludes the CRLF (or bare LF)
    too_long,  // longer than the limit; discarded whole
    bad_byte,  // contains NUL or a bare CR; discarded whole
  };
  struct Item {
    Kind kind;
    std::string_view text;  // valid until the next feed()/pop()
  };

  explicit LineReader(std::size_t max_line = limits::kMaxCommandLine) : max_line_(max_line) {}
  // Buffered bytes (which may hold a password) are zeroed when consumed
  // lines are dropped, on clear() and on destruction.
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  void feed(std::string_view bytes);
  // Next complete line, or nullopt when more input is needed.
  std::optional<Item> pop();
  // True when a complete line is buffered: pop() would return an item.
  bool has_line() const;
  // True when some bytes of an incomplete line are buffered or being discarded.
  bool partial() const { return discarding_ || pos_ < buf_.size(); }
  // Drops everything buffered (used after STLS in a later issue: bytes sent
  // before the handshake must never be executed).
  void clear();

 private:
  void compact();
  std::size_t max_line_;
  std::string buf_;
  std::size_t pos_ = 0;      // start of unconsumed input in buf_
  bool discarding_ = false;  // inside an overlong line, dropping to its LF
};

}  // namespace apop::pop3
