// Parsing mbox buffers (store/mbox.hpp, "Parsing"): pure, no I/O.
#include <time.h>

#include <algorithm>
#include <array>
#include <ctime>

#include "common/text.hpp"
#include "pop3/crlf.hpp"
#include "store/maildir_name.hpp"
#include "store/mbox.hpp"
#include "store/mbox_internal.hpp"

namespace apop::store {

using mbox_detail::Sha1;
using mbox_detail::sha1_hex;

namespace {

// Header fields that mail readers and servers add or rewrite in mbox files;
// left out of the header UIDL so that reading the mailbox with mutt does not
// make POP3 clients download it again.
constexpr std::array<std::string_view, 11> kVolatileHeaders = {
    "Status", "X-Status", "X-Keywords",     "X-IMAP",           "X-IMAPbase",       "X-UID",
    "X-UIDL", "Lines",    "Content-Length", "X-Mozilla-Status", "X-Mozilla-Status2"};

bool volatile_header(std::string_view name) {
  return std::any_of(kVolatileHeaders.begin(), kVolatileHeaders.end(),
                     [&](std::string_view v) { return iequals(v, name); });
}

// Calls f(name, raw_field) for each header field of the header block at the
// start of `message` (raw_field: the field's lines including their LFs).
template <typename F>
void for_each_header(std::string_view message, F&& f) {
  std::size_t pos = 0;
  while (pos < message.size()) {
    if (message[pos] == '\n' || message.substr(pos, 2) == "\r\n") return;  // end of header
    // A field: one line plus continuation lines (starting with SP or HTAB).
    std::size_t end = pos;
    for (;;) {
      const std::size_t nl = message.find('\n', end);
      end = nl == std::string_view::npos ? message.size() : nl + 1;
      if (end >= message.size() || (message[end] != ' ' && message[end] != '\t')) break;
    }
    const std::string_view field = message.substr(pos, end - pos);
    const std::size_t colon = field.find(':');
    const std::size_t nl = field.find('\n');
    if (colon == std::string_view::npos || (nl != std::string_view::npos && colon > nl)) {
      return;  // not a header field: the header ends here (a malformed message)
    }
    std::string_view name = field.substr(0, colon);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
    f(name, field);
    pos = end;
  }
}

// The From line's date, "From SENDER Www Mmm dd hh:mm:ss yyyy[ ...]", as
// local time. 0 when unreadable.
std::int64_t from_line_time(std::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  // Find "Www Mmm " after the sender: try each space-separated position.
  static constexpr std::array<std::string_view, 7> kDays = {"Sun", "Mon", "Tue", "Wed",
                                                            "Thu", "Fri", "Sat"};
  for (std::size_t sp = line.find(' ', 5); sp != std::string_view::npos;
       sp = line.find(' ', sp + 1)) {
    const std::string_view rest = line.substr(sp + 1);
    if (rest.size() < 24 || rest[3] != ' ') continue;
    if (std::find(kDays.begin(), kDays.end(), rest.substr(0, 3)) == kDays.end()) continue;
    std::string text(rest.substr(4));
    std::tm tm{};
    const char* p = ::strptime(text.c_str(), "%b %d %H:%M:%S %Y", &tm);
    if (p == nullptr) continue;
    tm.tm_isdst = -1;
    const std::time_t t = std::mktime(&tm);
    return t == static_cast<std::time_t>(-1) ? 0 : static_cast<std::int64_t>(t);
  }
  return 0;
}

}  // namespace

Result<std::vector<MboxSpan>> parse_mbox(std::string_view data) {
  std::vector<MboxSpan> spans;
  std::size_t first = 0;
  while (first < data.size() && data[first] == '\n') ++first;
  if (first == data.size()) return spans;  // empty, or only empty lines
  if (data.substr(first, 5) != "From ") {
    return make_error(Errc::invalid, "not an mbox file: it does not begin with a \"From \" line");
  }
  // Message starts: "From " at `first`, and after every "\n\n".
  std::vector<std::size_t> starts{first};
  for (std::size_t p = data.find("\n\nFrom ", first); p != std::string_view::npos;
       p = data.find("\n\nFrom ", p + 1)) {
    starts.push_back(p + 2);
  }
  spans.reserve(starts.size());
  for (std::size_t i = 0; i < starts.size(); ++i) {
    MboxSpan s;
    s.start = starts[i];
    s.next = i + 1 < starts.size() ? starts[i + 1] : data.size();
    const std::size_t nl = data.find('\n', s.start);
    s.body = nl == std::string_view::npos || nl >= s.next ? s.next : nl + 1;
    s.end = s.next;
    // The separator: one LF of the "\n\n" before the next "From " line, or of
    // a trailing "\n\n" at the end of the file.
    if (s.end >= s.body + 1 && s.end >= 2 && data[s.end - 1] == '\n' && data[s.end - 2] == '\n') {
      --s.end;
    }
    spans.push_back(s);
  }
  return spans;
}

std::optional<std::string> mbox_header_value(std::string_view message, std::string_view name) {
  std::optional<std::string> out;
  for_each_header(message, [&](std::string_view n, std::string_view field) {
    if (out || !iequals(n, name)) return;
    std::string_view v = field.substr(field.find(':') + 1);
    auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!v.empty() && blank(v.front())) v.remove_prefix(1);
    while (!v.empty() && blank(v.back())) v.remove_suffix(1);
    out = std::string(v);
  });
  return out;
}

MboxMessageFacts mbox_message_facts(std::string_view data, const MboxSpan& span) {
  MboxMessageFacts f;
  const std::string_view from_line = data.substr(span.start, span.body - span.start);
  const std::string_view body = data.substr(span.body, span.end - span.body);
  f.size = pop3::crlf_size(body);
  f.body_digest = sha1_hex(body);
  if (auto x = mbox_header_value(body, "X-UIDL"); x && valid_uidl(*x)) f.x_uidl = *x;
  Sha1 h;
  h.update(from_line);
  for_each_header(body, [&](std::string_view name, std::string_view field) {
    if (!volatile_header(name)) h.update(field);
  });
  f.header_uidl = "M" + h.hex();
  f.delivered = from_line_time(from_line);
  return f;
}

}  // namespace apop::store
