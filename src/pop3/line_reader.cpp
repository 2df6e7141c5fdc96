#include "pop3/line_reader.hpp"

#include <cstring>

#include "common/wipe.hpp"

namespace apop::pop3 {

void LineReader::feed(std::string_view bytes) {
  compact();
  buf_.append(bytes);
}

LineReader::~LineReader() { wipe(buf_); }

void LineReader::clear() {
  wipe(buf_);
  pos_ = 0;
  discarding_ = false;
}

void LineReader::compact() {
  if (pos_ == 0) return;
  // Consumed lines may have carried a password (PASS, a SASL response): the
  // bytes they leave behind are zeroed, not just dropped.
  const std::size_t left = buf_.size() - pos_;
  std::memmove(buf_.data(), buf_.data() + pos_, left);
  wipe(buf_.data() + left, buf_.size() - left);
  buf_.resize(left);
  pos_ = 0;
}

std::optional<LineReader::Item> LineReader::pop() {
  const char* start = buf_.data() + pos_;
  const std::size_t avail = buf_.size() - pos_;
  const void* lf = std::memchr(start, '\n', avail);
  if (lf == nullptr) {
    // No complete line. If what is buffered already exceeds the limit, the
    // line is overlong: drop it and keep dropping until its LF.
    if (discarding_ || avail >= max_line_) {
      discarding_ = true;
      wipe(buf_);
      pos_ = 0;
    }
    return std::nullopt;
  }
  const std::size_t len = static_cast<const char*>(lf) - start;  // excludes LF
  pos_ += len + 1;
  if (discarding_) {
    discarding_ = false;
    return Item{Kind::too_long, {}};
  }
  std::string_view line(start, len);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  // Limit counts the line with CRLF, whether or not the client sent the CR.
  if (line.size() + 2 > max_line_) return Item{Kind::too_long, {}};
  if (line.find('\0') != std::string_view::npos || line.find('\r') != std::string_view::npos) {
    return Item{Kind::bad_byte, {}};
  }
  return Item{Kind::line, line};
}

bool LineReader::has_line() const {
  return pos_ < buf_.size() && std::memchr(buf_.data() + pos_, '\n', buf_.size() - pos_) != nullptr;
}

}  // namespace apop::pop3
