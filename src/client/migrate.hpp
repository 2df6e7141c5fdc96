// The engine of `apop migrate`: copies a whole mailbox from a POP3 server
// into a local Maildir with the fetch engine (fetch.hpp), keeping mail on the
// source, and pins every message's source UIDL in the Maildir's UIDL map
// (store/uidl_map.hpp) so that clients pointed at apop afterwards download
// nothing twice.
//
// Resumable, never duplicating: for each message
//   1. the message is written to tmp/ and fsynced,
//   2. "BASENAME UIDL" is appended to MAILDIR/apop-uidl and fsynced,
//   3. the file is linked into new/ and new/ fsynced,
//   4. the UIDL is added to the migration state file (atomic rewrite).
// A re-run skips the UIDLs of the state file; a message cut between 3 and 4
// is recognised by its map entry whose file exists and is not stored again;
// one cut between 2 and 3 has a map entry without a file and is copied again.
//
// One migration per Maildir at a time: Migration holds an exclusive flock on
// MAILDIR/apop-migrate.lock for its lifetime.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include "client/account_state.hpp"
#include "client/destination.hpp"
#include "client/fetch.hpp"
#include "common/posix_fd.hpp"
#include "common/result.hpp"

namespace apop::client {

// The source mailbox: which state file the migration uses.
struct MigrationSource {
  std::string host;
  std::uint16_t port = 0;
  std::string user;
};

// Counts for the report, from a session's summary.
struct MigrationCounts {
  std::uint64_t copied = 0;            // stored by this run
  std::uint64_t already_migrated = 0;  // by earlier runs (state file or map entry with a file)
  std::uint64_t done_before = 0;       // skipped through the state file alone
};

class Migration {
 public:
  // Creates the Maildir if missing, takes the migration lock, loads the
  // state file (MAILDIR/apop-migrate-HOST-PORT-USER.state) and the UIDL map,
  // and opens the Maildir destination that pins each UIDL before the message
  // appears in new/. Errors name what failed (Errc::temporary when another
  // migration holds the lock).
  static Result<std::unique_ptr<Migration>> open(const std::filesystem::path& maildir,
                                                 const MigrationSource& source,
                                                 const DestinationOptions& base = {});
  ~Migration();
  Migration(const Migration&) = delete;
  Migration& operator=(const Migration&) = delete;

  // Runs one session on `t` into the Maildir; `opts.keep` is forced (the
  // source is never changed).
  FetchSummary run(Transport& t, FetchOptions opts);

  Destination& destination();
  AccountState& state() { return state_; }
  const std::filesystem::path& maildir() const { return maildir_; }
  const std::filesystem::path& state_path() const { return state_path_; }
  // Messages a cut run had already put into the Maildir (skipped this run).
  std::uint64_t already_present() const;
  MigrationCounts counts(const FetchSummary& sum) const;

 private:
  class SkipPresent;
  Migration(std::filesystem::path maildir, UniqueFd lock, std::filesystem::path state_path,
            AccountState state);

  std::filesystem::path maildir_;
  UniqueFd lock_;
  std::filesystem::path state_path_;
  AccountState state_;
  std::unique_ptr<SkipPresent> dest_;
};

// File-name-safe form of a state key: [A-Za-z0-9.@_-], others as '_'.
std::string migration_safe_name(std::string_view s);

}  // namespace apop::client
