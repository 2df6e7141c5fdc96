// The `apop fetch --config` parser (client/fetch_config.hpp) on arbitrary
// file contents.
//
// Invariants (__builtin_trap): it returns (no exception escapes, no crash or
// hang); an error names the file ("f.toml:"), has at most 20 lines; a
// configuration that parses has 1 to kMaxFetchAccounts accounts with valid,
// unique names, a url, a destination, exactly one password source, and
// values within their bounds.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "client/fetch_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace limits = apop::limits;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto cfg = apop::client::parse_fetch_config(text, "f.toml");
  if (!cfg) {
    const std::string& m = cfg.error().message;
    if (m.rfind("f.toml", 0) != 0) __builtin_trap();
    std::size_t lines = 1;
    for (char c : m) lines += c == '\n';
    if (lines > 20) __builtin_trap();
    return 0;
  }
  if (cfg->accounts.empty() || cfg->accounts.size() > limits::kMaxFetchAccounts) __builtin_trap();
  if (cfg->max_parallel < 1 || cfg->max_parallel > limits::kFetchMaxParallel) __builtin_trap();
  std::set<std::string> names;
  for (const auto& a : cfg->accounts) {
    if (!apop::client::valid_account_name(a.name) || !names.insert(a.name).second) __builtin_trap();
    if (a.url.empty() || a.to.empty()) __builtin_trap();
    if (a.password_file.empty() == a.password_command.empty()) __builtin_trap();
    if (a.poll_interval < limits::kFetchMinPollInterval ||
        a.poll_interval > limits::kFetchMaxPollInterval)
      __builtin_trap();
    if (a.max_message_size > limits::kMaxFetchMessage) __builtin_trap();
    if (a.fetch_limit > limits::kMaxFetchListing) __builtin_trap();
  }
  return 0;
}
