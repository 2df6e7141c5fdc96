// Per-account client state for `apop fetch`: UIDLs already downloaded (for
// --keep) and what the server offered last time (downgrade detection).
// Stored as a small text file written atomically (tmp + fsync + rename).
#pragma once

#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace apop::client {

// What a server offered, as seen by the client before authenticating.
struct Offer {
  bool tls = false;    // implicit TLS or STLS succeeded / offered
  bool apop = false;   // greeting carried a valid timestamp
  bool scram = false;  // SASL SCRAM-SHA-256 offered
  bool operator==(const Offer&) const = default;
};

class AccountState {
 public:
  // Loads the state at `path`; a missing file is an empty state, a corrupt
  // one is Errc::permanent (never silently reset: that would refetch mail).
  static Result<AccountState> load(const std::filesystem::path& path);
  // Writes atomically.
  Result<void> save() const;

  bool seen(std::string_view uidl) const;
  void mark_seen(std::string_view uidl);
  // Drops UIDLs no longer on the server (keeps the file small).
  void retain_only(const std::set<std::string>& on_server);
  // The same with a membership test (a large listing is not copied).
  void retain_only_if(const std::function<bool(std::string_view)>& on_server);

  bool has_offer() const { return has_offer_; }
  const Offer& last_offer() const { return offer_; }
  void set_offer(const Offer& o) {
    offer_ = o;
    has_offer_ = true;
  }

  // Default location: $XDG_STATE_HOME/apop/ (else ~/.local/state/apop/),
  // one file per account named from user@host:port.
  static std::filesystem::path default_path(std::string_view user, std::string_view host,
                                            unsigned port);

 private:
  std::filesystem::path path_;
  std::set<std::string, std::less<>> uidls_;
  Offer offer_;
  bool has_offer_ = false;
};

}  // namespace apop::client
