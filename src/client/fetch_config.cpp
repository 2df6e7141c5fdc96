#include "client/fetch_config.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <limits>
#include <set>

#include "client/protocol.hpp"

namespace apop::client {
namespace {

// Problems reported at most (a garbled file would otherwise give thousands).
constexpr std::size_t kMaxProblems = 20;

class Problems {
 public:
  explicit Problems(std::string_view file) : file_(file) {}
  std::string where(const toml::source_region& src) const {
    return file_ + ":" + std::to_string(src.begin.line) + ":" + std::to_string(src.begin.column);
  }
  void add(const toml::source_region& src, std::string_view key, std::string_view what) {
    std::string line = where(src);
    if (!key.empty()) line += ": key " + std::string(key);
    line += ": " + std::string(what);
    if (list_.size() < kMaxProblems) list_.push_back(std::move(line));
  }
  bool empty() const { return list_.empty(); }
  std::string message() const {
    std::string out;
    for (const auto& l : list_) out += (out.empty() ? "" : "\n") + l;
    return out;
  }

 private:
  std::string file_;
  std::vector<std::string> list_;
};

// An account's keys as given in one table ([defaults] or one [[account]]).
struct Given {
  bool password_file = false;
  bool password_command = false;
};

bool destination_needs_recipient(std::string_view to) {
  return to.starts_with("lmtp:") || to.starts_with("smtp:");
}

constexpr std::array<std::string_view, 5> kDestinationSchemes = {
    "maildir:", "mbox:", "mda:", "lmtp:", "smtp:"};

// Sets `key` of `a` from `node`; a problem when the key is unknown or the
// value bad.
void apply_key(AccountConfig& a, Given& given, std::string_view key, const toml::node& node,
               bool in_defaults, Problems& p) {
  const auto& src = node.source();
  auto string = [&](std::string& out) {
    auto v = node.value_exact<std::string>();
    if (!v) return p.add(src, key, "expected a string");
    if (v->find('\0') != std::string::npos) return p.add(src, key, "contains a NUL");
    out = *v;
  };
  if (key == "name") {
    if (in_defaults) return p.add(src, key, "an account's name cannot be a default");
    string(a.name);
    if (!a.name.empty() && !valid_account_name(a.name)) {
      p.add(src, key,
            "must be 1 to " + std::to_string(limits::kMaxFetchAccountName) +
                " characters of A-Z a-z 0-9 . _ - (not starting with '.')");
    }
  } else if (key == "url") {
    auto v = node.value_exact<std::string>();
    if (!v) return p.add(src, key, "expected a string");
    if (!(v->starts_with("pop3://") || v->starts_with("pop3s://")) ||
        v->find('@') == std::string::npos) {
      return p.add(src, key, "expected pop3://USER@HOST[:PORT] or pop3s://USER@HOST[:PORT]");
    }
    a.url = *v;
    a.url_at = p.where(src) + ": key url: ";
  } else if (key == "auth") {
    string(a.auth);
    if (!parse_auth_mech(a.auth)) {
      p.add(src, key,
            "unknown mechanism \"" + a.auth +
                "\" (auto, apop, scram-sha-256, cram-md5, plain, login, user)");
    }
  } else if (key == "tls") {
    string(a.tls);
    static constexpr std::array<std::string_view, 4> kModes = {"auto", "implicit", "starttls",
                                                               "none"};
    if (std::find(kModes.begin(), kModes.end(), a.tls) == kModes.end())
      p.add(src, key, "must be auto, implicit, starttls or none");
  } else if (key == "ca_file") {
    string(a.ca_file);
  } else if (key == "password_file") {
    string(a.password_file);
    if (a.password_file.empty()) p.add(src, key, "must not be empty");
    given.password_file = true;
  } else if (key == "password_command") {
    given.password_command = true;
    const toml::array* arr = node.as_array();
    if (arr == nullptr || arr->empty())
      return p.add(src, key, "expected a non-empty array of strings (no shell is used)");
    std::vector<std::string> argv;
    for (const auto& item : *arr) {
      auto v = item.value_exact<std::string>();
      if (!v || v->find('\0') != std::string::npos)
        return p.add(item.source(), key, "expected a string");
      argv.push_back(*v);
    }
    if (argv.front().empty()) return p.add(src, key, "the program name is empty");
    a.password_command = std::move(argv);
  } else if (key == "to") {
    string(a.to);
    const bool known = std::any_of(
        kDestinationSchemes.begin(), kDestinationSchemes.end(),
        [&](std::string_view s) { return a.to.starts_with(s) && a.to.size() > s.size(); });
    if (!known)
      p.add(src, key,
            "expected maildir:DIR, mbox:FILE, mda:COMMAND, lmtp:unix:PATH, lmtp:HOST:PORT or "
            "smtp:HOST:PORT");
  } else if (key == "deliver_to") {
    string(a.deliver_to);
  } else if (key == "on_reject") {
    std::string v;
    string(v);
    if (v == "keep") {
      a.on_reject = DestinationOptions::OnReject::keep;
    } else if (v == "bounce") {
      a.on_reject = DestinationOptions::OnReject::bounce;
    } else {
      p.add(src, key, "must be keep or bounce");
    }
  } else if (key == "keep") {
    auto v = node.value_exact<bool>();
    if (!v) return p.add(src, key, "expected true or false");
    a.keep = *v;
  } else if (key == "max_message_size") {
    std::optional<std::uint64_t> n;
    if (auto i = node.value_exact<std::int64_t>()) {
      if (*i > 0) n = static_cast<std::uint64_t>(*i);
    } else if (auto s = node.value_exact<std::string>()) {
      n = parse_size(*s);
    }
    if (!n || *n == 0 || *n > limits::kMaxFetchMessage) {
      return p.add(src, key,
                   "expected a size from 1 to " +
                       std::to_string(limits::kMaxFetchMessage / 1024 / 1024) +
                       "M: an integer (octets) or a string with K, M or G");
    }
    a.max_message_size = *n;
  } else if (key == "fetch_limit") {
    auto v = node.value_exact<std::int64_t>();
    if (!v || *v < 0 || static_cast<std::uint64_t>(*v) > limits::kMaxFetchListing) {
      return p.add(
          src, key,
          "expected an integer from 0 (all) to " + std::to_string(limits::kMaxFetchListing));
    }
    a.fetch_limit = static_cast<std::uint64_t>(*v);
  } else if (key == "poll_interval") {
    std::optional<std::chrono::seconds> d;
    if (auto i = node.value_exact<std::int64_t>()) {
      if (*i > 0 && *i <= limits::kFetchMaxPollInterval.count()) d = std::chrono::seconds(*i);
    } else if (auto s = node.value_exact<std::string>()) {
      d = parse_interval(*s);
    }
    if (!d || *d < limits::kFetchMinPollInterval || *d > limits::kFetchMaxPollInterval) {
      return p.add(src, key,
                   "expected a duration from 1s to 7d: seconds, or a string like \"90s\", "
                   "\"5m\", \"2h\", \"1d\"");
    }
    a.poll_interval = *d;
  } else {
    p.add(src, key, "unknown key");
  }
}

void apply_table(AccountConfig& a, const toml::table& t, bool in_defaults, Problems& p) {
  Given given;
  for (const auto& [k, node] : t) apply_key(a, given, k.str(), node, in_defaults, p);
  if (given.password_file && given.password_command) {
    p.add(t.source(), "password_command", "give password_file or password_command, not both");
  } else if (given.password_file) {
    a.password_command.clear();  // the account's own source replaces the default's
  } else if (given.password_command) {
    a.password_file.clear();
  }
}

}  // namespace

std::optional<std::chrono::seconds> parse_interval(std::string_view s) {
  if (s.empty() || s.size() > 12) return std::nullopt;
  std::int64_t unit = 1;
  switch (s.back()) {
    case 's':
      unit = 1;
      s.remove_suffix(1);
      break;
    case 'm':
      unit = 60;
      s.remove_suffix(1);
      break;
    case 'h':
      unit = 3600;
      s.remove_suffix(1);
      break;
    case 'd':
      unit = 86400;
      s.remove_suffix(1);
      break;
    default:
      break;
  }
  auto n = parse_number(s);
  if (!n || *n == 0 || *n > 10'000'000) return std::nullopt;
  return std::chrono::seconds(static_cast<std::int64_t>(*n) * unit);
}

std::optional<std::uint64_t> parse_size(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  std::uint64_t unit = 1;
  switch (std::tolower(static_cast<unsigned char>(s.back()))) {
    case 'k':
      unit = 1024;
      break;
    case 'm':
      unit = 1024 * 1024;
      break;
    case 'g':
      unit = 1024 * 1024 * 1024;
      break;
    default:
      break;
  }
  if (unit != 1) s.remove_suffix(1);
  auto n = parse_number(s);
  if (!n || *n > std::numeric_limits<std::uint64_t>::max() / unit) return std::nullopt;
  return *n * unit;
}

bool valid_account_name(std::string_view name) {
  if (name.empty() || name.size() > limits::kMaxFetchAccountName || name.front() == '.')
    return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '-';
  });
}

