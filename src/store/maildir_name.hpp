// Pure helpers for Maildir file names (no I/O). Used by maildir.cpp and
// exposed for tests.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace apop::store {

// The base name: the part of a Maildir file name before the first ':' (the
// ":2,FLAGS" info suffix is dropped). "a,S=1:2,S" -> "a,S=1".
std::string_view maildir_base_name(std::string_view filename);

// The value of the ",<key>=<digits>" field of a base name (fields are the
// comma-separated parts after the first one), or nullopt when absent or
// malformed (no digits, non-digits, overflow). key is 'S' or 'W'.
std::optional<std::uint64_t> maildir_name_field(std::string_view base, char key);

// The leading decimal TIME of a base name (saturating), 0 when none.
std::uint64_t maildir_name_time(std::string_view base);

// Delivery order of two Maildir base names: runs of digits compare as
// numbers (so "T.M98765P1" comes before "T.M153961P1": the microseconds in
// Dovecot/Postfix names have no leading zeros), everything else bytewise.
bool maildir_name_less(std::string_view a, std::string_view b);

// True when s is a valid POP3 unique-id: 1..70 chars, all in 0x21..0x7E
// (RFC 1939 §7).
bool valid_uidl(std::string_view s);

// "H" + the first 40 hex digits of SHA-1(data): a valid UIDL of 41 chars.
std::string hashed_uidl(std::string_view data);

// The UIDL of a base name: the base name without its ",S=..." and ",W=..."
// fields when that is a valid UIDL, else hashed_uidl(base).
std::string maildir_uidl(std::string_view base);

// Escapes a host name for the HOST part of a unique name: '/' -> "\057",
// ':' -> "\072", ',' -> "\054" (so the S=/W= fields stay parseable).
std::string escape_maildir_host(std::string_view host);

}  // namespace apop::store
