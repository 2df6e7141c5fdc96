// `apop fetch pop3[s]://USER@HOST[:PORT] --to DEST`: a hardened mail fetcher
// (src/client/fetch.hpp does the work; this is options, secrets and output).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/fetch_accounts.hpp"
#include "cli/pop3_target.hpp"
#include "client/account_state.hpp"
#include "client/destination.hpp"
#include "client/fetch.hpp"
#include "client/transport.hpp"
#include "common/limits.hpp"

namespace apop::cli {
namespace {

constexpr const char* kFetchFooter = R"(Exit status:
  0  success (also when there was nothing new)
  1  internal or other error (state file, maildrop in use, ...)
  2  some messages could not be stored (they stay on the server)
  3  authentication failed, or no usable mechanism offered
  4  TLS failure (handshake, certificate, STLS required but unavailable)
  5  protocol error (malformed or overlong replies, lying sizes, a listing
     above --max-messages or --max-listing-bytes)
  6  network error (resolve, connect, timeout, connection cut)
  7  security refusal (invalid APOP challenge, downgrade, STLS injection,
     plaintext password without TLS)
  64 usage error
  78 bad configuration file (--config)
With --config FILE (many accounts; docs/fetch.md): 0 when every account's
poll succeeded, else the largest of the statuses above among the accounts;
with --daemon, 0 after SIGTERM or SIGINT (SIGHUP re-reads FILE).
The password (the OAuth2 access token for --auth xoauth2 or oauthbearer)
comes from --password-file, else $APOP_PASSWORD, else a prompt without echo
on the terminal; never from the command line. With --config, from each
account's password_file or password_command.)";

struct FetchArgs {
  FetchConfigArgs config;
  std::string url;
  std::string to;
  bool keep = false;
  std::string state;
  std::string deliver_to;          // lmtp:/smtp: envelope recipient
  std::string on_reject = "keep";  // lmtp:/smtp: a 5xx: keep | bounce
  ConnectionArgs conn;
};

class ProgressBar {
 public:
  void update(const client::FetchOptions::Progress& p) {
    if (p.total == 0) return;
    auto now = std::chrono::steady_clock::now();
    if (!started_) {
      start_ = now;
      started_ = true;
    }
    double secs = std::chrono::duration<double>(now - start_).count();
    double rate = secs > 0.05 ? static_cast<double>(p.bytes) / secs : 0;
    constexpr int kWidth = 28;
    int filled = static_cast<int>(kWidth * p.done / p.total);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(stderr, "\r[%s] %llu/%llu messages  %s/%s  %s/s   ", bar.c_str(),
                 static_cast<unsigned long long>(p.done), static_cast<unsigned long long>(p.total),
                 human_bytes(static_cast<double>(p.bytes)).c_str(),
                 human_bytes(static_cast<double>(p.total_bytes)).c_str(),
                 human_bytes(rate).c_str());
    std::fflush(stderr);
    drawn_ = true;
  }
  void finish() {
    if (drawn_) std::fputc('\n', stderr);
    drawn_ = false;
  }

