// MemoryStore: an in-memory MaildropOpener for tests and fuzzers, with the
// same observable contract as MaildirOpener (locking, snapshots, stable
// UIDLs, CRLF sizes) plus fault injection.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "pop3/interfaces.hpp"

namespace apop::store {

// Thread-safe. Maildrops it returns may outlive the MemoryStore (they share
// its state).
//
// - add_message: appends a message (raw, as stored: LF or CRLF) to the
//   user's maildrop, creating the user if needed. It gets the UIDL "m<N>",
//   N a per-user counter starting at 1 that never repeats, so UIDLs are
//   stable for the message's lifetime. A session already open does not see
//   it (snapshot at open).
// - messages: the raw messages that remain, in order. Unknown user -> empty.
// - locked: whether a Maildrop for the user is alive.
// - open: locks and snapshots the user's maildrop (unknown users get an empty
//   one). Errc::in_use if locked. Sizes are pop3::crlf_size of the raw bytes.
//   The Maildrop's open(i) returns Errc::invalid when i is out of range;
//   commit removes the chosen snapshot messages (messages added meanwhile
//   stay) and returns Errc::invalid, removing nothing, for a bad index.
// - Fault injection: fail_X_after(n) makes the n-th (1-based) future call of
//   that kind fail once with Errc::temporary; n <= 0 disarms. Kinds:
//     open   -- MemoryStore::open (the maildrop is not locked);
//     commit -- Maildrop::commit (nothing is removed);
//     read   -- ByteSource::read on any message source of any user.
class MemoryStore final : public pop3::MaildropOpener {
 public:
  MemoryStore();
  ~MemoryStore() override;
  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

  // `delivered`: MessageInfo::delivered (unix seconds; 0 = unknown).
  void add_message(std::string_view user, std::string raw, std::int64_t delivered = 0);
  std::vector<std::string> messages(std::string_view user) const;
  bool locked(std::string_view user) const;

  void fail_open_after(int n);
  void fail_commit_after(int n);
  void fail_read_after(int n);

  Result<std::unique_ptr<pop3::Maildrop>> open(const pop3::MailboxAddress& where) override;
  // In memory: the lock is taken or refused at once.
  bool opens_without_waiting(const pop3::MailboxAddress&) override { return true; }

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace apop::store