Result<FetchConfig> parse_fetch_config(std::string_view text, std::string_view file) {
  const std::string fname(file);
  if (text.size() > limits::kMaxFetchConfigBytes) {
    return make_error(Errc::invalid, fname + ": larger than " +
                                         std::to_string(limits::kMaxFetchConfigBytes) + " octets");
  }
  toml::table root;
  try {
    root = toml::parse(text, fname);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    return make_error(Errc::invalid, fname + ":" + std::to_string(b.line) + ":" +
                                         std::to_string(b.column) + ": " +
                                         std::string(e.description()));
  }
  Problems p(fname);
  FetchConfig cfg;
  AccountConfig defaults;
  // [defaults] first, wherever it is in the file.
  if (const toml::node* d = root.get("defaults")) {
    if (const toml::table* t = d->as_table()) {
      apply_table(defaults, *t, true, p);
    } else {
      p.add(d->source(), "defaults", "expected a table ([defaults])");
    }
  }
  const toml::array* accounts = nullptr;
  for (const auto& [k, node] : root) {
    const std::string_view key = k.str();
    if (key == "defaults") continue;
    if (key == "max_parallel") {
      auto v = node.value_exact<std::int64_t>();
      if (!v || *v < 1 || *v > limits::kFetchMaxParallel) {
        p.add(node.source(), key,
              "expected an integer from 1 to " + std::to_string(limits::kFetchMaxParallel));
      } else {
        cfg.max_parallel = static_cast<unsigned>(*v);
      }
    } else if (key == "state_dir") {
      auto v = node.value_exact<std::string>();
      if (!v || v->empty() || v->find('\0') != std::string::npos) {
        p.add(node.source(), key, "expected a directory name");
      } else {
        cfg.state_dir = *v;
      }
    } else if (key == "account") {
      accounts = node.as_array();
      if (accounts == nullptr || !accounts->is_array_of_tables())
        p.add(node.source(), key, "expected [[account]] tables");
    } else {
      p.add(k.source(), key,
            node.is_table() || node.is_array_of_tables()
                ? "unknown key (account settings go in [[account]] or [defaults])"
                : "unknown key");
    }
  }
  std::set<std::string, std::less<>> names;
  if (accounts != nullptr && accounts->is_array_of_tables()) {
    if (accounts->size() > limits::kMaxFetchAccounts) {
      p.add(accounts->source(), "account",
            "more than " + std::to_string(limits::kMaxFetchAccounts) + " accounts");
    }
    for (const auto& item : *accounts) {
      const toml::table& t = *item.as_table();
      AccountConfig a = defaults;
      a.url_at = defaults.url_at;
      apply_table(a, t, false, p);
      a.at = fname + ":" + std::to_string(t.source().begin.line);
      const auto& src = t.source();
      if (a.name.empty()) {
        p.add(src, "name", "missing: every [[account]] needs a name");
      } else if (!names.insert(a.name).second) {
        p.add(src, "name", "\"" + a.name + "\" is the name of an earlier account");
      }
      if (a.url.empty()) p.add(src, "url", "missing");
      if (a.to.empty()) p.add(src, "to", "missing");
      if (a.password_file.empty() && a.password_command.empty())
        p.add(src, "password_file", "missing: give password_file or password_command");
      if (destination_needs_recipient(a.to) && a.deliver_to.empty())
        p.add(src, "deliver_to", "missing: lmtp: and smtp: destinations need the recipient");
      cfg.accounts.push_back(std::move(a));
    }
  }
  if (cfg.accounts.empty() && p.empty()) {
    return make_error(Errc::invalid, fname + ":1:1: no [[account]] in the file");
  }
  if (!p.empty()) return make_error(Errc::invalid, p.message());
  return cfg;
}

}  // namespace apop::client
