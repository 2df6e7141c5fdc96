#include "cli/fetch_accounts.hpp"

#include <fcntl.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <signal.h>
#include <sys/file.h>
#include <time.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "cli/common.hpp"
#include "cli/pop3_target.hpp"
#include "client/account_state.hpp"
#include "client/destination.hpp"
#include "client/fetch.hpp"
#include "client/handoff.hpp"
#include "client/password_source.hpp"
#include "client/poll_scheduler.hpp"
#include "client/publish_journal.hpp"
#include "common/limits.hpp"
#include "common/posix_fd.hpp"
#include "common/wipe.hpp"

namespace apop::cli {
namespace {

using client::AccountConfig;
using client::FetchConfig;
using client::FetchStatus;
using client::FetchSummary;

std::string expand_home(const std::string& s) {
  if (s.starts_with("~/")) {
    const char* home = std::getenv("HOME");
    if (home != nullptr && *home != '\0') return std::string(home) + s.substr(1);
  }
  return s;
}

const char* status_name(FetchStatus s) {
  switch (s) {
    case FetchStatus::ok:
      return "ok";
    case FetchStatus::error:
      return "error";
    case FetchStatus::store_failed:
      return "store_failed";
    case FetchStatus::auth_failed:
      return "auth_failed";
    case FetchStatus::tls_failed:
      return "tls_failed";
    case FetchStatus::protocol:
      return "protocol";
    case FetchStatus::network:
      return "network";
    case FetchStatus::security:
      return "security";
  }
  return "error";
}

// A value in a key=value log line: quoted, '"' and '\' escaped, control
// characters dropped.
std::string log_value(std::string_view v) {
  std::string out = "\"";
  for (char c : v) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) continue;
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

std::mutex g_log_mutex;

void log_line(const std::string& line) {
  std::lock_guard lock(g_log_mutex);
  std::fprintf(stderr, "apop fetch: %s\n", line.c_str());
  std::fflush(stderr);
}

// The one line per poll per account.
void log_poll(const std::string& name, const FetchSummary& s) {
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.2f", s.seconds);
  std::string l = "account=" + name + " result=" + status_name(s.status) +
                  " status=" + std::to_string(static_cast<int>(s.status)) +
                  " messages=" + std::to_string(s.stored) + " bytes=" + std::to_string(s.bytes) +
                  " seconds=" + secs + " deleted=" + std::to_string(s.deleted);
  if (s.too_big != 0) l += " too_big=" + std::to_string(s.too_big);
  if (s.deferred != 0) l += " deferred=" + std::to_string(s.deferred);
  if (s.store_failed != 0) l += " failed=" + std::to_string(s.store_failed);
  if (s.stopped) l += " stopped=1";
  if (!s.error.empty()) l += " error=" + log_value(s.error);
  log_line(l);
}

FetchSummary failed(FetchStatus st, std::string msg) {
  FetchSummary s;
  s.status = st;
  s.error = std::move(msg);
  return s;
}

std::filesystem::path state_dir(const FetchConfig& cfg) {
  if (!cfg.state_dir.empty()) return expand_home(cfg.state_dir);
  // $XDG_STATE_HOME/apop/fetch (else ~/.local/state/apop/fetch).
  return client::AccountState::default_path("x", "y", 1).parent_path() / "fetch";
}

// One poll of one account: password, destination, state, session.
FetchSummary poll_account(const AccountConfig& a, const std::filesystem::path& states,
                          const std::atomic<bool>& stop, const ConnectionArgs& base,
                          std::shared_ptr<client::HandoffPool> pool) {
  std::string why;
  auto target = parse_url(a.url, why);
  if (!target) return failed(FetchStatus::error, "url: " + why);
  auto endpoint = resolve_endpoint(*target, a.tls, why);
  if (!endpoint) return failed(FetchStatus::error, "tls: " + why);

  std::error_code ec;
  if (std::filesystem::create_directories(states, ec)) {
    std::filesystem::permissions(states, std::filesystem::perms::owner_all, ec);
  }
  // One poll per account at a time, also across processes (a cron run that
  // overlaps the previous one, two daemons on one file): the lock is held
  // until the poll ends and released by the kernel if the process dies.
  const std::filesystem::path lock_path = states / (a.name + ".lock");
  UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock) {
    return failed(FetchStatus::error,
                  "lock file " + lock_path.string() + ": " + std::strerror(errno));
  }
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    return failed(FetchStatus::error,
                  "the account is being polled by another apop fetch (" + lock_path.string() + ")");
  }
  const std::filesystem::path state_path = states / (a.name + ".state");
  auto state = client::AccountState::load(state_path);
  if (!state) {
    return failed(FetchStatus::error,
                  "state file " + state_path.string() + ": " + state.error().message);
  }
  client::DestinationOptions dopts;
  dopts.deliver_to = a.deliver_to;
  dopts.on_reject = a.on_reject;
  dopts.pool = std::move(pool);  // one LMTP/SMTP connection for many accounts
  // A Maildir: exactly once across a kill (client/publish_journal.hpp).
  if (a.to.starts_with("maildir:")) {
    const client::PublishJournal journal(states / (a.name + ".publish"));
    if (auto r = journal.recover(*state, expand_home(a.to.substr(8))); !r)
      return failed(FetchStatus::error, r.error().message);
    dopts.before_publish = [journal](std::string_view base, const client::MessageMeta& meta) {
      return journal.record(base, meta);
    };
  }
  auto dest = client::open_destination(a.to, dopts);
  if (!dest) return failed(FetchStatus::error, "to " + a.to + ": " + dest.error().message);
  // Read at every poll: tokens expire, files are rotated.
  auto password = a.password_command.empty() ? client::read_password_file(a.password_file)
                                             : client::run_password_command(a.password_command);
  if (!password) return failed(FetchStatus::error, password.error().message);

