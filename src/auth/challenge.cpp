#include "auth/challenge.hpp"

#include <openssl/crypto.h>
#include <pthread.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "auth/random.hpp"
#include "common/limits.hpp"
#include "common/text.hpp"

namespace apop::auth {
namespace {

// Process-wide, so that two generators of one process never collide either.
std::atomic<std::uint64_t> g_counter{0};

// Room left for the hostname: "<" + 32 hex + up to 16 hex counter + "." +
// up to 20 digits pid + "@" + host + ">".
constexpr std::size_t kMaxHost = limits::kMaxTimestamp - (1 + 32 + 16 + 1 + 20 + 1 + 1);

bool is_alpha(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// RFC 5322 §3.2.3 atext.
bool is_atext(char c) {
  if (is_alpha(c) || is_digit(c)) return true;
  constexpr std::string_view kSpecials = "!#$%&'*+-/=?^_`{|}~";
  return c != '\0' && kSpecials.find(c) != std::string_view::npos;
}

// RFC 5322 §3.2.3 dot-atom-text = 1*atext *("." 1*atext)
bool is_dot_atom_text(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  char prev = '\0';
  for (char c : s) {
    if (c == '.') {
      if (prev == '.') return false;
    } else if (!is_atext(c)) {
      return false;
    }
    prev = c;
  }
  return true;
}

// RFC 5322 §3.6.4 no-fold-literal = "[" *dtext "]", dtext = %d33-90 / %d94-126.
bool is_no_fold_literal(std::string_view s) {
  if (s.size() < 2 || s.front() != '[' || s.back() != ']') return false;
  for (char c : s.substr(1, s.size() - 2)) {
    auto u = static_cast<unsigned char>(c);
    if (!((u >= 33 && u <= 90) || (u >= 94 && u <= 126))) return false;
  }
  return true;
}

std::string sanitise_hostname(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (char c : in) {
    if (!(is_alpha(c) || is_digit(c) || c == '.' || c == '-')) continue;
    if (c == '.' && (out.empty() || out.back() == '.')) continue;  // leading / double dot
    out.push_back(c);
  }
  if (out.size() > kMaxHost) out.resize(kMaxHost);
  while (!out.empty() && out.back() == '.') out.pop_back();  // trailing dot
  if (out.empty()) out = "localhost";
  return out;
}

// This process's id without a system call per greeting (glibc no longer
// caches getpid()): read once, and again in a child after fork() (the
// pthread_atfork handler clears it; the server forks with glibc's fork()).
std::atomic<pid_t> g_pid{0};

pid_t current_pid() {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr, [] { g_pid.store(0, std::memory_order_relaxed); });
    return true;
  }();
  (void)registered;
  pid_t pid = g_pid.load(std::memory_order_relaxed);
  if (pid == 0) {
    pid = ::getpid();
    g_pid.store(pid, std::memory_order_relaxed);
  }
  return pid;
}

// 16 bytes of CSPRNG output as 32 hex digits, appended to `s`. Taken from a
// per-thread block of RAND_bytes output: one call per 64 challenges instead
// of one per connection (the call, not the bytes, is what costs: about
// 8,000 instructions, 5 % of a login's user-space work). The block is
// refilled after fork() so that parent and child never hand out the same
// bytes, and bytes handed out are wiped from it.
void append_random_hex(std::string& s) {
  constexpr std::size_t kTake = 16;
  thread_local std::array<unsigned char, 64 * kTake> block{};
  thread_local std::size_t used = block.size();
  thread_local pid_t filled_by = 0;
  const pid_t pid = current_pid();
  if (used + kTake > block.size() || filled_by != pid) {
    if (!random_bytes(block)) std::abort();
    used = 0;
    filled_by = pid;
  }
  append_hex(s, std::span<const unsigned char>(block.data() + used, kTake));
  OPENSSL_cleanse(block.data() + used, kTake);
  used += kTake;
}

}  // namespace

ChallengeGenerator::ChallengeGenerator(std::string hostname)
    : hostname_(sanitise_hostname(hostname)) {}

std::string ChallengeGenerator::next() {
  std::uint64_t n = g_counter.fetch_add(1, std::memory_order_relaxed);
  std::string s;
  s.reserve(limits::kMaxTimestamp);
  s += '<';
  append_random_hex(s);
  s += hex_number(n);
  s += '.';
  s += std::to_string(static_cast<long long>(current_pid()));
  s += '@';
  s += hostname_;
  s += '>';
  return s;
}

bool is_valid_msg_id(std::string_view s) {
  if (s.size() < 5 || s.size() > limits::kMaxTimestamp) return false;  // "<a@b>"
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x21 || u > 0x7E) return false;
  }
  if (s.front() != '<' || s.back() != '>') return false;
  std::string_view inner = s.substr(1, s.size() - 2);
  std::size_t at = inner.find('@');
  if (at == std::string_view::npos) return false;
  std::string_view left = inner.substr(0, at);
  std::string_view right = inner.substr(at + 1);
  // '@' is neither atext nor dtext, so a second '@' fails both checks below.
  if (!is_dot_atom_text(left)) return false;
  return is_dot_atom_text(right) || is_no_fold_literal(right);
}

std::optional<std::string_view> find_timestamp(std::string_view line) {
  if (line.substr(0, 3) != "+OK") return std::nullopt;
  std::size_t end = line.rfind('>');
  if (end == std::string_view::npos) return std::nullopt;
  std::size_t word = line.find_last_of(" \t", end);
  word = word == std::string_view::npos ? 0 : word + 1;
  std::size_t start = line.find('<', word);
  if (start == std::string_view::npos || start >= end) {
    start = line.rfind('<', end);
    if (start == std::string_view::npos) return std::nullopt;
  }
  return line.substr(start, end - start + 1);
}

}  // namespace apop::auth
