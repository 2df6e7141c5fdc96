// The I/O-free half of `apop bench` (see bench.hpp); the engine is bench_run.cpp.
#include "client/bench.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "common/text.hpp"

namespace apop::client::bench {

// ---------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------

Result<std::vector<Account>> parse_accounts(std::string_view text) {
  std::vector<Account> out;
  std::size_t lineno = 0;
  while (!text.empty()) {
    std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++lineno;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.remove_suffix(1);
    }
    std::size_t start = line.find_first_not_of(" \t");
    if (start == std::string_view::npos) continue;
    line.remove_prefix(start);
    if (line.front() == '#') continue;
    std::size_t sep = line.find_first_of(" \t");
    if (sep == std::string_view::npos) {
      return make_error(Errc::invalid,
                        fmt::format("accounts line {}: expected \"USER SECRET\"", lineno));
    }
    std::string_view user = line.substr(0, sep);
    std::string_view secret = line.substr(sep);
    secret.remove_prefix(secret.find_first_not_of(" \t"));
    auto bad = [](std::string_view s) {
      return std::any_of(s.begin(), s.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u < 0x20 || u == 0x7f;
      });
    };
    if (bad(user) || bad(secret)) {
      return make_error(
          Errc::invalid,
          fmt::format("accounts line {}: control character in user or secret", lineno));
    }
    out.push_back(Account{std::string(user), std::string(secret)});
  }
  if (out.empty()) return make_error(Errc::invalid, "the accounts file holds no accounts");
  return out;
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

std::optional<Workload> parse_workload(std::string_view s) {
  const std::string l = ascii_lowercase(s);
  if (l == "login") return Workload::login;
  if (l == "stat") return Workload::stat;
  if (l == "retr") return Workload::retr;
  if (l == "top") return Workload::top;
  if (l == "mixed") return Workload::mixed;
  return std::nullopt;
}

std::string_view workload_name(Workload w) {
  switch (w) {
    case Workload::login:
      return "login";
    case Workload::stat:
      return "stat";
    case Workload::retr:
      return "retr";
    case Workload::top:
      return "top";
    case Workload::mixed:
      return "mixed";
  }
  return "?";
}

std::optional<AuthKind> parse_auth_kind(std::string_view s) {
  const std::string l = ascii_lowercase(s);
  if (l == "apop") return AuthKind::apop;
  if (l == "user") return AuthKind::user;
  if (l == "scram-sha-256") return AuthKind::scram_sha_256;
  if (l == "none") return AuthKind::none;
  return std::nullopt;
}

std::string_view auth_kind_name(AuthKind a) {
  switch (a) {
    case AuthKind::apop:
      return "apop";
    case AuthKind::user:
      return "user";
    case AuthKind::scram_sha_256:
      return "scram-sha-256";
    case AuthKind::none:
      return "none";
  }
  return "?";
}

std::string_view step_name(Step::Kind k) {
  switch (k) {
    case Step::Kind::stat:
      return "STAT";
    case Step::Kind::list:
      return "LIST";
    case Step::Kind::uidl:
      return "UIDL";
    case Step::Kind::retr:
      return "RETR";
    case Step::Kind::top:
      return "TOP";
    case Step::Kind::quit:
      return "QUIT";
  }
  return "?";
}

std::string step_command(const Step& s) {
  switch (s.kind) {
    case Step::Kind::retr:
      return fmt::format("RETR {}\r\n", s.msg);
    case Step::Kind::top:
      return fmt::format("TOP {} 0\r\n", s.msg);
    default:
      return std::string(step_name(s.kind)) + "\r\n";
  }
}

bool step_multiline(Step::Kind k) {
  return k == Step::Kind::list || k == Step::Kind::uidl || k == Step::Kind::retr ||
         k == Step::Kind::top;
}

bool needs_stat(Workload w) { return w != Workload::login; }

std::vector<Step> plan(Workload w, std::uint64_t count, std::uint64_t max_messages,
                       std::uint64_t session_index) {
  constexpr std::uint64_t kMixedMessages = 10;
  std::uint64_t n = max_messages ? std::min(count, max_messages) : count;
  std::vector<Step> out;
  auto each = [&](Step::Kind k, std::uint64_t upto) {
    for (std::uint64_t i = 1; i <= upto; ++i) out.push_back(Step{k, i});
  };
  switch (w) {
    case Workload::login:
    case Workload::stat:
      break;
    case Workload::retr:
      each(Step::Kind::retr, n);
      break;
    case Workload::top:
      each(Step::Kind::top, n);
      break;
    case Workload::mixed:
      switch (session_index % 4) {
        case 0:
          break;
        case 1:
          out.push_back(Step{Step::Kind::uidl, 0});
          break;
        case 2:
          each(Step::Kind::top, std::min(n, kMixedMessages));
          break;
        default:
          out.push_back(Step{Step::Kind::list, 0});
          each(Step::Kind::retr, std::min(n, kMixedMessages));
          break;
      }
      break;
  }
  out.push_back(Step{Step::Kind::quit, 0});
  return out;
}

