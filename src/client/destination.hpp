// Where `apop fetch` puts downloaded mail. A Destination stores one message
// durably: store() returns success only when the message is safely on disk
// (fsync of file and directory) or an MDA accepted it (exit status 0), so the
// caller may then delete it on the server.
//
// Contract: `message` is the message as RFC 5322 text with LF line endings
// (the caller has undone dot-stuffing and CRLF). Errors: Errc::temporary means
// "keep the message on the server and try again later" (EX_TEMPFAIL, full disk,
// lock timeout); Errc::permanent means the destination refused it for good.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace apop::client {

struct MessageMeta {
  std::string uidl;              // server UIDL, empty if the server has none
  std::string envelope_from;     // for the mbox "From " line; "MAILER-DAEMON" if unknown
  std::int64_t received_at = 0;  // UNIX seconds, for the "From " line date
};

class Destination {
 public:
  virtual ~Destination() = default;
  virtual Result<void> store(std::string_view message, const MessageMeta& meta) = 0;
  // Human description for logs: "maildir:/home/a/Maildir".
  virtual std::string describe() const = 0;
};

// Parses "maildir:DIR", "mbox:FILE" or "mda:COMMAND" and opens it
// (creating a Maildir's tmp/new/cur if missing). Errc::invalid for bad specs.
Result<std::unique_ptr<Destination>> open_destination(std::string_view spec);

}  // namespace apop::client
