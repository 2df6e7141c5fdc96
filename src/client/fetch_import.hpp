// `apop fetch import-config` (issue 20): existing fetchmail and getmail
// setups turned into the `apop fetch --config` TOML (docs/fetch.md, "Moving
// from fetchmail or getmail"). I/O-free: the rc files' bytes in, accounts and
// a report out, and the TOML text from the accounts; the CLI reads the files
// and writes the secrets (src/cli/cmd_fetch_import.cpp).
//
// Contract on secrets: a password found inline in an rc file is kept only in
// ImportedAccount::password, for the caller to store in a password_file; it
// is never copied into any other field, into the report (Skipped) or into
// the TOML text (render_toml does not read it). What the report says does
// not depend on a secret's value (fuzz/fuzz_fetchmailrc.cpp checks this by
// parsing again with every secret's bytes replaced).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace apop::client {

// One account of the configuration schema (docs/fetch.md). Empty strings and
// unset optionals are keys not written (the reader's defaults apply).
struct ImportedAccount {
  std::string name;  // unique, [A-Za-z0-9._-]; assigned by finish_import()
  std::string url;   // pop3[s]://USER@HOST[:PORT], USER percent-encoded
  std::string auth;  // auto apop cram-md5 user xoauth2 oauthbearer ...
  std::string tls;   // implicit starttls auto none
  std::string ca_file;
  std::string password_file;                  // set by the caller (or from the rc file)
  std::vector<std::string> password_command;  // argv, run without a shell
  std::string to;                             // maildir:DIR mbox:FILE mda:CMD lmtp:... smtp:...
  std::string deliver_to;
  std::optional<bool> keep;
  std::optional<std::uint64_t> max_message_size;  // octets; 0 is never set
  std::optional<std::uint64_t> fetch_limit;
  std::optional<std::uint64_t> poll_interval;  // seconds

  // Not written: an inline secret for the caller to move to password_file.
  std::string password;
  // Not written: where the account came from ("FILE:LINE"), the name
  // finish_import() derives from, and whether it may be used as is.
  std::string source;
  std::string name_hint;
  std::string user;
  std::string host;
};

// An option (or a whole account) not carried over, and why. `option` is an
// rc-file keyword or key. Never a secret: no field holds a password or any
// other option's value, only names (file, account, USER@HOST of an account
// not imported) and fixed text.
struct Skipped {
  std::string where;    // "FILE:LINE"
  std::string account;  // empty: not about one account (a global option)
  std::string option;
  std::string reason;
  // Index into ImportResult::accounts of the account it is about (its name
  // is filled in by finish_import()); kNone for a global option or an
  // account that was not imported (then `account` is USER@HOST).
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  std::size_t index = kNone;
};

struct ImportResult {
  std::vector<ImportedAccount> accounts;
  std::vector<Skipped> skipped;
  // Byte ranges of the secrets in the input (the inside of a quoted string),
  // for the fuzz target's check that nothing depends on their values.
  struct Span {
    std::size_t offset = 0;
    std::size_t length = 0;
  };
  std::vector<Span> secret_spans;
};

// Appends `from` (the next file's result) to `into`, keeping Skipped::index
// pointing at the same accounts.
void append_import(ImportResult& into, ImportResult from);

struct ImportOptions {
  // The name shown in Skipped::where and ImportedAccount::source.
  std::string source_name;
  // The local user fetchmail delivers to when an account names none (the
  // user running fetchmail): deliver_to of the default "smtp:localhost:25".
  std::string local_user;
};

// A .fetchmailrc (fetchmail(1) "THE RUN CONTROL FILE"): `set` statements,
// `defaults`, and `poll`/`skip` entries with server and user options, one
// account per `user` clause. Errc::invalid when the text is larger than
// limits::kMaxImportRcFile; a syntax error is reported as Skipped and the
// parser goes on at the next `poll`, `skip` or `defaults`.
Result<ImportResult> parse_fetchmailrc(std::string_view text, const ImportOptions& opts);

// A getmail6 rc file (INI: [retriever], [destination], [options]): one
// account, named after the file (opts.source_name's last component without
// a "getmailrc-" prefix or ".rc"/".conf" suffix). Errc::invalid when larger
// than limits::kMaxImportRcFile.
Result<ImportResult> parse_getmailrc(std::string_view text, const ImportOptions& opts);

// Assigns every account its unique name (from name_hint, else the host;
// user-host when several share it; "-2", "-3"... after that), moves the
// accounts beyond limits::kMaxImportAccounts and those with a value that is
// not UTF-8 to `skipped`, and puts the account names into the Skipped
// entries that refer to them. Call once, after all files.
void finish_import(ImportResult& r);

// The configuration text: a header comment naming `sources`, then one
// [[account]] table per account, in order, keys in the schema's order.
// Strings are TOML 1.0 basic strings (", \ and control characters escaped).
// Does not read ImportedAccount::password.
std::string render_toml(const std::vector<ImportedAccount>& accounts,
                        const std::vector<std::string>& sources);

// A TOML basic string for `s` (quotes included); exposed for tests.
std::string toml_quote(std::string_view s);

// "5m", "90s", "2h": seconds with the largest unit that divides them.
std::string format_interval(std::uint64_t seconds);
// "20M", "1500": octets with the largest of K, M, G that divides them.
std::string format_size(std::uint64_t octets);

// "pop3[s]://USER@HOST[:PORT]" with USER percent-encoded (RFC 3986
// unreserved characters kept) and an IPv6 HOST in brackets.
std::string pop3_url(bool implicit_tls, std::string_view user, std::string_view host,
                     std::string_view port);

// One line per entry for people: "FILE:LINE: account NAME: OPTION: REASON".
std::string format_skipped(const Skipped& s);

}  // namespace apop::client
