// The client side on hostile server bytes: every reply parser, the body
// decoder, and a whole `apop fetch` session (src/client/fetch.hpp) whose
// server is the fuzz input. No crash, no overflow, limits hold, no APOP
// digest is ever sent for an invalid challenge, and the summary's texts are
// printable ASCII whatever the server sent.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "client/fetch.hpp"
#include "client/protocol.hpp"
#include "common/limits.hpp"

namespace {

using namespace apop;
using namespace apop::client;

class BytesTransport final : public Transport {
 public:
  explicit BytesTransport(std::string_view in) : in_(in) {}
  Result<void> write(std::string_view data) override {
    sent += data;
    return {};
  }
  Result<std::string> read_line(std::size_t max) override {
    std::size_t nl = in_.find('\n', pos_);
    if (nl == std::string_view::npos) {
      last_ = NetFailure::closed;
      return make_error(Errc::temporary, "closed");
    }
    std::size_t end = nl > pos_ && in_[nl - 1] == '\r' ? nl - 1 : nl;
    if (end - pos_ > max) {
      last_ = NetFailure::overlong;
      return make_error(Errc::invalid, "overlong");
    }
    std::string line(in_.substr(pos_, end - pos_));
    pos_ = nl + 1;
    if (line.size() > max) __builtin_trap();
    return line;
  }
  std::size_t buffered() const override { return in_.size() - pos_; }
  Result<void> start_tls(const TlsOptions&) override {
    last_ = NetFailure::tls_handshake;
    return make_error(Errc::temporary, "no TLS in the fuzzer");
  }
  const TlsInfo& tls() const override { return tls_; }
  NetFailure last_failure() const override { return last_; }
  std::string sent;

 private:
  std::string_view in_;
  std::size_t pos_ = 0;
  TlsInfo tls_;
  NetFailure last_ = NetFailure::none;
};

class NullDestination final : public Destination {
 public:
  Result<void> store(std::string_view message, const MessageMeta& meta) override {
    if (message.size() > limits::kMaxFetchMessage) __builtin_trap();
    if (meta.uidl.size() > limits::kMaxUidl) __builtin_trap();
    return {};
  }
  std::string describe() const override { return "null"; }
};

bool printable_ascii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) return false;
  }
  return true;
}

std::vector<std::string> split_lines(std::string_view in) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < in.size() && out.size() < 4096) {
    std::size_t nl = in.find('\n', pos);
    std::string_view l =
        in.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    out.emplace_back(l);
    if (nl == std::string_view::npos) break;
    pos = nl + 1;
  }
  return out;
}

void parsers(std::string_view in) {
  auto lines = split_lines(in);
  for (const auto& l : lines) {
    (void)parse_reply(l);
    (void)parse_continuation(l);
    (void)parse_stat(l);
    (void)parse_number(l);
    auto c = extract_challenge(l);
    if (c.status == Challenge::Status::valid && !is_valid_challenge(c.value)) __builtin_trap();
  }
  auto caps = parse_capa(lines);
  if (caps.lines.size() > limits::kMaxCapaLines) __builtin_trap();
  auto list = parse_list(lines, lines.size());
  if (list) {
    for (const auto& [n, size] : *list) {
      if (n == 0 || n > lines.size()) __builtin_trap();
    }
  }
  auto uidl = parse_uidl(lines, lines.size());
  if (uidl) {
    for (const auto& [n, uid] : *uidl) {
      if (!is_valid_uidl(uid) || n == 0 || n > lines.size()) __builtin_trap();
    }
  }
  BodyDecoder body(4096);
  for (const auto& l : lines) {
    auto r = body.feed(l);
    if (!r || *r) break;
  }
  if (body.text().size() > 4096) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  parsers(in);

  // A whole session: the first byte chooses the options.
  static const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("apop-fuzz-client-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  auto state = AccountState::load(dir / "state");
  if (!state) return 0;
  FetchOptions o;
  o.user = "alice";
  o.password = "fuzz-secret";
  const std::uint8_t flags = data[0];
  static constexpr AuthMech kMechs[] = {AuthMech::automatic, AuthMech::apop, AuthMech::user,
                                        AuthMech::cram_md5};
  o.auth = kMechs[flags & 3];
  o.keep = (flags & 4) != 0;
  o.allow_plaintext = (flags & 8) != 0;
  o.tls_mode = (flags & 16) != 0 ? TlsMode::none : TlsMode::automatic;
  o.max_message = 64 * 1024;
  BytesTransport t(in);
  NullDestination dest;
  auto sum = run_session(t, dest, *state, o);
  // What the server said reaches the terminal, logs and `apop fetch --json`
  // (nlohmann::json::dump throws on invalid UTF-8) only as printable ASCII.
  if (!printable_ascii(sum.error) || !printable_ascii(sum.greeting) ||
      !printable_ascii(sum.tls_protocol) || !printable_ascii(sum.auth)) {
    __builtin_trap();
  }
  for (const auto& w : sum.warnings) {
    if (!printable_ascii(w)) __builtin_trap();
  }
  // No APOP command unless the greeting carried a valid challenge.
  if (t.sent.find("APOP ") != std::string::npos) {
    std::string_view greeting = in.substr(0, in.find('\n'));
    if (!greeting.empty() && greeting.back() == '\r') greeting.remove_suffix(1);
    if (extract_challenge(greeting).status != Challenge::Status::valid) __builtin_trap();
  }
  // Never the password in the clear (no TLS here) unless allowed.
  if (!o.allow_plaintext && t.sent.find("fuzz-secret") != std::string::npos) __builtin_trap();
  return 0;
}
