// Where a user's mail lives: a location template per install (`apop serve
// --mail-location`, TOML mail_location) that an account may override (`apop
// user mailbox`), in the spirit of Dovecot's mail_location:
//
//   maildir:%d/mail/%u     the default: DATA/mail/USER/ is a Maildir
//   mbox:/var/mail/%u      the mbox file /var/mail/USER (store/mbox.hpp)
//
// FORMAT:PATH, FORMAT being maildir or mbox; in PATH, %u is the user name,
// %d the data directory and %% a '%'. Any other '%' sequence is an error.
// Unlike Dovecot's, an mbox location names the INBOX file itself (POP3
// serves only the INBOX), and no ":OPTION=" suffixes are read.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "pop3/interfaces.hpp"
#include "store/mbox.hpp"

namespace apop::store {

inline constexpr std::string_view kDefaultMailLocation = "maildir:%d/mail/%u";

struct MailLocation {
  enum class Format { maildir, mbox };
  Format format = Format::maildir;
  std::string path;  // the template, unexpanded
  bool operator==(const MailLocation&) const = default;
};

// Parses "maildir:PATH" or "mbox:PATH". Errc::invalid (with the reason) for
// an unknown format, an empty PATH, a bad '%' sequence, or, when
// `require_user`, a PATH without %u (one mailbox shared by every user).
Result<MailLocation> parse_mail_location(std::string_view spec, bool require_user);

// "FORMAT:PATH" again.
std::string format_mail_location(const MailLocation& loc);

// The path for `user` (which must be a plain file name: non-empty, no '/',
// not "." or ".."; else Errc::invalid).
Result<std::filesystem::path> expand_mail_location(const MailLocation& loc, std::string_view user,
                                                   const std::filesystem::path& data_dir);

// The directory every mailbox of `loc` lies beneath: the template with %d
// expanded, cut before its first other '%' sequence and at the last '/'
// before that ("maildir:%d/mail/%u" -> DATA/mail, "mbox:/var/mail/%u" ->
// /var/mail). Pure.
std::filesystem::path mail_location_root(const MailLocation& loc,
                                         const std::filesystem::path& data_dir);

// A MaildropOpener choosing per user between Maildir and mbox: the location
// the address names (the login's AuthResult::mail_location), else the one
// `per_user` returns (optional: for callers without a login, such as
// delivery; nullopt when the account has none; its errors fail the open as
// Errc::temporary), else `fallback`.
// Whether opening the Maildir DIR is quick enough to run on the event loop:
// true while cur/ and new/ together are at most kQuickMaildirDirBytes of
// directory entries (about 800 messages on ext4, 3,200 on tmpfs: listing
// them takes about a millisecond). A big maildrop's first listing takes
// hundreds of milliseconds (100,000 messages), which must not stall every
// other session: such a login runs on the auth thread pool
// (pop3::Session::blocking_step_next).
inline constexpr std::uint64_t kQuickMaildirDirBytes = 64 * 1024;
bool maildir_opens_quickly(const std::filesystem::path& dir);

class LocationOpener final : public pop3::MaildropOpener {
 public:
  using Lookup = std::function<Result<std::optional<std::string>>(std::string_view user)>;
  LocationOpener(MailLocation fallback, std::filesystem::path data_dir, MboxOptions mbox,
                 Lookup per_user = {});
  Result<std::unique_ptr<pop3::Maildrop>> open(const pop3::MailboxAddress& where) override;
  // A small Maildir (its lock is taken or refused at once, and its listing
  // is short: maildir_opens_quickly); an mbox may wait for its lock
  // (MboxOptions::lock). Resolves the location like open().
  bool opens_without_waiting(const pop3::MailboxAddress& where) override;
  // The location and path that open(where) uses.
  Result<std::pair<MailLocation, std::filesystem::path>> resolve(
      const pop3::MailboxAddress& where) const;

 private:
  MailLocation fallback_;
  std::filesystem::path data_dir_;
  MboxOptions mbox_;
  Lookup per_user_;
};

}  // namespace apop::store
