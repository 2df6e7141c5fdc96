// `apop user quota USER [--bytes N|default] [--messages N|default] [--clear]`
// and `apop user quota --report [--json|--prometheus]`: per-account quota limits
// (store/quota.hpp) and usage, as Dovecot's `doveadm quota get -A`. Also the
// quota lines of `apop user show` (print_quota).
//
// Usage is per account, so it is shown here and not as a metric: a label per
// account would give /metrics one series per mailbox (unbounded cardinality,
// docs/configuration.md "Metrics"); the server counts refusals instead
// (apop_quota_rejections_total).
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "auth/credential_store.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/serve_config.hpp"
#include "cli/user_quota.hpp"
#include "store/mail_location.hpp"
#include "store/quota.hpp"

namespace apop::cli {

namespace {

struct QuotaArgs {
  std::string data;
  std::string users;
  std::string config;
  std::string name;
  std::string bytes;     // "" unchanged, "default", or a size
  std::string messages;  // "" unchanged, "default", or a count
  bool clear = false;
  bool report = false;
  bool json = false;
  bool prometheus = false;
};

int fail(const Error& e) {
  std::cerr << "apop user quota: " << e.message << "\n";
  return e.code == Errc::invalid || e.code == Errc::not_found ? kExitError : kExitTempFail;
}

// The settings this shares with apop serve: data, users, mail_location and
// the default quota (--config FILE, else serve's defaults).
Result<ServeConfig> settings(const std::string& config) {
  ServeConfig cfg;
  if (!config.empty()) {
    if (auto r = ServeOptions::load_file(config, cfg); !r) return r.error();
  }
  if (auto q = default_quota(cfg); !q) return q.error();
  return cfg;
}

Result<std::optional<std::uint64_t>> parse_limit(const std::string& text, bool size) {
  if (text == "default") return std::optional<std::uint64_t>{};
  if (size) {
    auto v = store::parse_quota_size(text);
    if (!v) return v.error();
    return std::optional<std::uint64_t>{*v};
  }
  auto v = store::parse_quota_size(text);  // digits only below
  if (!v || text.find_first_not_of("0123456789") != std::string::npos) {
    return make_error(Errc::invalid, "--messages: expected a number or default, not " + text);
  }
  return std::optional<std::uint64_t>{*v};
}

struct Row {
  std::string name;
  auth::AccountQuota own;
  store::QuotaLimits limits;
  std::optional<store::QuotaUsage> usage;  // nullopt: no mailbox yet
  std::string error;                       // usage could not be read
};

std::string percent(std::int64_t used, std::uint64_t limit) {
  if (limit == 0) return "";
  std::ostringstream o;
  o.setf(std::ios::fixed);
  o.precision(1);
  o << (100.0 * static_cast<double>(used) / static_cast<double>(limit)) << "%";
  return o.str();
}

std::string limit_text(std::uint64_t v, const std::optional<std::uint64_t>& own, bool bytes) {
  std::string s = v == 0 ? "unlimited"
                         : (bytes ? std::to_string(v) + " (" + store::format_quota_size(v) + ")"
                                  : std::to_string(v));
  if (!own) s += " (default)";
  return s;
}

}  // namespace

Result<std::optional<store::QuotaUsage>> account_usage(const ServeConfig& cfg, const DataDir& dir,
                                                       const std::string& user,
                                                       const std::optional<std::string>& own,
                                                       const store::QuotaLimits& limits) {
  auto fallback = store::parse_mail_location(cfg.mail_location, /*require_user=*/true);
  if (!fallback) return fallback.error();
  store::LocationOpener locations(
      *fallback, dir.root, store::MboxOptions{},
      [own](std::string_view) -> Result<std::optional<std::string>> { return own; });
  auto where = locations.resolve(pop3::MailboxAddress(user));
  if (!where) return where.error();
  std::error_code ec;
  if (!std::filesystem::exists(where->second, ec)) return std::optional<store::QuotaUsage>{};
  auto usage = where->first.format == store::MailLocation::Format::mbox
                   ? store::mbox_quota_usage(where->second)
                   : store::maildir_quota_usage(where->second, limits);
  if (!usage) return usage.error();
  return std::optional<store::QuotaUsage>{*usage};
}

void print_quota(std::ostream& out, const auth::AccountQuota& own, const store::QuotaLimits& limits,
                 const std::optional<store::QuotaUsage>& usage) {
  out << "quota bytes: " << limit_text(limits.bytes, own.bytes, true) << "\n"
      << "quota messages: " << limit_text(limits.messages, own.messages, false) << "\n";
  if (!usage) {
    out << "usage: no mailbox yet\n";
    return;
  }
  out << "usage bytes: " << usage->bytes;
  if (limits.bytes != 0)
    out << " of " << limits.bytes << " (" << percent(usage->bytes, limits.bytes) << ")";
  out << "\nusage messages: " << usage->messages;
  if (limits.messages != 0) {
    out << " of " << limits.messages << " (" << percent(usage->messages, limits.messages) << ")";
  }
  out << "\n";
}

namespace {

int run_report(const QuotaArgs& a, const ServeConfig& cfg, auth::CredentialStore& store,
               const DataDir& dir, const store::QuotaLimits& defaults) {
  auto users = store.list();
  if (!users) return fail(users.error());
  std::vector<Row> rows;
  for (const auth::UserRecord& u : *users) {
    Row r{u.name, u.quota, effective_quota(u.quota, defaults), std::nullopt, ""};
    auto usage = account_usage(cfg, dir, u.name, u.mail_location, r.limits);
    if (usage) {
      r.usage = *usage;
    } else {
      r.error = usage.error().message;
    }
    rows.push_back(std::move(r));
  }
  if (a.prometheus) {
    // Prometheus' text format, for node_exporter's textfile collector (a
    // cron job writes it to a .prom file): per-account series belong there,
    // beside the server's own /metrics, which keeps a bounded set of series
    // (docs/operations.md "Quotas").
    auto label = [](const std::string& v) {
      std::string out;
      for (char c : v) {
        if (c == '\\' || c == '"') out.push_back('\\');
        out.push_back(c == '\n' ? ' ' : c);
      }
      return out;
    };
    struct Family {
      const char* name;
      const char* help;
      std::uint64_t (*value)(const Row&);
      bool needs_usage;
    };
    const Family families[] = {
        {"apop_quota_usage_bytes", "Bytes in the account's mailbox",
         [](const Row& r) -> std::uint64_t { return static_cast<std::uint64_t>(r.usage->bytes); },
         true},
        {"apop_quota_limit_bytes", "The account's effective byte limit (0: unlimited)",
         [](const Row& r) -> std::uint64_t { return r.limits.bytes; }, false},
        {"apop_quota_usage_messages", "Messages in the account's mailbox",
         [](const Row& r) -> std::uint64_t {
           return static_cast<std::uint64_t>(r.usage->messages);
         },
         true},
        {"apop_quota_limit_messages", "The account's effective message limit (0: unlimited)",
         [](const Row& r) -> std::uint64_t { return r.limits.messages; }, false},
    };
    for (const Family& f : families) {
      std::cout << "# HELP " << f.name << " " << f.help << "\n# TYPE " << f.name << " gauge\n";
      for (const Row& r : rows) {
        if (f.needs_usage && !r.usage) continue;  // no mailbox yet, or unreadable
        std::cout << f.name << "{user=\"" << label(r.name) << "\"} " << f.value(r) << "\n";
      }
    }
    return kExitOk;
  }
  if (a.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const Row& r : rows) {
      nlohmann::json j;
      j["user"] = r.name;
      j["bytes_limit"] = r.limits.bytes;  // 0: unlimited
      j["messages_limit"] = r.limits.messages;
      j["bytes_limit_is_default"] = !r.own.bytes.has_value();
      j["messages_limit_is_default"] = !r.own.messages.has_value();
      if (r.usage) {
        j["bytes"] = r.usage->bytes;
        j["messages"] = r.usage->messages;
        j["bytes_percent"] = r.limits.bytes == 0
                                 ? nlohmann::json(nullptr)
                                 : nlohmann::json(100.0 * r.usage->bytes / r.limits.bytes);
        j["messages_percent"] = r.limits.messages == 0
                                    ? nlohmann::json(nullptr)
                                    : nlohmann::json(100.0 * r.usage->messages / r.limits.messages);
      } else {
        j["bytes"] = nullptr;
        j["messages"] = nullptr;
      }
      if (!r.error.empty()) j["error"] = r.error;
      out.push_back(std::move(j));
    }
    std::cout << out.dump(2) << "\n";
    return kExitOk;
  }
  std::cout << "user\tbytes\tbytes_limit\tbytes%\tmessages\tmessages_limit\tmessages%\n";
  for (const Row& r : rows) {
    auto lim = [](std::uint64_t v) { return v == 0 ? std::string("-") : std::to_string(v); };
    std::cout << r.name << "\t";
    if (r.usage) {
      std::cout << r.usage->bytes << "\t" << lim(r.limits.bytes) << "\t"
                << percent(r.usage->bytes, r.limits.bytes) << "\t" << r.usage->messages << "\t"
                << lim(r.limits.messages) << "\t" << percent(r.usage->messages, r.limits.messages)
                << "\n";
    } else {
      std::cout << "0\t" << lim(r.limits.bytes) << "\t\t0\t" << lim(r.limits.messages) << "\t"
                << (r.error.empty() ? "" : "\t(" + r.error + ")") << "\n";
    }
  }
  return kExitOk;
}

int run_quota(const QuotaArgs& a) {
  auto cfg = settings(a.config);
  if (!cfg) return fail(cfg.error());
  const store::QuotaLimits defaults = default_quota(*cfg).value();
  DataDir dir = resolve_data_dir(a.data.empty() ? cfg->data : a.data);
  auto store = open_credentials(dir, resolve_users(a.users.empty() ? cfg->users : a.users));
  if (!store) return fail(store.error());
  if (a.report) {
    if (!a.name.empty() || !a.bytes.empty() || !a.messages.empty() || a.clear) {
      return fail(make_error(Errc::invalid, "--report takes no user and changes nothing"));
    }
    if (a.json && a.prometheus) {
      return fail(make_error(Errc::invalid, "--json and --prometheus: one format"));
    }
    return run_report(a, *cfg, **store, dir, defaults);
  }
  if (a.json || a.prometheus) {
    return fail(make_error(Errc::invalid, "--json and --prometheus go with --report"));
  }
  if (a.name.empty()) return fail(make_error(Errc::invalid, "a user name (or --report) is needed"));
  auto own = (*store)->quota(a.name);
  if (!own) return fail(own.error());
  auth::AccountQuota next = *own;
  if (a.clear) next = auth::AccountQuota{};
  if (!a.bytes.empty()) {
    auto v = parse_limit(a.bytes, true);
    if (!v) return fail(make_error(Errc::invalid, "--bytes: " + v.error().message));
    next.bytes = *v;
  }
  if (!a.messages.empty()) {
    auto v = parse_limit(a.messages, false);
    if (!v) return fail(v.error());
    next.messages = *v;
  }
  if (!(next == *own)) {
    if (auto r = (*store)->set_quota(a.name, next); !r) return fail(r.error());
    std::cerr << "quota of " << a.name << " changed\n";
  }
  // The account's own location, for the usage.
  auto location = (*store)->mail_location(a.name);
  if (!location) return fail(location.error());
  const store::QuotaLimits limits = effective_quota(next, defaults);
  auto usage = account_usage(*cfg, dir, a.name, *location, limits);
  std::cout << "user: " << a.name << "\n";
  if (usage) {
    print_quota(std::cout, next, limits, *usage);
  } else {
    print_quota(std::cout, next, limits, std::nullopt);
    std::cerr << "apop user quota: usage: " << usage.error().message << "\n";
  }
  return kExitOk;
}

}  // namespace

