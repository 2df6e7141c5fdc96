// `apop bench`: a POP3 load generator. Many sessions in flight from one
// thread (C++20 coroutines on standalone Asio), each one connect, optional
// implicit TLS, login (APOP, USER/PASS or SASL SCRAM-SHA-256), a workload
// script, QUIT. The numbers: sessions per second, octets per second, latency
// percentiles of whole sessions and of each command, errors by kind.
//
// The I/O-free parts (accounts file, workload scripts, the multi-line
// terminator scanner, the latency histogram, the report) are separate from
// run() so they are unit-tested without a network.
//
// Contract: run() never throws for network or protocol trouble; every failed
// session is counted under an error kind and the run goes on. It is bounded by
// Options::sessions (count) and Options::duration (time); each session's
// silence is bounded by Options::timeout.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/transport.hpp"
#include "common/result.hpp"

namespace apop::client::bench {

// ---------------------------------------------------------------------------
// Accounts file
// ---------------------------------------------------------------------------

struct Account {
  std::string user;
  std::string secret;
};

// One "USER SECRET" pair a line, separated by spaces or tabs; the secret is
// the rest of the line after the separator (trailing CR and blanks removed),
// so it may contain spaces. Blank lines and lines starting with '#' are
// skipped. Errc::invalid, naming the line, for a line without a secret, a user
// with control characters, or a file without accounts.
Result<std::vector<Account>> parse_accounts(std::string_view text);

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

enum class Workload { login, stat, retr, top, mixed };
std::optional<Workload> parse_workload(std::string_view s);
std::string_view workload_name(Workload w);

// none: no login at all; the session reads the greeting, (holds,) and QUITs
// in the AUTHORIZATION state, whatever the workload.
enum class AuthKind { apop, user, scram_sha_256, none };
std::optional<AuthKind> parse_auth_kind(std::string_view s);
std::string_view auth_kind_name(AuthKind a);

// One POP3 command of a session script.
struct Step {
  enum class Kind { stat, list, uidl, retr, top, quit };
  Kind kind = Kind::quit;
  std::uint64_t msg = 0;  // retr, top
};
std::string_view step_name(Step::Kind k);  // "STAT", "RETR", ...
std::string step_command(const Step& s);   // "RETR 3\r\n", "TOP 3 0\r\n"
bool step_multiline(Step::Kind k);         // the reply has a body (LIST, UIDL, RETR, TOP)

// Whether the session sends STAT right after logging in (every workload but
// login); the rest of the script depends on the message count it returns.
bool needs_stat(Workload w);

// The commands after STAT (after login for `login`), QUIT last:
//   login  QUIT
//   stat   QUIT
//   retr   RETR 1..n, QUIT
//   top    TOP 1..n 0, QUIT
//   mixed  by session_index % 4: 0 QUIT (a mailbox check); 1 UIDL, QUIT (a
//          poll for new mail); 2 TOP 1..n 0, QUIT (headers); 3 LIST, RETR 1..n,
//          QUIT (a download); n at most 10 here
// where n = count, capped at max_messages when that is not 0.
std::vector<Step> plan(Workload w, std::uint64_t count, std::uint64_t max_messages,
                       std::uint64_t session_index);

// ---------------------------------------------------------------------------
// Multi-line replies
// ---------------------------------------------------------------------------

// Finds the end of a multi-line body (RFC 1939 §3: a line holding only ".")
// in a byte stream fed in arbitrary chunks, without copying it. The status
// line must already be consumed (the scanner starts at a line start). Lines
// may end in CRLF or LF. A dot-stuffed line ("..x") is not the terminator.
class TerminatorScanner {
 public:
  // Scans `chunk`; returns the number of its octets up to and including the
  // terminator's LF, or nullopt when the terminator is not in it (all of it
  // belongs to the body). Not to be fed after the terminator was found.
  std::optional<std::size_t> feed(std::string_view chunk);
  bool done() const { return state_ == State::done; }
  void reset() { state_ = State::line_start; }

