// Per-account client state for `apop fetch`: UIDLs already downloaded (for
// --keep) and what the server offered last time (downgrade detection).
// Stored as a small text file: a header line, at most one "offer" line, then
// one "uidl X" line per UIDL. save() rewrites it atomically (tmp + fsync +
// rename): at the session start and end (compaction). In between, each
// stored message appends one "uidl X" line (record_seen: one write + one
// fdatasync), so a session writes O(messages) bytes, not O(messages^2).
// A kill during an append can leave a torn last line; load() ignores it when
// it is the start of a "uidl" line (that UIDL was not recorded: the message
// is fetched once more), and the next save() rewrites it away.
// Thread-safety: one object per thread; an account is polled by one process.
#pragma once

#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <string_view>

#include "common/posix_fd.hpp"
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
  // Writes the whole file atomically (creating its directories) and keeps
  // the new file open for record_seen's appends. Move-only: the descriptor
  // is owned by one object.
  Result<void> save();

  AccountState() = default;
  AccountState(AccountState&&) noexcept = default;
  AccountState& operator=(AccountState&&) noexcept = default;
  AccountState(const AccountState&) = delete;
  AccountState& operator=(const AccountState&) = delete;

  bool seen(std::string_view uidl) const;
  // Marks `uidl` seen in memory only (an invalid UIDL is ignored).
  void mark_seen(std::string_view uidl);
  // mark_seen, made durable: appends "uidl X\n" with one write(2) and an
  // fdatasync to the file the last save() of this object wrote; a full
  // save() when there is none (no save() yet, or a failed append). An
  // already-seen or invalid UIDL writes nothing. A failed write or sync is
  // Errc::temporary (the UIDL stays marked in memory, as with mark_seen +
  // save) and the descriptor is dropped.
  Result<void> record_seen(std::string_view uidl);
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
  // The file as the last save() left it (offset at its end), or none.
  UniqueFd append_fd_;
};

}  // namespace apop::client