void register_user_quota(CLI::App& user, Registry& registry) {
  auto a = std::make_shared<QuotaArgs>();
  CLI::App* sub = user.add_subcommand(
      "quota",
      "Show or set a user's quota limits and usage (LMTP and apop deliver enforce them); "
      "--report lists every account");
  sub->add_option("--data", a->data, "Data directory (default: $APOP_DATA or ./apop-data)");
  sub->add_option("--users", a->users,
                  "Account store: a postgresql:// URL (default: $APOP_USERS, else "
                  "DATA/users.sqlite)");
  sub->add_option("--config", a->config,
                  "apop serve's TOML configuration file: its default quota (quota_bytes, "
                  "quota_messages) and mail_location");
  sub->add_option("user", a->name, "User name");
  sub->add_option("--bytes", a->bytes,
                  "Limit in bytes (1G, 500M, 64K, 1048576; 0: unlimited; default: the server's "
                  "quota_bytes)");
  sub->add_option("--messages", a->messages,
                  "Limit in messages (0: unlimited; default: the server's quota_messages)");
  sub->add_flag("--clear", a->clear, "Both limits back to the server's defaults");
  sub->add_flag("--report", a->report,
                "Every account's usage, limits and percentages (as doveadm quota get -A)");
  sub->add_flag("--json", a->json, "With --report: JSON instead of tab-separated text");
  sub->add_flag("--prometheus", a->prometheus,
                "With --report: Prometheus' text format (per-account gauges, for "
                "node_exporter's textfile collector)");
  registry.add(sub, [a] { return run_quota(*a); });
}

}  // namespace apop::cli