  ConnectionArgs conn = base;
  conn.auth = a.auth;
  conn.tls = a.tls;
  conn.ca_file = expand_home(a.ca_file);
  client::FetchOptions opts = fetch_options(*target, *endpoint, conn, "fetch");
  opts.warn = [prefix = "account=" + a.name + " warning: "](std::string_view w) {
    log_line(prefix + std::string(w));
  };
  // -v: accounts polled in parallel interleave their traces; each line
  // names its account.
  if (opts.trace) {
    opts.trace = [prefix = "account=" + a.name + " "](std::string_view l) {
      print_line(prefix, l);
    };
  }
  opts.password = std::move(*password);
  wipe(*password);
  opts.keep = a.keep;
  opts.max_message_size = a.max_message_size;
  opts.fetch_limit = a.fetch_limit;
  opts.stop = &stop;
  client::ConnectOptions co = connect_options(*target, *endpoint, opts, conn);
  co.stop = &stop;  // SIGTERM: a silent server gets kFetchStopGrace, not the whole timeout
  FetchSummary sum = connect_and_run(co, false, [&](client::Transport& t) {
    return client::run_session(t, **dest, *state, opts);
  });
  wipe(opts.password);
  return sum;
}

// Per-account Prometheus gauges (--metrics-listen).
class FetchMetrics {
 public:
  static Result<std::unique_ptr<FetchMetrics>> open(const std::string& where) {
    std::unique_ptr<FetchMetrics> m(new FetchMetrics());
    try {
      m->exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
          "listening_ports", where, "num_threads", "2", "request_timeout_ms", "10000"});
    } catch (const std::exception& e) {
      return make_error(Errc::invalid, "cannot serve metrics on " + where + ": " + e.what());
    }
    m->exposer_->RegisterCollectable(m->registry_);
    const auto ports = m->exposer_->GetListeningPorts();
    const std::string host = where.substr(0, where.rfind(':'));
    log_line("metrics on " + host + ":" +
             (ports.empty() ? where.substr(where.rfind(':') + 1) : std::to_string(ports.front())));
    return m;
  }

  void record(const std::string& name, const FetchSummary& s, unsigned failures) {
    const std::map<std::string, std::string> labels{{"account", name}};
    if (s.status == FetchStatus::ok) {
      last_success_.Add(labels).Set(static_cast<double>(::time(nullptr)));
    }
    failures_.Add(labels).Set(failures);
    messages_.Add(labels).Increment(static_cast<double>(s.stored));
    polls_.Add({{"account", name}, {"result", status_name(s.status)}}).Increment();
  }

 private:
  FetchMetrics()
      : registry_(std::make_shared<prometheus::Registry>()),
        last_success_(prometheus::BuildGauge()
                          .Name("apop_fetch_last_success_timestamp_seconds")
                          .Help("UNIX time of the account's last successful poll")
                          .Register(*registry_)),
        failures_(prometheus::BuildGauge()
                      .Name("apop_fetch_consecutive_failures")
                      .Help("Polls of the account that failed in a row (0 after a success)")
                      .Register(*registry_)),
        messages_(prometheus::BuildCounter()
                      .Name("apop_fetch_messages_total")
                      .Help("Messages fetched and stored for the account")
                      .Register(*registry_)),
        polls_(prometheus::BuildCounter()
                   .Name("apop_fetch_polls_total")
                   .Help("Polls of the account by result")
                   .Register(*registry_)) {}

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& last_success_;
  prometheus::Family<prometheus::Gauge>& failures_;
  prometheus::Family<prometheus::Counter>& messages_;
  prometheus::Family<prometheus::Counter>& polls_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