 private:
  enum class State { line_start, mid, dot, dot_cr, done };
  State state_ = State::line_start;
};

// ---------------------------------------------------------------------------
// Latency histogram
// ---------------------------------------------------------------------------

// Microsecond samples in log-linear buckets: exact below 1024 us, then 128
// buckets per power of two (relative error under 0.8 %), up to ~ 2^40 us.
// Constant memory whatever the number of samples; exact count, sum, min, max.
class Histogram {
 public:
  void add(std::uint64_t micros);
  void merge(const Histogram& other);
  std::uint64_t count() const { return count_; }
  std::uint64_t min() const { return count_ ? min_ : 0; }
  std::uint64_t max() const { return max_; }
  double mean() const { return count_ ? static_cast<double>(sum_) / count_ : 0.0; }
  // Nearest-rank percentile (p in [0, 100]): the smallest recorded value v
  // such that at least p % of the samples are <= v, to bucket precision (the
  // bucket's upper bound, capped at max()). 0 when empty.
  std::uint64_t percentile(double p) const;

 private:
  static std::size_t bucket_of(std::uint64_t v);
  static std::uint64_t upper_of(std::size_t b);
  std::vector<std::uint64_t> buckets_;
  std::uint64_t count_ = 0;
  std::uint64_t sum_ = 0;
  std::uint64_t min_ = 0;
  std::uint64_t max_ = 0;
};

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

struct Report {
  std::string target;  // HOST:PORT
  Workload workload = Workload::stat;
  AuthKind auth = AuthKind::apop;
  bool tls = false;
  unsigned concurrency = 0;
  std::uint64_t sessions_ok = 0;
  std::uint64_t sessions_failed = 0;
  double elapsed_s = 0;              // first connect to last session's end
  std::uint64_t bytes_received = 0;  // every octet read from the server
  std::uint64_t bytes_sent = 0;
  std::uint64_t messages = 0;                        // RETR/TOP replies received in full
  std::uint64_t peak_in_flight = 0;                  // sessions connected at once, at most
  Histogram session;                                 // connect to QUIT reply (holds excluded)
  std::map<std::string, Histogram> commands;         // "connect", "auth", "STAT", ...
  std::map<std::string, std::uint64_t> errors;       // kind -> sessions
  std::map<std::string, std::string> error_samples;  // kind -> one message

  double sessions_per_s() const;
  double mb_per_s() const;  // MB = 10^6 octets
  std::string text() const;
  nlohmann::json json() const;
};

// ---------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------

struct Options {
  std::string host;
  std::uint16_t port = 110;
  std::vector<Account> accounts;
  std::uint64_t sessions = 1000;  // 0: until duration ends
  unsigned concurrency = 1;
  Workload workload = Workload::stat;
  AuthKind auth = AuthKind::apop;
  bool tls = false;                           // implicit TLS (pop3s)
  TlsOptions tls_options;                     // ca_file, insecure, server_name
  std::chrono::milliseconds duration{0};      // 0: no time bound
  std::chrono::milliseconds timeout{30'000};  // silence allowed per session
  std::uint64_t max_messages = 0;             // RETR/TOP per session, 0: all
  // After its script, before QUIT, each session stays logged in and idle for
  // this long, or until the run is stopped (duration, SIGINT, SIGTERM).
  std::chrono::milliseconds hold{0};
  // Called (on the run's thread) with progress lines, e.g. "holding N sessions".
  std::function<void(std::string_view)> progress;
};

// Runs the benchmark. Errc::invalid for unusable options (no accounts, zero
// concurrency, no bound); Errc::not_found when the host does not resolve;
// Errc::invalid for a TLS setup problem (unreadable CA file). Session failures
// are in the Report, not errors. SIGINT/SIGTERM stop the run early (sessions
// in flight finish, holds end) and the report covers what ran.
Result<Report> run(const Options& opts);

}  // namespace apop::client::bench
