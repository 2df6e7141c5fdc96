// UIDL compatibility: the IDs clients already saw on the old server.
//
// The map file MAILDIR/apop-uidl (ours) pins the UIDL of messages by their
// Maildir base name (the file name before ':'). Written by `apop migrate`
// (the source server's UIDLs) and `apop uidl import` (from Dovecot's
// dovecot-uidlist); read by MaildirOpener at every session start, which uses
// a pinned UIDL instead of the default one. Messages without an entry (new
// mail) get the default UIDL. Format, one entry per line:
//     BASENAME SP UIDL LF
// BASENAME: 1..255 octets of 0x21..0x7E without '/' or ':'; UIDL: a valid
// POP3 unique-id (1..70 octets of 0x21..0x7E, RFC 1939 §7). Lines starting
// with '#' are comments. A later line for the same base name wins. Lines
// that do not parse are ignored (counted), and so is a last line without its
// LF (an append cut by a crash), so appending is always safe.
//
// dovecot-uidlist (Dovecot's Maildir UID list): version 3,
//     3 V<uidvalidity> N<nextuid> G<guid> [other header fields]
//     <uid> [<key><value> ...] :<filename>
// where the record fields are extension keys (W vsize, S size, G guid,
// P pop3 uidl, O pop3 order, ...); and version 1 (Courier compatible),
//     1 <uidvalidity> <nextuid>
//     <uid> <filename>
// Dovecot's POP3 UIDL of a message is the record's P field when present
// (pop3_save_uidl), else pop3_uidl_format expanded; see dovecot_pop3_uidl.
//
// All functions are pure except load/append.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.hpp"

namespace apop::store {

inline constexpr std::string_view kUidlMapFile = "apop-uidl";

struct UidlMap {
  std::unordered_map<std::string, std::string> by_base;
  std::size_t bad_lines = 0;
};

bool valid_map_base(std::string_view base);
UidlMap parse_uidl_map(std::string_view text);
// "BASE UIDL\n"; both must be valid (checked by the caller).
std::string format_uidl_map_line(std::string_view base, std::string_view uidl);

// Reads MAILDIR/apop-uidl; a missing file is an empty map. Errc::temporary on
// I/O errors, Errc::invalid when larger than limits::kMaxUidlMapFile.
Result<UidlMap> load_uidl_map(const std::filesystem::path& maildir);
// Appends entries (O_APPEND, created 0600) and fsyncs the file (and the
// Maildir directory when the file was created). Errc::invalid for an invalid
// base or UIDL (nothing written); Errc::temporary on I/O errors.
Result<void> append_uidl_map(const std::filesystem::path& maildir,
                             const std::vector<std::pair<std::string, std::string>>& entries);

struct DovecotUidlist {
  unsigned version = 0;
  std::uint32_t uid_validity = 0;
  std::uint32_t next_uid = 0;
  struct Record {
    std::uint32_t uid = 0;
    std::string filename;                  // as in the file
    std::string base;                      // before the first ':'
    std::optional<std::string> pop3_uidl;  // the P extension field
  };
  std::vector<Record> records;
};

// Errc::invalid (with the line number) for a file Dovecot itself would call
// corrupted: bad header, uid 0, UIDs not ascending, a record without a
// file name or with '/' in it.
Result<DovecotUidlist> parse_dovecot_uidlist(std::string_view text);

// Expands a Dovecot pop3_uidl_format for one record: %u (uid), %v
// (uidvalidity), %f (file base name), %% ; each with an optional zero-padded
// width and X/x (hex) modifier, as Dovecot's "%08Xu%08Xv" default; long forms
// %{uid}, %{uidvalidity}, %{filename}. %m (header MD5) and %g (GUID) need
// the message or index and are refused: Errc::invalid for them and for
// anything else unknown.
Result<std::string> expand_pop3_uidl_format(std::string_view format, std::uint32_t uid,
                                            std::uint32_t uid_validity, std::string_view base);

// Dovecot's default pop3_uidl_format.
inline constexpr std::string_view kDovecotDefaultUidlFormat = "%08Xu%08Xv";

}  // namespace apop::store