// SIGTERM/SIGINT and SIGHUP set flags that the main loop looks at (it wakes
// at least every kSignalCheck). No thread blocks them: an MDA or a password
// command inherits its thread's signal mask, and must get SIGTERM and SIGHUP
// like any process. SA_RESTART; the few calls that are not restarted
// (poll) are retried on EINTR by the transport and the destinations.
std::atomic<bool> g_stop{false};
std::atomic<bool> g_reload{false};
static_assert(std::atomic<bool>::is_always_lock_free);  // async-signal-safe
constexpr std::chrono::milliseconds kSignalCheck{200};

extern "C" void on_fetch_signal(int sig) {
  if (sig == SIGHUP) {
    g_reload.store(true);
  } else {
    g_stop.store(true);
  }
}

class Signals {
 public:
  Signals() {
    g_stop = false;
    g_reload = false;
    struct sigaction sa {};
    sa.sa_handler = on_fetch_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (std::size_t i = 0; i < kSignals.size(); ++i) ::sigaction(kSignals[i], &sa, &old_[i]);
  }
  ~Signals() {
    for (std::size_t i = 0; i < kSignals.size(); ++i) ::sigaction(kSignals[i], &old_[i], nullptr);
  }
  Signals(const Signals&) = delete;
  Signals& operator=(const Signals&) = delete;
  std::atomic<bool>& stop = g_stop;
  std::atomic<bool>& reload = g_reload;

 private:
  static constexpr std::array<int, 3> kSignals = {SIGTERM, SIGINT, SIGHUP};
  std::array<struct sigaction, 3> old_{};
};

std::vector<client::PollScheduler::Account> schedule_of(const FetchConfig& cfg) {
  std::vector<client::PollScheduler::Account> out;
  for (const auto& a : cfg.accounts) out.push_back({a.name, a.poll_interval});
  return out;
}

}  // namespace

