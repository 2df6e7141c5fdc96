#include "cli/serve_config.hpp"

#include <sched.h>
#include <toml++/toml.h>

#include <algorithm>
#include <array>
#include <sstream>
#include <variant>

#include "pg/pool.hpp"

namespace apop::cli {

unsigned default_workers() {
  cpu_set_t set;
  CPU_ZERO(&set);
  int n = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
  if (n <= 0) n = 1;
  return static_cast<unsigned>(std::min(n, 256));
}

namespace {

using Field = std::variant<std::string ServeConfig::*, std::vector<std::string> ServeConfig::*,
                           bool ServeConfig::*, unsigned ServeConfig::*>;

struct Spec {
  const char* key;   // TOML key
  const char* flag;  // command-line flag (CLI11 name list)
  const char* help;
  Field field;
  bool negated = false;       // a bool flag that sets false (e.g. --no-secure-loopback)
  unsigned min = 0, max = 0;  // unsigned range (inclusive)
  bool file_must_exist = false;
  bool integer_ok = false;      // a string setting that the file may also give as an integer
  const char* alias = nullptr;  // an older TOML key accepted for this setting
};

const std::array kSpecs = {
    Spec{"data", "--data", "Data directory (default: $APOP_DATA or ./apop-data)",
         &ServeConfig::data},
    Spec{"mail_location", "--mail-location",
         "Where users' mail is: maildir:PATH (default maildir:%d/mail/%u) or mbox:PATH (e.g. "
         "mbox:/var/mail/%u); %u user, %d data directory; accounts may have their own",
         &ServeConfig::mail_location},
    Spec{"mbox_lock_timeout", "--mbox-lock-timeout",
         "Seconds a login or QUIT waits for an mbox's dotlock and fcntl lock ([IN-USE] after)",
         &ServeConfig::mbox_lock_timeout, false, 1, 600},
    Spec{"mbox_rewrite", "--mbox-rewrite",
         "How QUIT applies deletions to an mbox: auto (a new file renamed over it when it can get "
         "the mbox's owner, group and mode, else in place with a journal), rename or in-place",
         &ServeConfig::mbox_rewrite},
    Spec{"users", "--users",
         "Account store: a postgresql:// URL (shared by several servers; also the failed-login "
         "state and the maildrop locks), or empty for DATA/users.sqlite (default: $APOP_USERS)",
         &ServeConfig::users},
    Spec{"trusted_proxies", "--trusted-proxy",
         "ADDR[/PREFIX] of a load balancer that sends a PROXY protocol v1/v2 header (repeatable); "
         "its connections must start with one",
         &ServeConfig::trusted_proxies},
    Spec{"listen", "--listen",
         "ADDR:PORT to listen on, plain with STLS when TLS is configured (repeatable; port 0 = "
         "any free)",
         &ServeConfig::listen},
    Spec{"tls_listen", "--tls-listen",
         "ADDR:PORT to listen on with implicit TLS (repeatable; 995 by convention)",
         &ServeConfig::tls_listen},
    Spec{"tls_cert", "--tls-cert", "PEM certificate chain (reloaded on SIGHUP)",
         &ServeConfig::tls_cert, false, 0, 0, true},
    Spec{"tls_key", "--tls-key", "PEM private key (reloaded on SIGHUP)", &ServeConfig::tls_key,
         false, 0, 0, true},
    Spec{"hostname", "--hostname", "Host name in APOP timestamps (default: system)",
         &ServeConfig::hostname},
    Spec{"allow_plaintext_auth", "--allow-plaintext-auth",
         "Allow USER/PASS, PLAIN and LOGIN on non-secure connections",
         &ServeConfig::allow_plaintext_auth},
    Spec{"secure_loopback", "--no-secure-loopback",
         "Do not treat loopback connections as secure (file: secure_loopback = false)",
         &ServeConfig::secure_loopback, true},
    // Issue 17 item 6: the policy covers both MD5 challenge-responses over
    // the plaintext-equivalent secret; its old name stays as an alias.
    Spec{"md5_challenge_requires_tls", "--md5-challenge-requires-tls,--apop-requires-tls",
         "Refuse APOP and CRAM-MD5 before TLS (implicit TLS or after STLS), for every account; "
         "CRAM-MD5 is not listed before TLS (--apop-requires-tls, file apop_requires_tls: "
         "older names)",
         &ServeConfig::md5_challenge_requires_tls, false, 0, 0, false, false, "apop_requires_tls"},
    Spec{"max_auth_failures", "--max-auth-failures", "Failed logins before a connection is closed",
         &ServeConfig::max_auth_failures, false, 1, 100},
    Spec{"max_bad_commands", "--max-bad-commands", "Bad commands before a connection is closed",
         &ServeConfig::max_bad_commands, false, 1, 1000},
    Spec{"auth_threads", "--auth-threads",
         "Threads that run logins and QUIT's UPDATE off the event loop", &ServeConfig::auth_threads,
         false, 1, 64},
    Spec{"workers", "--workers",
         "Network worker processes (TLS, POP3, maildrops) beside one auth process that alone "
         "holds secret.key and the accounts (default: one per core); 0: one process",
         &ServeConfig::workers, false, 0, 256},
    Spec{"sandbox", "--no-sandbox",
         "Run the network workers without their seccomp sandbox and Landlock file restriction "
         "(file: sandbox = false; not recommended)",
         &ServeConfig::sandbox, true},
    Spec{"reuse_port", "--reuse-port",
         "Give each worker a listening socket of its own (SO_REUSEPORT: the kernel spreads "
         "connections by address hash) instead of one socket all workers accept from",
         &ServeConfig::reuse_port},
    Spec{"login_timeout", "--login-timeout", "Seconds of inactivity allowed before login",
         &ServeConfig::login_timeout, false, 1, 3600},
    Spec{"idle_timeout", "--idle-timeout",
         "Seconds of inactivity allowed after login (RFC 1939: at least 600)",
         &ServeConfig::idle_timeout, false,
         static_cast<unsigned>(limits::kMinIdleTimeoutTransaction.count()), 86400},
    Spec{"auth_failure_delay_ms", "--auth-failure-delay-ms",
         "Delay before a failed login's reply, doubling per recent failure (0: none)",
         &ServeConfig::auth_failure_delay_ms, false, 0, 60'000},
    Spec{"auth_failure_delay_max_ms", "--auth-failure-delay-max-ms",
         "Cap of the failed-login delay, in milliseconds", &ServeConfig::auth_failure_delay_max_ms,
         false, 0, 300'000},
    Spec{"block_after_failures", "--block-after-failures",
         "Failed logins from one address within block_window that block it (0: never)",
         &ServeConfig::block_after_failures, false, 0, 100'000},
    Spec{"block_window", "--block-window", "Seconds over which failed logins are counted",
         &ServeConfig::block_window, false, 1, 86'400},
    Spec{"block_duration", "--block-duration", "Seconds an address stays blocked",
         &ServeConfig::block_duration, false, 1, 604'800},
    Spec{"max_connections", "--max-connections", "Concurrent connections in total (0: no limit)",
         &ServeConfig::max_connections, false, 0, 1'000'000},
    Spec{"max_connections_per_address", "--max-connections-per-address",
         "Concurrent connections from one client address (0: no limit)",
         &ServeConfig::max_connections_per_address, false, 0, 1'000'000},
    Spec{"ipv6_prefix_length", "--ipv6-prefix-length",
         "IPv6 clients are counted by this prefix of their address for the per-address "
         "connection cap, failed logins and blocks (128: per address; IPv4: per address)",
         &ServeConfig::ipv6_prefix_length, false, limits::kMinIpv6PrefixLength, 128},
    Spec{"max_sessions_per_user", "--max-sessions-per-user",
         "Concurrent logged-in sessions per user (0: no limit)",
         &ServeConfig::max_sessions_per_user, false, 0, 10'000},
    Spec{"login_deadline", "--login-deadline",
         "Seconds after connecting by which a client must be logged in, whatever it sends",
         &ServeConfig::login_deadline, false, 1, 86'400},
    Spec{"login_delay", "--login-delay",
         "RFC 2449 LOGIN-DELAY: minimum seconds between two logins of a user (0: none; "
         "accounts may override it)",
         &ServeConfig::login_delay, false, 0, limits::kMaxLoginDelay},
    Spec{"expire", "--expire",
         "RFC 2449 EXPIRE: days a message is kept, deleted at QUIT when older; 0: retrieved "
         "messages are deleted at QUIT; never (default) (accounts may override it)",
         &ServeConfig::expire, false, 0, 0, false, true},
    Spec{"implementation", "--no-implementation",
         "Omit the IMPLEMENTATION capability (file: implementation = false)",
         &ServeConfig::implementation, true},
    Spec{"verbose", "-v,--verbose", "Debug logging", &ServeConfig::verbose},
    Spec{"log", "--log",
         "Where the log goes: stderr (default), syslog (facility mail) or file:/PATH (follows "
         "logrotate)",
         &ServeConfig::log},
    Spec{"log_level", "--log-level",
         "trace, debug, info (default), warning, error, critical or off (--verbose: debug)",
         &ServeConfig::log_level},
    Spec{"metrics_listen", "--metrics-listen",
         "IPv4 ADDR:PORT serving Prometheus metrics at /metrics (port 0 = any free; default: off)",
         &ServeConfig::metrics_listen},
    Spec{"user", "--user",
         "Started as root: bind, then run as this user for good (data directory owned by it)",
         &ServeConfig::user},
    Spec{"group", "--group", "With --user: run as this group (default: the user's primary group)",
         &ServeConfig::group},
    Spec{"auth_user", "--auth-user",
         "With --workers and --user, started as root: run the auth process as this user, the only "
         "one that can read secret.key and the account database",
         &ServeConfig::auth_user},
    Spec{"allow_core_dumps", "--allow-core-dumps",
         "Debugging only: let the server dump core (by default it is not dumpable and its core "
         "size limit is 0: a core file would hold secrets)",
         &ServeConfig::allow_core_dumps},
    Spec{"lmtp_listen", "--lmtp-listen",
         "unix:PATH or ADDR:PORT to accept LMTP deliveries on (RFC 2033; repeatable; port 0 = "
         "any free)",
         &ServeConfig::lmtp_listen},
    Spec{"lmtp_socket_mode", "--lmtp-socket-mode",
         "Mode of the LMTP Unix sockets, octal (default 0660)", &ServeConfig::lmtp_socket_mode},
    Spec{"lmtp_socket_owner", "--lmtp-socket-owner",
         "Owner of the LMTP Unix sockets (e.g. postfix; default: the server's user at start)",
         &ServeConfig::lmtp_socket_owner},
    Spec{"lmtp_socket_group", "--lmtp-socket-group",
         "Group of the LMTP Unix sockets (e.g. postfix; default: the server's)",
         &ServeConfig::lmtp_socket_group},
    Spec{"lmtp_max_recipients", "--lmtp-max-recipients",
         "Recipients accepted per LMTP transaction (more get 452 4.5.3)",
         &ServeConfig::lmtp_max_recipients, false, 1, 10'000},
    Spec{"lmtp_threads", "--lmtp-threads",
         "LMTP deliveries at once (threads; each waits on its own fsyncs)",
         &ServeConfig::lmtp_threads, false, 1, 64},
    Spec{"lmtp_max_message_size", "--lmtp-max-message-size",
         "Largest message LMTP accepts, in bytes (advertised as SIZE; bigger: 552 5.3.4)",
         &ServeConfig::lmtp_max_message_size, false, 1024, 1'073'741'824},
    // Issue 21: one setting for LMTP and `apop deliver` (Dovecot's
    // quota_full_tempfail); the LMTP-only name stays as an alias.
    Spec{"quota_full_tempfail", "--quota-full-tempfail,--lmtp-over-quota-temporary",
         "Over quota is temporary: LMTP answers 452 4.2.2 instead of 552 5.2.2, apop deliver "
         "exits 75 (EX_TEMPFAIL) instead of 77 (EX_NOPERM); the MTA retries instead of bouncing",
         &ServeConfig::quota_full_tempfail, false, 0, 0, false, false, "lmtp_over_quota_temporary"},
    Spec{"quota_bytes", "--quota-bytes",
         "Default mailbox quota in bytes for accounts without their own (1G, 500M, 64K; 0: "
         "unlimited); enforced by LMTP and apop deliver",
         &ServeConfig::quota_bytes, false, 0, 0, false, true},
    Spec{"quota_messages", "--quota-messages",
         "Default mailbox quota in messages for accounts without their own (0: unlimited)",
         &ServeConfig::quota_messages, false, 0, 1'000'000'000},
};

std::string where(const std::string& file, const toml::source_region& src, std::string_view key) {
  return file + ":" + std::to_string(src.begin.line) + ":" + std::to_string(src.begin.column) +
         ": key " + std::string(key) + ": ";
}

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

}  // namespace

void ServeOptions::add_to(CLI::App* sub, std::shared_ptr<ServeConfig> target) {
  cli_ = std::move(target);
  ServeConfig& c = *cli_;
  for (std::size_t i = 0; i < kSpecs.size(); ++i) {
    const Spec& s = kSpecs[i];
    CLI::Option* opt = std::visit(
        [&](auto member) -> CLI::Option* {
          using T = std::remove_reference_t<decltype(c.*member)>;
          if constexpr (std::is_same_v<T, bool>) {
            if (s.negated) {
              return sub->add_flag_callback(
                  s.flag, [&c, member] { c.*member = false; }, s.help);
            }
            return sub->add_flag(s.flag, c.*member, s.help);
          } else {
            CLI::Option* o = sub->add_option(s.flag, c.*member, s.help);
            if constexpr (std::is_same_v<T, unsigned>) o->check(CLI::Range(s.min, s.max));
            if (s.file_must_exist) o->check(CLI::ExistingFile);
            return o;
          }
        },
        s.field);
    given_.emplace_back(i, opt);
  }
}

void ServeOptions::apply_command_line(ServeConfig& cfg) const {
  for (const auto& [i, opt] : given_) {
    if (opt->count() == 0) continue;
    std::visit([&](auto member) { cfg.*member = (*cli_).*member; }, kSpecs[i].field);
  }
}

Result<void> ServeOptions::load_file(const std::string& file, ServeConfig& cfg) {
  toml::table tbl;
  try {
    tbl = toml::parse_file(file);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    return make_error(Errc::invalid, file + ":" + std::to_string(b.line) + ":" +
                                         std::to_string(b.column) + ": " +
                                         std::string(e.description()));
  }
  std::vector<const Spec*> seen;
  // Not a structured binding: clang 14 cannot capture one in the lambda below.
  for (const auto& entry : tbl) {
    const auto& k = entry.first;
    const auto& node = entry.second;
    const std::string_view key = k.str();
    const Spec* spec = nullptr;
    for (const auto& s : kSpecs) {
      if (key == s.key || (s.alias != nullptr && key == s.alias)) spec = &s;
    }
    if (spec == nullptr) {
      return make_error(Errc::invalid, where(file, k.source(), key) + "unknown key");
    }
    // TOML itself refuses a repeated key: a second hit is a key and its alias.
    if (spec->alias != nullptr && std::find(seen.begin(), seen.end(), spec) != seen.end()) {
      return make_error(Errc::invalid, where(file, k.source(), key) + "given twice (" +
                                           spec->alias + " is the older name of " + spec->key +
                                           ")");
    }
    seen.push_back(spec);
    const std::string at = where(file, node.source(), key);
    Result<void> r = std::visit(
        [&](auto member) -> Result<void> {
          using T = std::remove_reference_t<decltype(cfg.*member)>;
          if constexpr (std::is_same_v<T, bool>) {
            auto v = node.template value_exact<bool>();
            if (!v) return make_error(Errc::invalid, at + "expected true or false");
            cfg.*member = *v;
          } else if constexpr (std::is_same_v<T, unsigned>) {
            auto v = node.template value_exact<std::int64_t>();
            if (!v) return make_error(Errc::invalid, at + "expected an integer");
            if (*v < spec->min || *v > spec->max) {
              return make_error(Errc::invalid, at + "must be between " + std::to_string(spec->min) +
                                                   " and " + std::to_string(spec->max));
            }
            cfg.*member = static_cast<unsigned>(*v);
          } else if constexpr (std::is_same_v<T, std::string>) {
            auto v = node.template value_exact<std::string>();
            if (!v && spec->integer_ok) {
              if (auto i = node.template value_exact<std::int64_t>()) v = std::to_string(*i);
            }
            if (!v) {
              return make_error(Errc::invalid,
                                at + (spec->integer_ok ? "expected a string or an integer"
                                                       : "expected a string"));
            }
            cfg.*member = *v;
          } else {
            const toml::array* arr = node.as_array();
            if (arr == nullptr)
              return make_error(Errc::invalid, at + "expected an array of strings");
            T out;
            for (const auto& item : *arr) {
              auto v = item.template value_exact<std::string>();
              if (!v) {
                return make_error(Errc::invalid,
                                  where(file, item.source(), key) + "expected a string");
              }
              out.push_back(*v);
            }
            cfg.*member = std::move(out);
          }
          return {};
        },
        spec->field);
    if (!r) return r;
  }
  return {};
}

bool ServeOptions::reloadable(std::string_view key) {
  // Settings read when a session starts (or a timer is armed), and the TLS
  // files (the certificate is loaded again anyway on SIGHUP).
  static constexpr std::array<std::string_view, 13> kReloadable = {"tls_cert",
                                                                   "tls_key",
                                                                   "allow_plaintext_auth",
                                                                   "secure_loopback",
                                                                   "md5_challenge_requires_tls",
                                                                   "max_auth_failures",
                                                                   "max_bad_commands",
                                                                   "login_timeout",
                                                                   "idle_timeout",
                                                                   "implementation",
                                                                   "verbose",
                                                                   "login_delay",
                                                                   "expire"};
  return std::find(kReloadable.begin(), kReloadable.end(), key) != kReloadable.end();
}

ServeConfig ServeOptions::merge_reload(const ServeConfig& running, const ServeConfig& fresh,
                                       std::vector<std::string>& applied,
                                       std::vector<std::string>& restart) {
  ServeConfig out = running;
  for (const auto& s : kSpecs) {
    std::visit(
        [&](auto member) {
          if (running.*member == fresh.*member) return;
          if (reloadable(s.key)) {
            out.*member = fresh.*member;
            applied.emplace_back(s.key);
          } else {
            restart.emplace_back(s.key);
          }
        },
        s.field);
  }
  return out;
}

std::string ServeOptions::dump(const ServeConfig& cfg) {
  std::ostringstream out;
  for (const auto& s : kSpecs) {
    out << s.key << " = ";
    std::visit(
        [&](auto member) {
          const auto& v = cfg.*member;
          using T = std::remove_cvref_t<decltype(v)>;
          if constexpr (std::is_same_v<T, bool>) {
            out << (v ? "true" : "false");
          } else if constexpr (std::is_same_v<T, unsigned>) {
            out << v;
          } else if constexpr (std::is_same_v<T, std::string>) {
            out << quote(s.field == Field(&ServeConfig::users) ? pg::redact(v) : v);
          } else {
            out << "[";
            for (std::size_t i = 0; i < v.size(); ++i) out << (i ? ", " : "") << quote(v[i]);
            out << "]";
          }
        },
        s.field);
    out << "\n";
  }
  return out.str();
}

Result<store::QuotaLimits> default_quota(const ServeConfig& cfg) {
  auto bytes = store::parse_quota_size(cfg.quota_bytes);
  if (!bytes) return make_error(Errc::invalid, "quota_bytes: " + bytes.error().message);
  return store::QuotaLimits{*bytes, cfg.quota_messages};
}

store::QuotaLimits effective_quota(const auth::AccountQuota& own,
                                   const store::QuotaLimits& defaults) {
  return store::QuotaLimits{own.bytes.value_or(defaults.bytes),
                            own.messages.value_or(defaults.messages)};
}

}  // namespace apop::cli