 private:
  bool started_ = false;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
};

int usage(const std::string& m) {
  std::fprintf(stderr, "apop fetch: %s\n", m.c_str());
  return kExitUsage;
}

void print_json(const FetchArgs& a, const Target& target, std::uint16_t port,
                const client::Destination& dest, const client::FetchSummary& sum) {
  nlohmann::json j;
  j["status"] = static_cast<int>(sum.status);
  j["ok"] = sum.status == client::FetchStatus::ok;
  if (!sum.error.empty()) j["error"] = sum.error;
  j["server"] = {{"host", target.host}, {"port", port}, {"greeting", sum.greeting}};
  j["user"] = target.user;
  j["tls"] = sum.tls;
  if (sum.tls) j["tls_protocol"] = sum.tls_protocol;
  j["auth"] = sum.auth;
  j["offer"] = {{"tls", sum.offer.tls}, {"apop", sum.offer.apop}, {"scram", sum.offer.scram}};
  j["mode"] = a.keep ? "keep" : "delete";
  j["destination"] = dest.describe();
  j["messages"] = {{"on_server", sum.on_server},
                   {"new", sum.new_messages},
                   {"stored", sum.stored},
                   {"failed", sum.store_failed},
                   {"deleted", sum.deleted}};
  j["bytes"] = sum.bytes;
  j["seconds"] = sum.seconds;
  j["warnings"] = sum.warnings;
  std::printf("%s\n", j.dump(2).c_str());
}

void print_outcome(const FetchArgs& a, const client::FetchSummary& sum) {
  if (sum.status != client::FetchStatus::ok) {
    std::fprintf(stderr, "apop fetch: error: %s\n", sum.error.c_str());
  } else if (!a.conn.json && ::isatty(STDERR_FILENO) != 0) {
    std::fprintf(stderr, "apop fetch: %llu stored, %llu deleted, %s\n",
                 static_cast<unsigned long long>(sum.stored),
                 static_cast<unsigned long long>(sum.deleted),
                 human_bytes(static_cast<double>(sum.bytes)).c_str());
  }
}

int run_fetch(const FetchArgs& a) {
  if (a.url.empty()) return usage("url is required (pop3[s]://USER@HOST[:PORT])");
  if (a.to.empty()) return usage("--to is required");
  std::string why;
  auto target = parse_url(a.url, why);
  if (!target) return usage(why);
  auto endpoint = resolve_endpoint(*target, a.conn.tls, why);
  if (!endpoint) return usage(why);

  client::DestinationOptions dest_opts;
  dest_opts.deliver_to = a.deliver_to;
  dest_opts.on_reject = a.on_reject == "bounce" ? client::DestinationOptions::OnReject::bounce
                                                : client::DestinationOptions::OnReject::keep;
  auto dest = client::open_destination(a.to, dest_opts);
  if (!dest) {
    std::fprintf(stderr, "apop fetch: --to %s: %s\n", a.to.c_str(), dest.error().message.c_str());
    return dest.error().code == Errc::invalid ? kExitUsage : kExitError;
  }
  std::filesystem::path state_path =
      a.state.empty()
          ? client::AccountState::default_path(target->user, target->host, endpoint->port)
          : std::filesystem::path(a.state);
  auto state = client::AccountState::load(state_path);
  if (!state) {
    std::fprintf(stderr, "apop fetch: state file %s: %s\n", state_path.c_str(),
                 state.error().message.c_str());
    return kExitError;
  }
  auto password = read_login_password(a.conn.password_file);
  if (!password) return usage(password.error().message);

  client::FetchOptions opts = fetch_options(*target, *endpoint, a.conn, "fetch");
  opts.password = std::move(*password);
  opts.keep = a.keep;
  ProgressBar bar;
  const bool show_progress = ::isatty(STDERR_FILENO) != 0 && !a.conn.verbose;
  if (show_progress)
    opts.progress = [&bar](const client::FetchOptions::Progress& p) { bar.update(p); };

  const client::FetchSummary sum = connect_and_run(
      connect_options(*target, *endpoint, opts, a.conn), /*show_tls=*/a.conn.verbose,
      [&](client::Transport& t) { return client::run_session(t, **dest, *state, opts); });
  if (show_progress) bar.finish();
  if (a.conn.json) print_json(a, *target, endpoint->port, **dest, sum);
  print_outcome(a, sum);
  return static_cast<int>(sum.status);
}

}  // namespace

void register_fetch(CLI::App& app, Registry& registry) {
  auto a = std::make_shared<FetchArgs>();
  CLI::App* sub = app.add_subcommand(
      "fetch", "Download mail from a POP3 server (APOP-safe, TLS, keep or delete)");
  // url and --to are required for a fetch, but not for --config or a
  // subcommand (`apop fetch import-config ...`): checked when it runs.
  CLI::Option* url = sub->add_option(
      "url", a->url, "pop3://USER@HOST[:PORT] (port 110) or pop3s://USER@HOST[:PORT] (port 995)");
  CLI::Option* to = sub->add_option("--to", a->to,
                                    "Destination: maildir:DIR, mbox:FILE, mda:'COMMAND', "
                                    "lmtp:unix:PATH, lmtp:HOST:PORT or smtp:HOST[:PORT]");
  CLI::Option* deliver_to =
      sub->add_option("--deliver-to", a->deliver_to,
                      "lmtp:/smtp: the envelope recipient (RCPT TO) of every message");
  CLI::Option* on_reject =
      sub->add_option("--on-reject", a->on_reject,
                      "lmtp:/smtp: a message refused with 5xx stays on the server (keep) or is "
                      "bounced to its Return-Path (bounce)")
          ->check(CLI::IsMember({"keep", "bounce"}));
  CLI::Option* keep = sub->add_flag(
      "--keep", a->keep, "Leave mail on the server; fetch only messages not seen before (UIDL)");
  CLI::Option* state = sub->add_option(
      "--state", a->state, "Per-account state file (default under $XDG_STATE_HOME/apop/)");
  CLI::Option* config =
      sub->add_option("--config", a->config.file,
                      "Poll the accounts of this TOML file (instead of URL and --to): once, "
                      "or with --daemon each on its interval (docs/fetch.md)")
          ->check(CLI::ExistingFile);
  CLI::Option* daemon = sub->add_flag(
      "--daemon", a->config.daemon,
      "With --config: run in the foreground, polling every account on its poll_interval; "
      "SIGHUP re-reads the file, SIGTERM finishes the message in flight and exits");
  CLI::Option* metrics = sub->add_option(
      "--metrics-listen", a->config.metrics_listen,
      "With --config: IPv4 ADDR:PORT serving Prometheus metrics per account at /metrics");
  for (CLI::Option* o : {url, to, deliver_to, on_reject, keep, state}) o->excludes(config);
  daemon->needs(config);
  metrics->needs(config);
  add_connection_options(sub, a->conn);
  sub->footer(kFetchFooter);
  sub->require_subcommand(0, 1);
  // The subcommand first: the registry runs the first parsed entry, and
  // `fetch` counts as parsed when its subcommand is.
  register_fetch_import(sub, registry);
  registry.add(sub, [a, sub] {
    if (!a->config.file.empty()) {
      for (const char* per_account : {"--password-file", "--auth", "--tls", "--ca-file"}) {
        if (sub->get_option(per_account)->count() != 0)
          return usage(std::string(per_account) +
                       " does not apply to --config (each account has its own)");
      }
      if (a->conn.json) return usage("--json does not apply to --config");
      a->config.conn = a->conn;
      return run_fetch_config(a->config);
    }
    return run_fetch(*a);
  });
}

}  // namespace apop::cli