Result<FetchConfig> load_fetch_config(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return make_error(Errc::invalid, file + ": cannot read it");
  std::string text(limits::kMaxFetchConfigBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  auto cfg = client::parse_fetch_config(text, file);
  if (!cfg) return cfg;
  std::string problems;
  for (const auto& a : cfg->accounts) {
    std::string why;
    auto target = parse_url(a.url, why);
    if (!target) {
      problems += (problems.empty() ? "" : "\n") + a.url_at + why;
    } else if (!resolve_endpoint(*target, a.tls, why)) {
      problems += (problems.empty() ? "" : "\n") + a.at + ": key tls: " + why;
    }
  }
  if (!problems.empty()) return make_error(Errc::invalid, problems);
  return cfg;
}

std::string dump_fetch_config(const FetchConfig& cfg) {
  auto q = [](std::string_view v) {
    std::string out = "\"";
    for (char c : v) {
      if (c == '"' || c == '\\') out.push_back('\\');
      if (static_cast<unsigned char>(c) < 0x20) continue;
      out.push_back(c);
    }
    return out + "\"";
  };
  std::string o = "max_parallel = " + std::to_string(cfg.max_parallel) + "\n";
  o += "state_dir = " + q(state_dir(cfg).string()) + "\n";
  for (const auto& a : cfg.accounts) {
    o += "\n[[account]]\n";
    o += "name = " + q(a.name) + "\n";
    o += "url = " + q(a.url) + "\n";
    o += "auth = " + q(a.auth) + "\n";
    o += "tls = " + q(a.tls.empty() ? (a.url.starts_with("pop3s:") ? "implicit" : "auto") : a.tls) +
         "\n";
    if (!a.ca_file.empty()) o += "ca_file = " + q(a.ca_file) + "\n";
    if (!a.password_file.empty()) o += "password_file = " + q(a.password_file) + "\n";
    if (!a.password_command.empty()) {
      o += "password_command = [" + q(a.password_command.front()) + "]";
      if (a.password_command.size() > 1)
        o += "  # and " + std::to_string(a.password_command.size() - 1) + " argument(s), not shown";
      o += "\n";
    }
    o += "to = " + q(a.to) + "\n";
    if (!a.deliver_to.empty()) o += "deliver_to = " + q(a.deliver_to) + "\n";
    o += std::string("on_reject = ") +
         (a.on_reject == client::DestinationOptions::OnReject::keep ? "\"keep\"" : "\"bounce\"") +
         "\n";
    o += std::string("keep = ") + (a.keep ? "true" : "false") + "\n";
    o += "max_message_size = " +
         std::to_string(a.max_message_size != 0 ? a.max_message_size : limits::kMaxFetchMessage) +
         "\n";
    o += "fetch_limit = " + std::to_string(a.fetch_limit) + "\n";
    o += "poll_interval = " + std::to_string(a.poll_interval.count()) + "\n";
  }
  return o;
}

int run_fetch_config(const FetchConfigArgs& args) {
  auto loaded = load_fetch_config(args.file);
  if (!loaded) {
    std::fprintf(stderr, "apop fetch: %s\n", loaded.error().message.c_str());
    return kExitConfig;
  }
  FetchConfig cfg = std::move(*loaded);
  std::mutex mu;
  std::condition_variable cv;
  Signals signals;
  std::unique_ptr<FetchMetrics> metrics;
  if (!args.metrics_listen.empty()) {
    auto m = FetchMetrics::open(args.metrics_listen);
    if (!m) {
      std::fprintf(stderr, "apop fetch: --metrics-listen: %s\n", m.error().message.c_str());
      return kExitUsage;
    }
    metrics = std::move(*m);
  }

  struct Done {
    std::string name;
    FetchSummary sum;
  };
  std::deque<Done> done;
  std::map<std::string, std::thread> workers;
  // The hand-off connections accounts leave for the next ones to the same
  // server; drained whenever no poll runs (no connection idles between
  // rounds) and at the end.
  auto pool = std::make_shared<client::HandoffPool>();
  std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  client::PollScheduler sched(cfg.max_parallel, [&] { return uniform(rng); });
  using Clock = client::PollScheduler::Clock;
  sched.set_accounts(schedule_of(cfg), Clock::now());
  // Once mode: the accounts not polled yet (the scheduler forgets the others).
  std::map<std::string, const AccountConfig*> pending;
  for (const auto& a : cfg.accounts) pending.emplace(a.name, &a);
  int worst = 0;
  if (args.daemon) {
    log_line("daemon started: " + std::to_string(cfg.accounts.size()) + " account(s), " +
             std::to_string(cfg.max_parallel) + " at once");
  }

  for (;;) {
    std::unique_lock lock(mu);
    while (!done.empty()) {
      Done d = std::move(done.front());
      done.pop_front();
      lock.unlock();
      workers[d.name].join();
      workers.erase(d.name);
      const bool ok = d.sum.status == FetchStatus::ok;
      sched.finished(d.name, ok, Clock::now());
      log_poll(d.name, d.sum);
      if (metrics) metrics->record(d.name, d.sum, sched.failures(d.name));
      worst = std::max(worst, static_cast<int>(d.sum.status));
      if (!args.daemon) {
        pending.erase(d.name);
        std::vector<client::PollScheduler::Account> left;
        for (const auto& [name, a] : pending) left.push_back({name, a->poll_interval});
        sched.set_accounts(left, Clock::now());
      }
      lock.lock();
    }
    const bool stopping = signals.stop.load();
    if (stopping && workers.empty()) break;
    if (!args.daemon && pending.empty() && workers.empty()) break;
    if (signals.reload.exchange(false) && args.daemon) {
      lock.unlock();
      auto fresh = load_fetch_config(args.file);
      if (!fresh) {
        log_line("SIGHUP: configuration not reloaded, keeping the running one: " +
                 fresh.error().message);
      } else {
        // Running polls keep their copy of the account; later polls use the new one.
        cfg = std::move(*fresh);
        sched.set_max_parallel(cfg.max_parallel);
        sched.set_accounts(schedule_of(cfg), Clock::now());
        log_line("SIGHUP: configuration reloaded: " + std::to_string(cfg.accounts.size()) +
                 " account(s)");
      }
      lock.lock();
    }
    if (!stopping) {
      const auto states = state_dir(cfg);
      for (const std::string& name : sched.start_due(Clock::now())) {
        const AccountConfig* a = nullptr;
        for (const auto& acc : cfg.accounts) {
          if (acc.name == name) a = &acc;
        }
        if (a == nullptr) continue;
        workers.emplace(name, std::thread([&, account = *a, states] {
                          FetchSummary sum =
                              poll_account(account, states, signals.stop, args.conn, pool);
                          {
                            std::lock_guard g(mu);
                            done.push_back({account.name, std::move(sum)});
                          }
                          cv.notify_all();
                        }));
      }
    }
    if (workers.empty() && pool->idle() > 0) {
      // Nothing runs, nothing was due: no connection waits for the next round.
      lock.unlock();
      pool->drain();
      lock.lock();
    }
    auto wake = [&] { return !done.empty() || signals.reload.load() || signals.stop != stopping; };
    auto until = Clock::now() + kSignalCheck;
    if (auto next = sched.next_due(); next && !stopping) until = std::min(until, *next);
    cv.wait_until(lock, until, wake);
  }
  if (args.daemon) {
    log_line("daemon stopped");
    return kExitOk;
  }
  return worst;
}

}  // namespace apop::cli
