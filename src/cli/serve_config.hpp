// The configuration of `apop serve`: every setting is declared once in a
// table (serve_config.cpp) that feeds the command line (CLI11), the TOML file
// (--config, toml++) and the effective-configuration dump (`apop config
// check`). Precedence: built-in defaults < the file < command-line flags.
//
// To add a setting: a field here, one row in kSpecs (serve_config.cpp), a
// line in docs/configuration.md and contrib/apop.toml.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "auth/credential_store.hpp"
#include "common/limits.hpp"
#include "common/result.hpp"
#include "store/quota.hpp"

namespace apop::cli {

// The CPUs this process may run on (sched_getaffinity: a container's or
// systemd's CPU set counts, not the machine's), between 1 and 256: the
// default number of network workers.
unsigned default_workers();

struct ServeConfig {
  // The --config file this configuration was read from (not a key): a
  // worker may re-read it on SIGHUP (net/landlock.hpp).
  std::string config_path;
  std::string data;  // empty: $APOP_DATA or ./apop-data
  // Where users' mail is, unless an account has its own (`apop user mailbox`):
  // maildir:PATH or mbox:PATH with %u (user), %d (data directory), %%
  // (store/mail_location.hpp).
  std::string mail_location = "maildir:%d/mail/%u";
  // Seconds a login or QUIT waits for an mbox's dotlock and fcntl lock.
  unsigned mbox_lock_timeout =
      static_cast<unsigned>(limits::kMboxSessionLockTimeout.count() / 1000);
  // How QUIT applies mbox deletions: auto, rename or in-place
  // (store::MboxRewrite).
  std::string mbox_rewrite = "auto";
  // The account store: empty = $APOP_USERS, else DATA/users.sqlite; a
  // postgresql:// (or postgres://) URL = PostgreSQL, shared by several
  // servers (docs/scaling.md).
  std::string users;
  // Load balancers whose PROXY protocol header is believed: ADDR[/PREFIX].
  std::vector<std::string> trusted_proxies;
  std::vector<std::string> listen;
  std::vector<std::string> tls_listen;
  std::string tls_cert;
  std::string tls_key;
  std::string hostname;
  bool allow_plaintext_auth = false;
  bool secure_loopback = true;
  // APOP and CRAM-MD5 only inside TLS (key md5_challenge_requires_tls, older
  // name apop_requires_tls).
  bool md5_challenge_requires_tls = false;
  unsigned max_auth_failures = limits::kMaxAuthFailures;
  unsigned max_bad_commands = limits::kMaxBadCommands;
  unsigned auth_threads = 2;
  // Network worker processes beside one auth process (docs/architecture.md,
  // "Processes"); 0: everything in one process. Default: one per core the
  // process may run on.
  unsigned workers = default_workers();
  // With workers, started as root with user: the auth process runs as this
  // user (its primary group), the only one that can read secret.key and the
  // account database (cli/serve_split.hpp).
  std::string auth_user;
  // The workers' seccomp sandbox (net/sandbox.hpp); --no-sandbox turns it
  // off, with a warning.
  bool sandbox = true;
  // Workers: a listening socket each (SO_REUSEPORT), or one shared (the
  // default: it balances better, docs/performance.md).
  bool reuse_port = false;
  unsigned login_timeout = static_cast<unsigned>(limits::kIdleTimeoutAuthorization.count());
  unsigned idle_timeout = static_cast<unsigned>(limits::kIdleTimeoutTransaction.count());
  // Failed-login defence (auth/throttle.hpp) and connection limits.
  unsigned auth_failure_delay_ms = static_cast<unsigned>(limits::kAuthFailureDelay.count());
  unsigned auth_failure_delay_max_ms = static_cast<unsigned>(limits::kAuthFailureDelayMax.count());
  unsigned block_after_failures = limits::kBlockAfterFailures;
  unsigned block_window = static_cast<unsigned>(limits::kBlockWindow.count());
  unsigned block_duration = static_cast<unsigned>(limits::kBlockDuration.count());
  unsigned max_connections = limits::kMaxConnections;
  unsigned max_connections_per_address = limits::kMaxConnectionsPerAddress;
  // IPv6 clients are counted (connection cap, failed logins, blocks) by this prefix.
  unsigned ipv6_prefix_length = limits::kIpv6PrefixLength;
  unsigned max_sessions_per_user = limits::kMaxSessionsPerUser;
  unsigned login_deadline = static_cast<unsigned>(limits::kLoginDeadline.count());
  // RFC 2449 LOGIN-DELAY (seconds, 0: none) and EXPIRE ("never" or a number
  // of days): the server-wide defaults; an account may have its own (`apop
  // user policy --login-delay/--expire`). `expire` is a string so that the
  // file can say 30 or "never"; server_options() validates it.
  unsigned login_delay = 0;
  std::string expire = "never";
  bool implementation = true;
  bool verbose = false;
  std::string log = "stderr";      // stderr | syslog | file:/PATH (cli/logging.hpp)
  std::string log_level = "info";  // spdlog level name; verbose forces debug
  std::string metrics_listen;      // ADDR:PORT for /metrics; empty: no metrics endpoint
  std::string user;                // started as root: drop to this user after binding
  std::string group;               // ... and this group (default: the user's primary group)
  bool allow_core_dumps = false;   // debugging: keep the process dumpable and RLIMIT_CORE as is
  // LMTP delivery (RFC 2033, net/lmtp_server.hpp): "unix:PATH" or
  // "ADDR:PORT" listeners, a Unix socket's mode (octal text) and group, the
  // recipients per transaction and the largest message (SIZE). One-process
  // server (workers = 0) only, for now.
  std::vector<std::string> lmtp_listen;
  std::string lmtp_socket_mode = "0660";
  std::string lmtp_socket_owner;
  std::string lmtp_socket_group;
  unsigned lmtp_max_recipients = limits::kLmtpMaxRecipients;
  // Deliveries at once (threads of the LMTP server): each waits on its
  // fsyncs, so a few in parallel keep the disk's queue full; Postfix sends
  // on up to 20 connections (default_destination_concurrency_limit).
  unsigned lmtp_threads = 4;
  unsigned lmtp_max_message_size = static_cast<unsigned>(limits::kLmtpMaxMessageSize);
  // Quotas (store/quota.hpp): the default limits of accounts without their
  // own (quota_bytes: a size, "1G"; 0: unlimited), and whether over quota is
  // temporary (LMTP 452 4.2.2 and deliver exit 75, instead of 552 5.2.2 and
  // exit 77). quota_full_tempfail's older name: lmtp_over_quota_temporary.
  std::string quota_bytes = "0";
  unsigned quota_messages = 0;
  bool quota_full_tempfail = false;
  // The hidden, experimental `serve --sandbox` (cli/serve_sandbox.hpp): not
  // a configuration key, command line only.
  bool experimental_sandbox = false;
};

// Registers every setting on `sub` as a flag/option writing into `*target`.
// Remembers the options so that apply_command_line() knows which were given.
class ServeOptions {
 public:
  void add_to(CLI::App* sub, std::shared_ptr<ServeConfig> target);
  // Reads `file` (TOML) into `cfg`. Errc::invalid with "FILE:LINE:COL: key
  // KEY: problem" for syntax errors, unknown keys and bad values.
  static Result<void> load_file(const std::string& file, ServeConfig& cfg);
  // Copies into `cfg` the settings that were given on the command line.
  void apply_command_line(ServeConfig& cfg) const;
  // The effective configuration as TOML (every key, commented defaults not
  // needed: every value is printed).
  static std::string dump(const ServeConfig& cfg);
  // SIGHUP: the configuration to run with after re-reading the file:
  // `running` with the settings of `fresh` that apply to new sessions
  // without a restart (see reloadable()); the keys that differ are appended
  // to `applied`, or to `restart` when they keep their running value.
  static ServeConfig merge_reload(const ServeConfig& running, const ServeConfig& fresh,
                                  std::vector<std::string>& applied,
                                  std::vector<std::string>& restart);
  // Whether a change of `key` takes effect on SIGHUP (timeouts, limits,
  // authentication switches, TLS files, verbose); listeners, data, hostname,
  // auth_threads, user and group, and any key not listed, need a restart.
  static bool reloadable(std::string_view key);

 private:
  std::shared_ptr<ServeConfig> cli_;
  std::vector<std::pair<std::size_t, CLI::Option*>> given_;  // spec index, option
};

// The default quota (quota_bytes, quota_messages). Errc::invalid for a
// quota_bytes that is not a size.
Result<store::QuotaLimits> default_quota(const ServeConfig& cfg);

// An account's effective limits: its own where set, else the default.
store::QuotaLimits effective_quota(const auth::AccountQuota& own,
                                   const store::QuotaLimits& defaults);

}  // namespace apop::cli
