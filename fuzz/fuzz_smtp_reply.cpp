// The SMTP/LMTP client's I/O-free parts (client/smtp_reply.hpp) on hostile
// server bytes: the reply parser line by line and whole, enhanced status
// codes, the EHLO keyword list; and the DATA encoding and the bounce
// builder (client/handoff.hpp) on hostile message bytes. No crash, limits
// hold, texts shown to users are printable ASCII, the DATA stream ends only
// at its terminating dot and undoes to the message.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "client/handoff.hpp"
#include "client/smtp_reply.hpp"
#include "common/limits.hpp"

namespace {

using namespace apop;
using namespace apop::client;

bool printable_ascii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) return false;
  }
  return true;
}

void check_reply(const smtp::Reply& r) {
  if (r.code < 200 || r.code > 559) __builtin_trap();
  if (r.lines.empty() || r.lines.size() > limits::kMaxSmtpReplyLines) __builtin_trap();
  for (const auto& l : r.lines) {
    if (l.size() > limits::kMaxSmtpReplyLine) __builtin_trap();
  }
  if (!r.enhanced.empty() && r.enhanced[0] != static_cast<char>('0' + r.code / 100)) {
    __builtin_trap();
  }
  if (!printable_ascii(r.shown())) __builtin_trap();
  if (r.shown().size() > 203) __builtin_trap();
  auto x = smtp::parse_extensions(r);
  for (const auto& k : x.keywords) {
    if (!printable_ascii(k)) __builtin_trap();
  }
}

// Undoes data_encode(): CRLF -> LF, one leading dot removed, up to the
// terminating "." line, which must be the last line; and chunk_encode().
void check_data(std::string_view message) {
  std::uint64_t size = 0;
  const std::string wire = smtp::data_encode(message, &size);
  if (wire.size() < 3 || wire.substr(wire.size() - 3) != ".\r\n") __builtin_trap();
  std::string back;
  std::size_t pos = 0;
  bool ended = false;
  while (pos < wire.size()) {
    const std::size_t nl = wire.find('\n', pos);
    if (nl == std::string::npos || nl == pos || wire[nl - 1] != '\r') __builtin_trap();  // bare LF
    std::string_view line(wire.data() + pos, nl - 1 - pos);
    if (ended) __builtin_trap();  // data after the terminating dot
    if (line == ".") {
      ended = true;
    } else {
      if (line.starts_with(".")) line.remove_prefix(1);
      back.append(line);
      back += '\n';
    }
    pos = nl + 1;
  }
  if (!ended) __builtin_trap();
  // The message as sent: every line end as LF (a CR before LF dropped), a
  // final newline added if missing.
  std::string want;
  for (std::size_t i = 0; i < message.size(); ++i) {
    if (message[i] == '\r' && i + 1 < message.size() && message[i + 1] == '\n') continue;
    want += message[i];
  }
  if (!want.empty() && want.back() != '\n') want += '\n';
  if (back != want) __builtin_trap();
  // SIZE=n: the CRLF size without the stuffed dots and the final ".\r\n".
  std::uint64_t crlf_size = back.size();
  for (char c : back) crlf_size += c == '\n' ? 1 : 0;
  if (size != crlf_size) __builtin_trap();
  // BDAT's content (chunk_encode): the same lines, every LF after a CR, no
  // stuffing; its length is SIZE='s.
  const std::string chunk = smtp::chunk_encode(message);
  if (chunk.size() != size) __builtin_trap();
  std::string unchunked;
  for (std::size_t i = 0; i < chunk.size(); ++i) {
    if (chunk[i] == '\n' && (i == 0 || chunk[i - 1] != '\r')) __builtin_trap();  // bare LF
    if (chunk[i] == '\r' && i + 1 < chunk.size() && chunk[i + 1] == '\n') continue;
    unchunked += chunk[i];
  }
  if (unchunked != want) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);

  // Line by line, as the connection feeds it.
  smtp::ReplyParser p;
  std::size_t pos = 0;
  while (pos < in.size()) {
    std::size_t nl = in.find('\n', pos);
    std::string_view line = in.substr(pos, nl == std::string_view::npos ? nl : nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    auto r = p.feed(line);
    if (!r) {
      p.reset();
    } else if (*r) {
      check_reply(p.reply());
    }
    if (nl == std::string_view::npos) break;
    pos = nl + 1;
  }

  std::size_t used = 0;
  auto whole = smtp::parse_reply(in, &used);
  if (whole) {
    check_reply(*whole);
    if (used == 0 || used > in.size()) __builtin_trap();
    const std::string e = smtp::enhanced_code(whole->lines[0]);
    (void)e;
  }
  const std::string enh = smtp::enhanced_code(in);
  if (enh.size() > 11) __builtin_trap();

  const std::string rp = smtp::reverse_path(in);
  if (!rp.empty() && (!printable_ascii(rp) || rp.find_first_of("<> ") != std::string::npos)) {
    __builtin_trap();
  }

  check_data(in);

  smtp::Reply reply;
  reply.code = 550;
  reply.lines = {"5.0.0 fuzz"};
  BounceInfo info{
      "sender@example.org", "rcpt@example.net", "host.example", "lmtp:unix:/x", 0, "1.2.3"};
  const std::string dsn = build_bounce(in, reply, info);
  if (dsn.size() > limits::kMaxBounceHeaders + 4096) __builtin_trap();
  return 0;
}
