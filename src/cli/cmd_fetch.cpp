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
The password comes from --password-file, else $APOP_PASSWORD, else a prompt
without echo on the terminal; never from the command line.)";

struct FetchArgs {
  std::string url;
  std::string password_file;
  std::string auth = "auto";
  std::string tls;
  std::string ca_file;
  bool insecure = false;
  bool allow_plaintext = false;
  std::string to;
  bool keep = false;
  std::string state;
  bool accept_downgrade = false;
  int timeout = 60;
  bool json = false;
  bool verbose = false;
  std::uint64_t max_messages = limits::kMaxFetchListing;
  std::uint64_t max_listing_bytes = limits::kMaxListingBytes;
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

int run_fetch(const FetchArgs& a) {
  auto usage = [](const std::string& m) {
    std::fprintf(stderr, "apop fetch: %s\n", m.c_str());
    return kExitUsage;
  };
  std::string why;
  auto target = parse_url(a.url, why);
  if (!target) return usage(why);

  auto endpoint = resolve_endpoint(*target, a.tls, why);
  if (!endpoint) return usage(why);
  const client::TlsMode mode = endpoint->mode;
  auto mech = client::parse_auth_mech(a.auth);
  if (!mech)
    return usage("--auth must be auto, apop, scram-sha-256, cram-md5, plain, login or user");
  if (a.timeout <= 0 || a.timeout > 86400) return usage("--timeout must be 1..86400 seconds");
  const std::uint16_t port = endpoint->port;

  auto dest = client::open_destination(a.to);
  if (!dest) {
    std::fprintf(stderr, "apop fetch: --to %s: %s\n", a.to.c_str(), dest.error().message.c_str());
    return dest.error().code == Errc::invalid ? kExitUsage : kExitError;
  }
  std::filesystem::path state_path =
      a.state.empty() ? client::AccountState::default_path(target->user, target->host, port)
                      : std::filesystem::path(a.state);
  auto state = client::AccountState::load(state_path);
  if (!state) {
    std::fprintf(stderr, "apop fetch: state file %s: %s\n", state_path.c_str(),
                 state.error().message.c_str());
    return kExitError;
  }
  auto password = read_password(a.password_file);
  if (!password) return usage(password.error().message);
  if (password->find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
    return usage("the password contains a line break or NUL");
  }

  client::FetchOptions opts;
  opts.user = target->user;
  opts.password = std::move(*password);
  opts.auth = *mech;
  opts.tls_mode = mode;
  opts.tls.server_name = target->host;
  opts.tls.ca_file = a.ca_file;
  opts.tls.insecure = a.insecure;
  opts.allow_plaintext = a.allow_plaintext;
  opts.keep = a.keep;
  opts.accept_downgrade = a.accept_downgrade;
  opts.listing.max_messages = a.max_messages;
  opts.listing.max_bytes = a.max_listing_bytes;
  if (a.verbose) {
    opts.trace = [](std::string_view l) {
      std::fprintf(stderr, "%.*s\n", static_cast<int>(l.size()), l.data());
    };
  }
  opts.warn = [](std::string_view w) {
    std::fprintf(stderr, "apop fetch: warning: %.*s\n", static_cast<int>(w.size()), w.data());
  };
  ProgressBar bar;
  const bool show_progress = ::isatty(STDERR_FILENO) != 0 && !a.verbose;
  if (show_progress)
    opts.progress = [&bar](const client::FetchOptions::Progress& p) { bar.update(p); };

  client::ConnectOptions co;
  co.host = target->host;
  co.port = port;
  co.implicit_tls = mode == client::TlsMode::implicit;
  co.tls = opts.tls;
  co.timeout = std::chrono::seconds(a.timeout);

  client::FetchSummary sum;
  client::NetFailure nf = client::NetFailure::none;
  auto t = client::connect(co, &nf);
  if (!t) {
    sum.status = client::status_for(nf);
    sum.error = t.error().message;
  } else {
    if (a.verbose && (*t)->tls().active) {
      std::fprintf(stderr, "-- TLS %s %s\n", (*t)->tls().protocol.c_str(),
                   (*t)->tls().cipher.c_str());
    }
    sum = client::run_session(**t, **dest, *state, opts);
  }
  if (show_progress) bar.finish();
  int code = static_cast<int>(sum.status);

  if (a.json) {
    nlohmann::json j;
    j["status"] = code;
    j["ok"] = sum.status == client::FetchStatus::ok;
    if (!sum.error.empty()) j["error"] = sum.error;
    j["server"] = {{"host", target->host}, {"port", port}, {"greeting", sum.greeting}};
    j["user"] = target->user;
    j["tls"] = sum.tls;
    if (sum.tls) j["tls_protocol"] = sum.tls_protocol;
    j["auth"] = sum.auth;
    j["offer"] = {{"tls", sum.offer.tls}, {"apop", sum.offer.apop}, {"scram", sum.offer.scram}};
    j["mode"] = a.keep ? "keep" : "delete";
    j["destination"] = (*dest)->describe();
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
  if (sum.status != client::FetchStatus::ok) {
    std::fprintf(stderr, "apop fetch: error: %s\n", sum.error.c_str());
  } else if (!a.json && ::isatty(STDERR_FILENO) != 0) {
    std::fprintf(stderr, "apop fetch: %llu stored, %llu deleted, %s\n",
                 static_cast<unsigned long long>(sum.stored),
                 static_cast<unsigned long long>(sum.deleted),
                 human_bytes(static_cast<double>(sum.bytes)).c_str());
  }
  return code;
}

}  // namespace

void register_fetch(CLI::App& app, Registry& registry) {
  auto a = std::make_shared<FetchArgs>();
  CLI::App* sub = app.add_subcommand(
      "fetch", "Download mail from a POP3 server (APOP-safe, TLS, keep or delete)");
  sub->add_option("url", a->url,
                  "pop3://USER@HOST[:PORT] (port 110) or pop3s://USER@HOST[:PORT] (port 995)")
      ->required();
  sub->add_option("--to", a->to, "Destination: maildir:DIR, mbox:FILE or mda:'COMMAND'")
      ->required();
  sub->add_option("--password-file", a->password_file,
                  "Read the password from the first line of this file");
  sub->add_option("--auth", a->auth,
                  "auto|apop|scram-sha-256|cram-md5|plain|login|user (default auto)");
  sub->add_option("--tls", a->tls,
                  "implicit|starttls|auto|none (default: auto, implicit for pop3s://)");
  sub->add_option("--ca-file", a->ca_file, "Verify the server certificate against these CAs (PEM)");
  sub->add_flag("--insecure", a->insecure, "Do not verify the server certificate (dangerous)");
  sub->add_flag("--allow-plaintext", a->allow_plaintext, "Allow sending the password without TLS");
  sub->add_flag("--keep", a->keep,
                "Leave mail on the server; fetch only messages not seen before (UIDL)");
  sub->add_option("--state", a->state,
                  "Per-account state file (default under $XDG_STATE_HOME/apop/)");
  sub->add_flag("--accept-downgrade", a->accept_downgrade,
                "Continue when the server offers less (TLS, APOP, SCRAM) than last time");
  sub->add_option("--timeout", a->timeout, "Network timeout per operation in seconds (default 60)");
  sub->add_option("--max-messages", a->max_messages,
                  "Refuse a maildrop announcing more messages than this (default 1000000; "
                  "exit 5)")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{100'000'000}));
  sub->add_option("--max-listing-bytes", a->max_listing_bytes,
                  "Refuse a UIDL listing with more octets of unique-ids than this (default "
                  "67108864; exit 5)")
      ->check(CLI::Range(std::uint64_t{1024}, std::uint64_t{1} << 40));
  sub->add_flag("--json", a->json, "Print a JSON summary on standard output");
  sub->add_flag("-v,--verbose", a->verbose, "Protocol trace on standard error (secrets hidden)");
  sub->footer(kFetchFooter);
  registry.add(sub, [a] { return run_fetch(*a); });
}

}  // namespace apop::cli
