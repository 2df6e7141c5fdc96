#include "pop3/body.hpp"

#include <cstring>
#include <span>

namespace apop::pop3 {

BodyStreamer::BodyStreamer(std::unique_ptr<ByteSource> source,
                           std::optional<std::uint64_t> top_lines)
    : source_(std::move(source)), top_lines_(top_lines) {
  // TOP n 0 with no header lines at all still sends nothing but the end.
}

bool BodyStreamer::transform(std::string_view in, std::string& out) {
  const char* p = in.data();
  const char* end = p + in.size();
  while (p < end) {
    if (at_line_start_) {
      // TOP: once the header is done, stop before a line that is not wanted.
      if (top_lines_ && !in_header_ && body_lines_ >= *top_lines_) return false;
      if (*p == '.') out.push_back('.');  // dot-stuffing
      at_line_start_ = false;
      line_empty_ = true;
    }
    const char* lf = static_cast<const char*>(std::memchr(p, '\n', end - p));
    const char* seg_end = lf ? lf : end;
    if (seg_end > p) {
      // Octets of the line other than a single trailing CR make it non-empty.
      std::size_t n = seg_end - p;
      bool only_cr = (n == 1 && *p == '\r');
      if (!only_cr) line_empty_ = false;
      out.append(p, n);
      prev_cr_ = (seg_end[-1] == '\r');
    }
    if (!lf) break;
    // End of line: add the CR a bare LF lacks.
    if (!prev_cr_) out.push_back('\r');
    out.push_back('\n');
    prev_cr_ = false;
    p = lf + 1;
    at_line_start_ = true;
    if (in_header_) {
      if (line_empty_) in_header_ = false;  // the blank line ends the header
    } else {
      ++body_lines_;
    }
  }
  return true;
}

Result<bool> BodyStreamer::produce(std::string& out) {
  if (done_) return true;
  if (buf_.size() != limits::kBodyChunk) buf_.resize(limits::kBodyChunk);
  auto n = source_->read(std::span<char>(buf_.data(), buf_.size()));
  if (!n.ok()) return n.error();
  bool more = *n > 0 && transform(std::string_view(buf_.data(), *n), out);
  if (more) return false;
  // End of message (or of TOP's lines): close an unterminated last line with
  // CRLF (as Dovecot). A trailing bare CR is an octet of that line like any
  // other bare CR (crlf.hpp), so it is kept and gets a CRLF of its own.
  if (!at_line_start_) out.append("\r\n");
  out.append(".\r\n");
  done_ = true;
  source_.reset();
  return true;
}

namespace {
class StringSource final : public ByteSource {
 public:
  explicit StringSource(std::string_view s) : s_(s) {}
  Result<std::size_t> read(std::span<char> buf) override {
    std::size_t n = std::min(buf.size(), s_.size());
    std::memcpy(buf.data(), s_.data(), n);
    s_.remove_prefix(n);
    return n;
  }

 private:
  std::string_view s_;
};
}  // namespace

std::string encode_body(std::string_view raw, std::optional<std::uint64_t> top_lines) {
  BodyStreamer s(std::make_unique<StringSource>(raw), top_lines);
  std::string out;
  for (;;) {
    auto r = s.produce(out);
    if (!r.ok() || *r) break;
  }
  return out;
}

}  // namespace apop::pop3
