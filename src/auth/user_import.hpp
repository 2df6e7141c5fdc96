// Parsers for other servers' user databases (`apop user import`). Pure
// functions over the file's text: no I/O, no store access, so they are unit
// tested and fuzzed alone (fuzz/fuzz_dovecot_passwd.cpp).
//
// Formats accepted (documented in docs/migration.md):
//
//  dovecot-passwd: Dovecot's passwd-file, one account per line,
//      user:password[:uid:gid:gecos:home:shell:extra_fields]
//    '#' comment lines and blank lines are skipped. The password field is
//    "{SCHEME}data"; without a scheme it is Dovecot's passwd-file default,
//    CRYPT. Outcomes per line:
//      {PLAIN} {CLEAR} {CLEARTEXT} (and .B64/.BASE64/.HEX)  -> the password
//          itself: every mechanism (APOP, CRAM-MD5, SCRAM, USER/PASS) works.
//      hashes apop can verify (foreign_hash.hpp)           -> a login
//          password for USER/PASS, PLAIN and LOGIN only, upgraded on the
//          first login over TLS.
//      {CRAM-MD5}, {DIGEST-MD5}, {ARGON2ID}, ... , an empty password, the
//          "nologin" or "nopassword" extra fields, a user name apop does not
//          accept, a duplicate of an earlier line    -> skipped, with why.
//
//  popauth: the text form of the APOP databases of GNU Mailutils (the input
//      of `popauth -c` and the output of `popauth -l`: "user password", or
//      "user: password" with --compatibility) and qpopper (its popauth DBM
//      dumped to the same "user secret" lines). '#' comments and blank lines
//      are skipped; the user is the first word, the secret the rest of the
//      line with surrounding blanks removed (Mailutils' own rule). Secrets
//      are plaintext APOP secrets: every mechanism works.
//
// Secrets: a line's secret is kept only in ImportLine::secret (wiped by its
// destructor) and never in `reason`.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace apop::auth {

struct ImportLine {
  enum class Kind {
    password,  // secret: the plaintext password
    hash,      // secret: a normalised foreign hash ("{SHA512-CRYPT}$6$...")
    skip,      // reason says why
  };
  std::size_t line = 0;  // 1-based line number in the file
  std::string user;      // empty when the line has none
  Kind kind = Kind::skip;
  std::string scheme;  // the source scheme ("PLAIN", "SHA512-CRYPT", "popauth")
  std::string secret;
  std::string reason;
  ImportLine() = default;
  ImportLine(ImportLine&&) = default;
  ImportLine& operator=(ImportLine&&) = default;
  ImportLine(const ImportLine&) = delete;
  ImportLine& operator=(const ImportLine&) = delete;
  ~ImportLine();
};

std::vector<ImportLine> parse_dovecot_passwd(std::string_view text);
std::vector<ImportLine> parse_popauth(std::string_view text);

}  // namespace apop::auth
