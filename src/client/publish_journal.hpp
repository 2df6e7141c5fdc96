// Exactly-once delivery into a Maildir across a kill of `apop fetch`.
//
// run_session() records a UIDL in the state file right after store()
// returns, so a kill between the message appearing in the Maildir and that
// save makes the next poll fetch it again (one duplicate). With a Maildir
// destination the daemon closes that window: the destination's
// before_publish hook calls record(), which writes "UIDL BASE-NAME" to a
// small journal file before the message is linked into new/; the next poll
// calls recover() first, which marks the UIDL seen when BASE-NAME reached
// new/ or cur/ and the state does not have it yet.
//
// The journal is written without fsync: it survives a killed process (the
// page cache does), not a power failure, after which one duplicate remains
// possible (the Maildir file itself is fsynced). Used by one thread at a
// time per account.
#pragma once

#include <filesystem>
#include <string_view>

#include "client/account_state.hpp"
#include "client/destination.hpp"
#include "common/result.hpp"

namespace apop::client {

class PublishJournal {
 public:
  explicit PublishJournal(std::filesystem::path path) : path_(std::move(path)) {}

  // The before_publish hook's work: the journal now names this message (a
  // message without UIDL is not recorded: run_session does not track it).
  Result<void> record(std::string_view base_name, const MessageMeta& meta) const;

  // Before a session: settles a journal left by a killed one (see above),
  // saving `state` when it marked a UIDL, then removes the journal. A
  // missing or garbled journal is nothing to do.
  Result<void> recover(AccountState& state, const std::filesystem::path& maildir) const;

 private:
  std::filesystem::path path_;
};

}  // namespace apop::client