// ---------------------------------------------------------------------------
// Terminator scanner
// ---------------------------------------------------------------------------

std::optional<std::size_t> TerminatorScanner::feed(std::string_view chunk) {
  const char* p = chunk.data();
  const char* end = p + chunk.size();
  while (p < end) {
    switch (state_) {
      case State::mid: {
        const void* nl = std::memchr(p, '\n', static_cast<std::size_t>(end - p));
        if (nl == nullptr) return std::nullopt;
        p = static_cast<const char*>(nl) + 1;
        state_ = State::line_start;
        break;
      }
      case State::line_start:
        if (*p == '.') {
          state_ = State::dot;
          ++p;
        } else {
          state_ = State::mid;  // this octet is scanned (it may be the LF of an empty line)
        }
        break;
      case State::dot:
        if (*p == '\n') {
          state_ = State::done;
          return static_cast<std::size_t>(p + 1 - chunk.data());
        }
        if (*p == '\r') {
          state_ = State::dot_cr;
          ++p;
        } else {
          state_ = State::mid;
        }
        break;
      case State::dot_cr:
        if (*p == '\n') {
          state_ = State::done;
          return static_cast<std::size_t>(p + 1 - chunk.data());
        }
        state_ = State::mid;
        break;
      case State::done:
        return 0;
    }
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Histogram
// ---------------------------------------------------------------------------

namespace {
constexpr std::uint64_t kExact = 1024;  // values below are their own bucket
constexpr unsigned kSubBits = 7;        // 128 buckets per power of two above
constexpr unsigned kMaxExp = 40;        // values capped at 2^41 - 1 us (~ 25 days)
constexpr std::uint64_t kCap = (std::uint64_t{1} << (kMaxExp + 1)) - 1;
}  // namespace

std::size_t Histogram::bucket_of(std::uint64_t v) {
  if (v < kExact) return static_cast<std::size_t>(v);
  v = std::min(v, kCap);
  unsigned e = static_cast<unsigned>(std::bit_width(v)) - 1;  // >= 10
  std::uint64_t sub = (v >> (e - kSubBits)) & ((1u << kSubBits) - 1);
  return static_cast<std::size_t>(kExact + (e - 10) * (1u << kSubBits) + sub);
}

std::uint64_t Histogram::upper_of(std::size_t b) {
  if (b < kExact) return b;
  std::size_t i = b - kExact;
  unsigned e = static_cast<unsigned>(i >> kSubBits) + 10;
  std::uint64_t sub = i & ((1u << kSubBits) - 1);
  return (((std::uint64_t{1} << kSubBits) + sub + 1) << (e - kSubBits)) - 1;
}

void Histogram::add(std::uint64_t micros) {
  std::size_t b = bucket_of(micros);
  if (buckets_.size() <= b) buckets_.resize(b + 1, 0);
  ++buckets_[b];
  min_ = count_ == 0 ? micros : std::min(min_, micros);
  max_ = std::max(max_, micros);
  ++count_;
  sum_ += micros;
}

void Histogram::merge(const Histogram& other) {
  if (other.count_ == 0) return;
  if (buckets_.size() < other.buckets_.size()) buckets_.resize(other.buckets_.size(), 0);
  for (std::size_t i = 0; i < other.buckets_.size(); ++i) buckets_[i] += other.buckets_[i];
  min_ = count_ == 0 ? other.min_ : std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  count_ += other.count_;
  sum_ += other.sum_;
}

std::uint64_t Histogram::percentile(double p) const {
  if (count_ == 0) return 0;
  p = std::clamp(p, 0.0, 100.0);
  auto rank = static_cast<std::uint64_t>(std::ceil(p / 100.0 * static_cast<double>(count_)));
  rank = std::clamp<std::uint64_t>(rank, 1, count_);
  std::uint64_t seen = 0;
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    seen += buckets_[b];
    if (seen >= rank) {
      // The last bucket holds max(), also when it is beyond the cap.
      if (b + 1 == buckets_.size()) return max_;
      return std::clamp(upper_of(b), min_, max_);
    }
  }
  return max_;
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

double Report::sessions_per_s() const {
  return elapsed_s > 0 ? static_cast<double>(sessions_ok) / elapsed_s : 0.0;
}

double Report::mb_per_s() const {
  return elapsed_s > 0 ? static_cast<double>(bytes_received) / 1e6 / elapsed_s : 0.0;
}

namespace {

double ms(std::uint64_t micros) { return static_cast<double>(micros) / 1000.0; }

nlohmann::json hist_json(const Histogram& h) {
  return {{"count", h.count()},          {"mean", ms(static_cast<std::uint64_t>(h.mean()))},
          {"min", ms(h.min())},          {"p50", ms(h.percentile(50))},
          {"p90", ms(h.percentile(90))}, {"p99", ms(h.percentile(99))},
          {"max", ms(h.max())}};
}

// Commands in session order, then anything else alphabetically.
std::vector<std::string> command_order(const std::map<std::string, Histogram>& m) {
  static const char* const kOrder[] = {"connect", "auth", "STAT", "LIST",
                                       "UIDL",    "TOP",  "RETR", "QUIT"};
  std::vector<std::string> out;
  for (const char* k : kOrder) {
    if (m.count(k)) out.emplace_back(k);
  }
  for (const auto& [k, _] : m) {
    if (std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
  }
  return out;
}

}  // namespace

std::string Report::text() const {
  std::string out;
  out +=
      fmt::format("apop bench {}  workload={} auth={} tls={} concurrency={}\n", target,
                  workload_name(workload), auth_kind_name(auth), tls ? "yes" : "no", concurrency);
  out +=
      fmt::format("sessions: {} ok, {} failed in {:.3f} s: {:.1f} sessions/s (peak {} in flight)\n",
                  sessions_ok, sessions_failed, elapsed_s, sessions_per_s(), peak_in_flight);
  out += fmt::format("received: {:.3f} MB ({:.2f} MB/s), sent {:.3f} MB, {} messages\n",
                     static_cast<double>(bytes_received) / 1e6, mb_per_s(),
                     static_cast<double>(bytes_sent) / 1e6, messages);
  out += fmt::format("{:<10} {:>9} {:>10} {:>10} {:>10} {:>10}\n", "latency ms", "count", "p50",
                     "p90", "p99", "max");
  auto row = [&](const std::string& name, const Histogram& h) {
    out +=
        fmt::format("{:<10} {:>9} {:>10.3f} {:>10.3f} {:>10.3f} {:>10.3f}\n", name, h.count(),
                    ms(h.percentile(50)), ms(h.percentile(90)), ms(h.percentile(99)), ms(h.max()));
  };
  row("session", session);
  for (const auto& k : command_order(commands)) row(k, commands.at(k));
  if (errors.empty()) {
    out += "errors: none\n";
  } else {
    out += "errors:\n";
    for (const auto& [kind, n] : errors) {
      auto s = error_samples.find(kind);
      out += fmt::format("  {:<10} {:>9}  {}\n", kind, n,
                         s == error_samples.end() ? "" : "e.g. " + s->second);
    }
  }
  return out;
}

nlohmann::json Report::json() const {
  nlohmann::json lat = nlohmann::json::object();
  lat["session"] = hist_json(session);
  for (const auto& [k, h] : commands) lat[k] = hist_json(h);
  nlohmann::json errs = nlohmann::json::object();
  for (const auto& [k, n] : errors) errs[k] = n;
  nlohmann::json samples = nlohmann::json::object();
  for (const auto& [k, s] : error_samples) samples[k] = s;
  return {{"target", target},
          {"workload", workload_name(workload)},
          {"auth", auth_kind_name(auth)},
          {"tls", tls},
          {"concurrency", concurrency},
          {"sessions_ok", sessions_ok},
          {"sessions_failed", sessions_failed},
          {"elapsed_s", elapsed_s},
          {"sessions_per_s", sessions_per_s()},
          {"bytes_received", bytes_received},
          {"bytes_sent", bytes_sent},
          {"mb_per_s", mb_per_s()},
          {"messages", messages},
          {"peak_in_flight", peak_in_flight},
          {"latency_ms", lat},
          {"errors", errs},
          {"error_samples", samples}};
}

}  // namespace apop::client::bench
