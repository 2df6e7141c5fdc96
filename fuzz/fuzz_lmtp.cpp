// The LMTP session (net/lmtp_session.hpp) fed arbitrary client bytes, split
// where the input says, over an in-memory store whose lookups and deliveries
// fail for some users. Invariants: every reply line is "ddd" then ' ' or
// '-' and text, ends in CRLF and is bounded; every reply but LHLO's and
// 354 carries an enhanced status code of its class (RFC 2034); a message's
// end (after DATA's 354 or BDAT LAST's chunk, RFC 3030) brings exactly as
// many per-recipient replies as RCPTs were accepted (RFC 2033 §4.2), never
// more deliveries than those replies; nothing stored is larger than SIZE;
// nothing comes after the session closed.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/limits.hpp"
#include "net/lmtp_session.hpp"

namespace {

using apop::net::LmtpRecipient;

class FuzzDelivery final : public apop::net::LmtpDelivery {
 public:
  std::uint64_t max_size = 0;
  std::size_t deliveries = 0;
  LmtpRecipient recipient(std::string_view user, std::uint64_t) override {
    if (user.empty()) return LmtpRecipient::unknown;
    switch (static_cast<unsigned char>(user.front()) % 4) {
      case 0:
        return LmtpRecipient::ok;
      case 1:
        return LmtpRecipient::unknown;
      case 2:
        return user.size() % 2 ? LmtpRecipient::temporary : LmtpRecipient::over_quota;
      default:
        return LmtpRecipient::ok;
    }
  }
  apop::Result<void> deliver(std::string_view user, std::string_view, std::string_view trace,
                             std::string_view message) override {
    if (message.size() > max_size) __builtin_trap();
    // The trace block: two headers (Received folded over three lines), LF
    // ends, nothing but printable ASCII and tabs -- whatever LHLO, MAIL and
    // RCPT said.
    if (trace.rfind("Return-Path: <", 0) != 0 || trace.back() != '\n') __builtin_trap();
    int lines = 0;
    for (char c : trace) {
      const auto u = static_cast<unsigned char>(c);
      if (c == '\n') {
        ++lines;
      } else if (c != '\t' && (u < 0x20 || u >= 0x7f)) {
        __builtin_trap();
      }
    }
    if (lines != 4) __builtin_trap();
    ++deliveries;
    if (user.size() % 3 == 0) return apop::make_error(apop::Errc::temporary, "fault");
    if (user.size() % 5 == 0) return apop::make_error(apop::Errc::permanent, "fault");
    return {};
  }
};

bool digit(char c) { return c >= '0' && c <= '9'; }

// "d.ddd.ddd " with d the reply's class.
bool has_enhanced_code(std::string_view text, char cls) {
  if (text.size() < 6 || text[0] != cls || text[1] != '.') return false;
  std::size_t i = 2, n = 0;
  while (i < text.size() && digit(text[i]) && n < 3) ++i, ++n;
  if (n == 0 || i >= text.size() || text[i] != '.') return false;
  ++i;
  n = 0;
  while (i < text.size() && digit(text[i]) && n < 3) ++i, ++n;
  return n > 0 && i < text.size() && text[i] == ' ';
}

bool per_recipient(std::string_view l) {
  return l.starts_with("250 2.0.0 Delivered") || l.starts_with("451 4.3.0 Cannot store") ||
         l.starts_with("552 5.3.4 Message too big") || l.starts_with("554 5.3.0");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  // The first byte chooses the split size (1..32 bytes, or whole).
  const std::size_t step = data[0] % 33 == 0 ? size : data[0] % 33;
  const std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  FuzzDelivery store;
  apop::net::LmtpConfig config;
  config.hostname = "mx.example";
  config.max_message_size = 256;
  config.max_recipients = 4;
  store.max_size = config.max_message_size;
  apop::net::LmtpSession session(config, store);
  std::string out;
  for (std::size_t pos = 0; pos < in.size(); pos += step) {
    const bool was_closed = session.closed();
    const std::string part = session.feed(in.substr(pos, step));
    if (was_closed && !part.empty()) __builtin_trap();
    out += part;
  }
  // Walk the replies.
  std::vector<std::string_view> lines;
  std::string_view rest = out;
  while (!rest.empty()) {
    const auto crlf = rest.find("\r\n");
    if (crlf == std::string_view::npos) __builtin_trap();  // every line ends in CRLF
    lines.push_back(rest.substr(0, crlf));
    rest.remove_prefix(crlf + 2);
  }
  bool in_lhlo = false;
  std::size_t accepted = 0, delivery_replies = 0;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string_view l = lines[i];
    if (l.size() < 5 || l.size() > 512 || !digit(l[0]) || !digit(l[1]) || !digit(l[2]) ||
        (l[3] != ' ' && l[3] != '-')) {
      __builtin_trap();
    }
    for (char c : l) {
      if (c == '\r' || c == '\n') __builtin_trap();
    }
    if (l[3] == '-' && l.substr(0, 3) != "250") __builtin_trap();  // only LHLO is multi-line
    if (l[3] == '-') in_lhlo = true;
    const bool lhlo_line = in_lhlo;
    if (l[3] == ' ') in_lhlo = false;
    if (!lhlo_line && !l.starts_with("354 ") && !has_enhanced_code(l.substr(4), l[0])) {
      __builtin_trap();
    }
    if (l.starts_with("250 2.1.0")) accepted = 0;  // MAIL: a new transaction
    if (l.starts_with("250 2.1.5")) ++accepted;
    if (l.starts_with("354 ") || l.starts_with("250 2.0.0 Chunk")) {
      if (accepted == 0) __builtin_trap();  // DATA or a chunk without a recipient
    } else if (per_recipient(l)) {
      // The end of a message (after DATA's 354, or BDAT LAST's chunk, which
      // may be its first and only reply): exactly one reply per accepted
      // recipient, or the input ended inside the block.
      if (accepted == 0) __builtin_trap();
      std::size_t n = 0;
      while (i + n < lines.size() && n < accepted && per_recipient(lines[i + n])) ++n;
      if (n != accepted && i + n != lines.size()) __builtin_trap();
      if (i + n < lines.size() && per_recipient(lines[i + n])) __builtin_trap();
      delivery_replies += n;
      i += n - 1;
      accepted = 0;
    }
  }
  if (store.deliveries > delivery_replies) __builtin_trap();
  return 0;
}
