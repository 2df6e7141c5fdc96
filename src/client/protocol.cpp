#include "client/protocol.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <span>

#include "auth/base64.hpp"
#include "auth/challenge.hpp"
#include "auth/digest.hpp"
#include "client/protocol_internal.hpp"
#include "common/limits.hpp"
#include "common/parse.hpp"
#include "common/text.hpp"

namespace apop::client {

namespace protocol_detail {

Error invalid(std::string m) { return make_error(Errc::invalid, std::move(m)); }

// A short printable rendering of untrusted bytes for error messages.
std::string printable(std::string_view s, std::size_t max) {
  return apop::printable(s, {.max = max});
}

}  // namespace protocol_detail

using namespace protocol_detail;

namespace {

bool is_atext(char c) {
  if (std::isalnum(static_cast<unsigned char>(c)) != 0) return true;
  constexpr std::string_view kSpecials = "!#$%&'*+-/=?^_`{|}~";
  return c != '\0' && kSpecials.find(c) != std::string_view::npos;
}

// "" when `s` is RFC 5322 dot-atom-text, else why not.
std::string dot_atom_problem(std::string_view s, std::string_view what) {
  std::string w(what);
  if (s.empty()) return w + " is empty";
  if (s.front() == '.' || s.back() == '.') return w + " has a leading or trailing dot";
  if (s.find("..") != std::string_view::npos) return w + " has consecutive dots";
  for (char c : s) {
    if (c == '.' || is_atext(c)) continue;
    if (c == '"') return w + " contains a quoted string (not allowed)";
    if (c == '<' || c == '>') return w + " contains a nested angle bracket";
    if (c == '@') return w + " contains a second '@'";
    return w + " contains '" + std::string(1, c) + "' (not RFC 5322 atext)";
  }
  return {};
}

bool is_dtext(unsigned char c) { return (c >= 33 && c <= 90) || (c >= 94 && c <= 126); }

}  // namespace

// ---------------------------------------------------------------------------

Result<Reply> parse_reply(std::string_view line) {
  Reply r;
  std::string_view rest;
  if (line.substr(0, 3) == "+OK" && (line.size() == 3 || line[3] == ' ')) {
    r.ok = true;
    rest = line.substr(3);
  } else if (line.substr(0, 4) == "-ERR" && (line.size() == 4 || line[4] == ' ')) {
    rest = line.substr(4);
  } else {
    return invalid("not a POP3 status line: \"" + printable(line) + "\"");
  }
  if (!rest.empty()) rest.remove_prefix(1);
  if (!rest.empty() && rest.front() == '[') {
    std::size_t close = rest.find(']');
    if (close != std::string_view::npos) {
      r.code = std::string(rest.substr(1, close - 1));
      rest.remove_prefix(close + 1);
      if (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    }
  }
  r.text = std::string(rest);
  return r;
}

bool is_continuation(std::string_view line) { return line == "+" || line.substr(0, 2) == "+ "; }

Result<std::string> parse_continuation(std::string_view line) {
  if (!is_continuation(line))
    return invalid("not a SASL continuation: \"" + printable(line) + "\"");
  std::string_view b64 = line.size() > 2 ? line.substr(2) : std::string_view{};
  auto decoded = auth::base64_decode_strict(b64);
  if (!decoded) return invalid("SASL continuation is not valid base64");
  return std::move(*decoded);
}

// ---------------------------------------------------------------------------

std::string challenge_problem(std::string_view s) {
  std::string why = [&]() -> std::string {
    if (s.empty()) return "empty timestamp";
    if (s.size() > limits::kMaxTimestamp) {
      return "timestamp is " + std::to_string(s.size()) + " octets long (at most " +
             std::to_string(limits::kMaxTimestamp) + " allowed)";
    }
    for (unsigned char c : s) {
      if (c < 0x21 || c > 0x7e) {
        std::string octet = "0x";
        append_hex(octet, std::span<const unsigned char>(&c, 1), /*upper=*/true);
        if (c == ' ' || c == '\t') return "timestamp contains white space (" + octet + ")";
        return "timestamp contains octet " + octet + " (only printable ASCII 0x21-0x7E allowed)";
      }
    }
    if (s.front() != '<' || s.back() != '>') return "timestamp is not enclosed in '<' '>'";
    std::string_view inner = s.substr(1, s.size() - 2);
    if (inner.empty()) return "empty timestamp <>";
    std::size_t at = inner.find('@');
    if (at == std::string_view::npos) return "timestamp has no '@'";
    std::string_view left = inner.substr(0, at);
    std::string_view right = inner.substr(at + 1);
    if (auto p = dot_atom_problem(left, "timestamp local part"); !p.empty()) return p;
    if (!right.empty() && right.front() == '[') {
      if (right.size() < 2 || right.back() != ']') return "timestamp domain literal is not closed";
      for (unsigned char c : right.substr(1, right.size() - 2)) {
        if (!is_dtext(c))
          return "timestamp domain literal contains '" + std::string(1, static_cast<char>(c)) + "'";
      }
      return {};
    }
    return dot_atom_problem(right, "timestamp domain");
  }();
  // Belt and braces: the server-side validator must agree.
  if (why.empty() && !auth::is_valid_msg_id(s)) why = "timestamp is not an RFC 5322 msg-id";
  return why;
}

Challenge extract_challenge(std::string_view line) {
  Challenge c;
  if (line.substr(0, 3) != "+OK") return c;
  if (auto ts = auth::find_timestamp(line)) {
    c.value = std::string(*ts);
    c.reason = challenge_problem(*ts);
    c.status = c.reason.empty() ? Challenge::Status::valid : Challenge::Status::invalid;
    return c;
  }
  std::string_view text = line.substr(3);
  if (text.find_first_of("<>@") == std::string_view::npos) return c;
  // Something like a timestamp without its brackets: report it as invalid so
  // that an explicit --auth apop is refused as a bad challenge.
  std::size_t mark = text.find_first_of("<>@");
  std::size_t start = text.find_last_of(' ', mark);
  start = start == std::string_view::npos ? 0 : start + 1;
  std::size_t end = text.find(' ', mark);
  c.value = std::string(
      text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
  c.status = Challenge::Status::invalid;
  c.reason = "malformed timestamp \"" + printable(c.value) + "\" (missing '<' or '>')";
  return c;
}

std::string apop_digest(std::string_view challenge, std::string_view secret) {
  std::string data;
  data.reserve(challenge.size() + secret.size());
  data.append(challenge);
  data.append(secret);
  std::string d = auth::md5_hex(data);
  OPENSSL_cleanse(data.data(), data.size());
  return d;
}

// ---------------------------------------------------------------------------

bool Capabilities::has_sasl(std::string_view mech) const {
  std::string u = ascii_uppercase(mech);
  return std::find(sasl.begin(), sasl.end(), u) != sasl.end();
}

namespace {

// The words of a CAPA line, separated by runs of spaces.
std::vector<std::string_view> capa_words(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    std::size_t j = i;
    while (j < s.size() && s[j] != ' ') ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

// Everything after the first word, leading spaces removed.
std::string capa_rest(std::string_view line) {
  line.remove_prefix(std::min(line.find_first_not_of(' '), line.size()));
  const std::size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return {};
  line.remove_prefix(sp);
  line.remove_prefix(std::min(line.find_first_not_of(' '), line.size()));
  return std::string(line);
}

}  // namespace

Capabilities parse_capa(const std::vector<std::string>& lines, std::size_t max_lines) {
  Capabilities c;
  c.received = true;
  for (const auto& line : lines) {
    if (c.lines.size() >= max_lines) break;
    c.lines.push_back(line);
    const std::vector<std::string_view> w = capa_words(line);
    if (w.empty()) continue;
    const std::string tag = ascii_uppercase(w[0]);
    if (tag == "STLS") {
      c.stls = true;
    } else if (tag == "USER") {
      c.user = true;
    } else if (tag == "TOP") {
      c.top = true;
    } else if (tag == "UIDL") {
      c.uidl = true;
    } else if (tag == "PIPELINING") {
      c.pipelining = true;
    } else if (tag == "RESP-CODES") {
      c.resp_codes = true;
    } else if (tag == "AUTH-RESP-CODE") {
      c.auth_resp_code = true;
    } else if (tag == "SASL") {
      for (std::size_t i = 1; i < w.size(); ++i) {
        if (c.sasl.size() >= limits::kMaxCapaSaslMechanisms) break;
        std::string m = ascii_uppercase(w[i]);
        if (std::find(c.sasl.begin(), c.sasl.end(), m) == c.sasl.end()) c.sasl.push_back(m);
      }
    } else if (tag == "IMPLEMENTATION") {
      c.implementation = capa_rest(line);
    } else if (tag == "LOGIN-DELAY") {
      c.login_delay = capa_rest(line);
    } else if (tag == "EXPIRE") {
      c.expire = capa_rest(line);
    }
  }
  return c;
}

// ---------------------------------------------------------------------------

Result<std::uint64_t> parse_number(std::string_view s) {
  if (auto v = parse_decimal(s)) return *v;
  if (s.empty()) return invalid("empty number");
  // The digits before the first other character overflow, or there is such
  // a character: the first of the two a left-to-right reading meets.
  const std::string_view digits = leading_digits(s);
  if (digits.size() == s.size() || (!digits.empty() && !parse_decimal(digits))) {
    return invalid("number overflows 64 bits: \"" + printable(s, 40) + "\"");
  }
  return invalid("not a decimal number: \"" + printable(s, 40) + "\"");
}

namespace {
// Splits "a SP b [SP rest]" strictly on single spaces.
bool split2(std::string_view s, std::string_view& a, std::string_view& b, std::string_view& rest) {
  std::size_t sp = s.find(' ');
  if (sp == std::string_view::npos) return false;
  a = s.substr(0, sp);
  std::string_view r = s.substr(sp + 1);
  std::size_t sp2 = r.find(' ');
  b = r.substr(0, sp2);
  rest = sp2 == std::string_view::npos ? std::string_view{} : r.substr(sp2);
  return true;
}
}  // namespace

Result<Stat> parse_stat(std::string_view text, std::uint64_t max_messages) {
  std::string_view a, b, rest;
  if (!split2(text, a, b, rest))
    return invalid("malformed STAT reply: \"" + printable(text) + "\"");
  auto n = parse_number(a);
  if (!n) return invalid("STAT message count: " + n.error().message);
  auto o = parse_number(b);
  if (!o) return invalid("STAT size: " + o.error().message);
  if (*n > max_messages) {
    return invalid("STAT announces " + std::to_string(*n) + " messages, more than the limit of " +
                   std::to_string(max_messages) + " per session");
  }
  return Stat{*n, *o};
}

Result<void> ListParser::feed(std::string_view line) {
  if (out_.size() >= count_) return invalid("LIST has more lines than STAT announced messages");
  std::string_view a, b, rest;
  if (!split2(line, a, b, rest)) return invalid("malformed LIST line: \"" + printable(line) + "\"");
  auto n = parse_number(a);
  if (!n) return invalid("LIST message number: " + n.error().message);
  auto size = parse_number(b);
  if (!size) return invalid("LIST size: " + size.error().message);
  if (*n == 0 || *n > count_)
    return invalid("LIST message number " + std::to_string(*n) + " out of range");
  // count_ is at most the STAT limit (ListingLimits::max_messages): one bit each.
  if (seen_.empty()) seen_.resize(static_cast<std::size_t>(count_) + 1);
  if (seen_[static_cast<std::size_t>(*n)])
    return invalid("LIST repeats message " + std::to_string(*n));
  seen_[static_cast<std::size_t>(*n)] = true;
  out_.emplace_back(*n, *size);
  return {};
}

ListParser::Sizes ListParser::take() {
  std::sort(out_.begin(), out_.end());
  seen_ = {};
  return std::move(out_);
}

Result<std::map<std::uint64_t, std::uint64_t>> parse_list(const std::vector<std::string>& lines,
                                                          std::uint64_t count) {
  ListParser p(count);
  for (const auto& line : lines) {
    if (auto f = p.feed(line); !f) return f.error();
  }
  auto sizes = p.take();
  return std::map<std::uint64_t, std::uint64_t>(sizes.begin(), sizes.end());
}

bool is_valid_uidl(std::string_view uid) {
  if (uid.empty() || uid.size() > limits::kMaxUidl) return false;
  return std::all_of(uid.begin(), uid.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u >= 0x21 && u <= 0x7e;
  });
}

Result<void> UidlParser::feed(std::string_view line) {
  if (out_.entries_.size() >= count_)
    return invalid("UIDL has more lines than STAT announced messages");
  if (line.size() > limits::kMaxUidlListingLine) {
    return invalid("UIDL line of " + std::to_string(line.size()) + " octets (at most " +
                   std::to_string(limits::kMaxUidlListingLine) + ", RFC 1939 section 7): \"" +
                   printable(line) + "\"");
  }
  std::string_view a, b, rest;
  if (!split2(line, a, b, rest) || !rest.empty()) {
    return invalid("malformed UIDL line: \"" + printable(line) + "\"");
  }
  auto n = parse_number(a);
  if (!n) return invalid("UIDL message number: " + n.error().message);
  if (*n == 0 || *n > count_)
    return invalid("UIDL message number " + std::to_string(*n) + " out of range");
  if (!is_valid_uidl(b)) {
    return invalid("UIDL of message " + std::to_string(*n) + " is not 1-70 printable octets: \"" +
                   printable(b) + "\"");
  }
  if (out_.bytes_ + b.size() > max_bytes_) {
    return invalid("the UIDL listing exceeds the limit of " + std::to_string(max_bytes_) +
                   " octets of unique-ids (after " + std::to_string(out_.entries_.size()) +
                   " messages)");
  }
  // count_ is at most the STAT limit (ListingLimits::max_messages): one bit each.
  if (seen_.empty()) seen_.resize(static_cast<std::size_t>(count_) + 1);
  if (seen_[static_cast<std::size_t>(*n)])
    return invalid("UIDL repeats message " + std::to_string(*n));
  seen_[static_cast<std::size_t>(*n)] = true;
  if (out_.used_ + b.size() > UidlListing::kBlock) {
    // new char[] leaves the block's pages untouched until written.
    out_.blocks_.push_back(std::unique_ptr<char[]>(new char[UidlListing::kBlock]));
    out_.used_ = 0;
  }
  const std::uint64_t off = (out_.blocks_.size() - 1) * UidlListing::kBlock + out_.used_;
  std::memcpy(out_.blocks_.back().get() + out_.used_, b.data(), b.size());
  out_.used_ += b.size();
  out_.entries_.push_back(UidlListing::Entry{*n, off << 8 | b.size()});
  out_.bytes_ += b.size();
  return {};
}

Result<UidlListing> UidlParser::finish() {
  auto& e = out_.entries_;
  std::sort(e.begin(), e.end(),
            [](const UidlListing::Entry& x, const UidlListing::Entry& y) { return x.msg < y.msg; });
  auto& idx = out_.by_uid_;
  idx.resize(e.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<std::uint32_t>(i);
  const UidlListing& l = out_;
  std::sort(idx.begin(), idx.end(),
            [&l](std::uint32_t x, std::uint32_t y) { return l.uid(x) < l.uid(y); });
  for (std::size_t i = 1; i < idx.size(); ++i) {
    if (l.uid(idx[i]) == l.uid(idx[i - 1]))
      return invalid("UIDL repeats unique-id \"" + std::string(l.uid(idx[i])) + "\"");
  }
  seen_ = {};
  return std::move(out_);
}

std::string_view UidlListing::find(std::uint64_t msg) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), msg,
                             [](const Entry& e, std::uint64_t m) { return e.msg < m; });
  if (it == entries_.end() || it->msg != msg) return {};
  return view(*it);
}

bool UidlListing::contains_uid(std::string_view uid) const {
  auto it =
      std::lower_bound(by_uid_.begin(), by_uid_.end(), uid,
                       [this](std::uint32_t i, std::string_view u) { return this->uid(i) < u; });
  return it != by_uid_.end() && this->uid(*it) == uid;
}

Result<std::map<std::uint64_t, std::string>> parse_uidl(const std::vector<std::string>& lines,
                                                        std::uint64_t count) {
  UidlParser p(count);
  for (const auto& line : lines) {
    if (auto f = p.feed(line); !f) return f.error();
  }
  auto l = p.finish();
  if (!l) return l.error();
  std::map<std::uint64_t, std::string> out;
  for (std::size_t i = 0; i < l->size(); ++i) out.emplace(l->msg(i), std::string(l->uid(i)));
  return out;
}

// ---------------------------------------------------------------------------

Result<bool> BodyDecoder::feed(std::string_view line) {
  if (done_) return invalid("data after the end of a multi-line reply");
  if (line == ".") {
    done_ = true;
    return true;
  }
  if (!line.empty() && line.front() == '.') line.remove_prefix(1);
  if (out_.size() + line.size() + 1 > max_) {
    return invalid("message larger than " + std::to_string(max_) + " octets");
  }
  out_.append(line);
  out_.push_back('\n');
  wire_ += line.size() + 2;
  ++lines_;
  return false;
}

bool size_consistent(std::uint64_t announced, const BodyDecoder& body) {
  // LF form <= announced (+2 for a server that counts a CRLF it adds) and
  // announced <= CRLF form (+2 for a final CRLF a server counted but stripped).
  std::uint64_t lf = body.text().size();
  std::uint64_t crlf = body.wire_octets();
  return lf <= announced + 2 && announced <= crlf + 2;
}

}  // namespace apop::client
