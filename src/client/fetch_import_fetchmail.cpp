// The .fetchmailrc parser of `apop fetch import-config` (fetchmail(1), "THE
// RUN CONTROL FILE"; client/fetch_import.hpp has the contract).
//
// Grammar as fetchmail's lexer and parser take it: tokens are separated by
// white space and the punctuation ',', ':' and ';'; '#' at the start of a
// token comments out the rest of the line; "..." and '...' are strings with
// C escapes (\n \t \r \b \f \\ \" \' \xHH \OOO); the noise words `and with
// has wants options here there` are ignored. Statements: `set ...`,
// `defaults OPTIONS`, `poll|skip|server HOST OPTIONS`, where OPTIONS are
// server options and `user NAME` clauses, each starting one account. A flag
// negates with a `no ` before it (or "no" run into it: `nokeep`).
#include <algorithm>
#include <array>
#include <limits>
#include <map>
#include <set>

#include "client/fetch_import.hpp"
#include "common/limits.hpp"
#include "common/parse.hpp"
#include "common/text.hpp"

namespace apop::client {
namespace {

struct Token {
  std::string text;
  bool quoted = false;
  std::size_t line = 1;
  std::size_t offset = 0;  // of the text (inside the quotes when quoted)
  std::size_t length = 0;
};

bool is_separator(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == ',' ||
         c == ':' || c == ';';
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Tokens of `text`; `unterminated` is set (with its line) when a string runs
// to the end of the file.
std::vector<Token> tokenize(std::string_view text, std::size_t& unterminated_line) {
  std::vector<Token> out;
  std::size_t i = 0, line = 1;
  unterminated_line = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '\n') {
      ++line;
      ++i;
      continue;
    }
    if (is_separator(c)) {
      ++i;
      continue;
    }
    if (c == '#') {
      while (i < text.size() && text[i] != '\n') ++i;
      continue;
    }
    Token t;
    t.line = line;
    if (c == '"' || c == '\'') {
      t.quoted = true;
      const char q = c;
      t.offset = ++i;
      bool closed = false;
      while (i < text.size()) {
        char d = text[i];
        if (d == q) {
          closed = true;
          break;
        }
        if (d == '\n') ++line;
        if (d != '\\' || i + 1 >= text.size()) {
          t.text += d;
          ++i;
          continue;
        }
        d = text[++i];  // the escaped character
        ++i;
        switch (d) {
          case 'n':
            t.text += '\n';
            break;
          case 't':
            t.text += '\t';
            break;
          case 'r':
            t.text += '\r';
            break;
          case 'b':
            t.text += '\b';
            break;
          case 'f':
            t.text += '\f';
            break;
          case 'x': {
            int v = 0, n = 0;
            while (n < 2 && i < text.size() && hex_digit(text[i]) >= 0)
              v = v * 16 + hex_digit(text[i++]), ++n;
            t.text += n ? static_cast<char>(v) : 'x';
            break;
          }
          default:
            if (d >= '0' && d <= '7') {
              int v = d - '0', n = 1;
              while (n < 3 && i < text.size() && text[i] >= '0' && text[i] <= '7')
                v = v * 8 + (text[i++] - '0'), ++n;
              t.text += static_cast<char>(v & 0xFF);
            } else {
              if (d == '\n') ++line;
              t.text += d;
            }
        }
      }
      t.length = i - t.offset;
      if (!closed) {
        unterminated_line = t.line;
        return out;
      }
      ++i;  // the closing quote
    } else {
      t.offset = i;
      while (i < text.size() && !is_separator(text[i]) && text[i] != '"' && text[i] != '\'') ++i;
      t.text = std::string(text.substr(t.offset, i - t.offset));
      t.length = i - t.offset;
    }
    out.push_back(std::move(t));
  }
  return out;
}

// How an option takes its arguments.
enum class Arity { flag, value, list, none };

struct Keyword {
  std::string_view name;
  Arity arity;
};

// Every option keyword of fetchmail 6.4 (rcfile_l.l) apop knows about, with
// the number of values it takes, so that an option not carried over is
// skipped whole. Synonyms are mapped by canonical() below.
constexpr std::array kKeywords = {
    // server options
    Keyword{"via", Arity::value},
    Keyword{"protocol", Arity::value},
    Keyword{"port", Arity::value},
    Keyword{"auth", Arity::value},
    Keyword{"timeout", Arity::value},
    Keyword{"envelope", Arity::value},
    Keyword{"qvirtual", Arity::value},
    Keyword{"aka", Arity::list},
    Keyword{"localdomains", Arity::list},
    Keyword{"interface", Arity::value},
    Keyword{"monitor", Arity::value},
    Keyword{"plugin", Arity::value},
    Keyword{"plugout", Arity::value},
    Keyword{"dns", Arity::flag},
    Keyword{"checkalias", Arity::flag},
    Keyword{"uidl", Arity::flag},
    Keyword{"interval", Arity::value},
    Keyword{"tracepolls", Arity::flag},
    Keyword{"principal", Arity::value},
    Keyword{"esmtpname", Arity::value},
    Keyword{"esmtppassword", Arity::value},
    Keyword{"bad-header", Arity::value},
    Keyword{"retrieve-error", Arity::value},
    // user options
    Keyword{"user", Arity::value},
    Keyword{"is", Arity::list},
    Keyword{"password", Arity::value},
    Keyword{"ssl", Arity::flag},
    Keyword{"sslproto", Arity::value},
    Keyword{"sslcertck", Arity::flag},
    Keyword{"sslcertfile", Arity::value},
    Keyword{"sslcertpath", Arity::value},
    Keyword{"sslcommonname", Arity::value},
    Keyword{"sslfingerprint", Arity::value},
    Keyword{"sslcert", Arity::value},
    Keyword{"sslkey", Arity::value},
    Keyword{"folder", Arity::list},
    Keyword{"smtphost", Arity::list},
    Keyword{"fetchdomains", Arity::list},
    Keyword{"smtpaddress", Arity::value},
    Keyword{"smtpname", Arity::value},
    Keyword{"antispam", Arity::list},
    Keyword{"mda", Arity::value},
    Keyword{"bsmtp", Arity::value},
    Keyword{"lmtp", Arity::flag},
    Keyword{"preconnect", Arity::value},
    Keyword{"postconnect", Arity::value},
    Keyword{"keep", Arity::flag},
    Keyword{"flush", Arity::flag},
    Keyword{"limitflush", Arity::flag},
    Keyword{"fetchall", Arity::flag},
    Keyword{"rewrite", Arity::flag},
    Keyword{"forcecr", Arity::flag},
    Keyword{"stripcr", Arity::flag},
    Keyword{"pass8bits", Arity::flag},
    Keyword{"dropstatus", Arity::flag},
    Keyword{"dropdelivered", Arity::flag},
    Keyword{"mimedecode", Arity::flag},
    Keyword{"idle", Arity::flag},
    Keyword{"limit", Arity::value},
    Keyword{"warnings", Arity::value},
    Keyword{"batchlimit", Arity::value},
    Keyword{"fetchlimit", Arity::value},
    Keyword{"fetchsizelimit", Arity::value},
    Keyword{"fastuidl", Arity::value},
    Keyword{"expunge", Arity::value},
    Keyword{"properties", Arity::value},
    Keyword{"showdots", Arity::flag},
    // statements and noise
    Keyword{"poll", Arity::none},
    Keyword{"skip", Arity::none},
    Keyword{"defaults", Arity::none},
    Keyword{"set", Arity::none},
    Keyword{"no", Arity::none},
};

constexpr std::array<std::string_view, 7> kNoise = {"and",     "with", "has",  "wants",
                                                    "options", "here", "there"};

// The canonical spelling of a keyword (synonyms of fetchmail's lexer).
std::string canonical(std::string_view word) {
  std::string w = ascii_lowercase(word);
  if (w == "server") return "poll";
  if (w == "proto") return "protocol";
  if (w == "service") return "port";
  if (w == "authenticate") return "auth";
  if (w == "username") return "user";
  if (w == "to") return "is";
  if (w == "pass" || w == "passwd") return "password";
  if (w == "folders") return "folder";
  if (w == "smtphosts") return "smtphost";
  if (w == "fetchdomain") return "fetchdomains";
  return w;
}

const Keyword* find_keyword(const std::string& canon) {
  for (const auto& k : kKeywords)
    if (k.name == canon) return &k;
  return nullptr;
}

bool is_noise(const Token& t) {
  if (t.quoted) return false;
  const std::string w = ascii_lowercase(t.text);
  return std::find(kNoise.begin(), kNoise.end(), w) != kNoise.end();
}

// An unquoted word fetchmail reads as a keyword (so it ends a list).
bool is_keyword(const Token& t) {
  if (t.quoted) return false;
  const std::string c = canonical(t.text);
  if (find_keyword(c) != nullptr) return true;
  if (c.size() > 2 && c.compare(0, 2, "no") == 0) {
    const Keyword* k = find_keyword(c.substr(2));
    return k != nullptr && k->arity == Arity::flag;
  }
  return false;
}

bool is_statement(const Token& t) {
  if (t.quoted) return false;
  const std::string c = canonical(t.text);
  return c == "poll" || c == "skip" || c == "defaults" || c == "set";
}

// An option as given: the last value wins, as in fetchmail.
struct Given {
  bool set = false;
  std::string value;
  std::vector<std::string> list;
  bool flag = true;
  std::size_t line = 0;
  ImportResult::Span span;
};

// The options of one `defaults`, poll (server part) or user clause,
// canonical keyword -> value.
using Options = std::map<std::string, Given>;

struct UserClause {
  Options opts;
  std::size_t line = 0;
};

struct Entry {
  bool skip = false;
  std::string host;
  std::size_t line = 0;
  Options server;
  std::vector<UserClause> users;
};

class Parser {
 public:
  Parser(std::string_view text, const ImportOptions& opts) : opts_(opts) {
    toks_ = tokenize(text, unterminated_);
  }

  ImportResult run() {
    while (i_ < toks_.size()) {
      const Token& t = toks_[i_];
      if (is_noise(t)) {
        ++i_;
        continue;
      }
      const std::string c = t.quoted ? std::string() : canonical(t.text);
      if (c == "set") {
        ++i_;
        parse_set(t.line);
      } else if (c == "defaults") {
        ++i_;
        Entry e;
        if (parse_options(e, t.line)) {
          defaults_ = e.server;
          for (auto& u : e.users)
            for (auto& [k, v] : u.opts) defaults_[k] = v;
        }
      } else if (c == "poll" || c == "skip") {
        ++i_;
        Entry e;
        e.skip = c == "skip";
        e.line = t.line;
        if (i_ >= toks_.size() || (!toks_[i_].quoted && is_keyword(toks_[i_]))) {
          syntax(t.line, c, "no server name after it");
          continue;
        }
        e.host = toks_[i_++].text;
        if (parse_options(e, t.line)) entries_.push_back(std::move(e));
      } else {
        syntax(t.line, t.quoted ? "string" : ascii_lowercase(t.text),
               "expected `poll`, `skip`, `defaults` or `set`");
        ++i_;
        while (i_ < toks_.size() && !is_statement(toks_[i_])) ++i_;
      }
    }
    if (unterminated_ != 0) syntax(unterminated_, "string", "a quoted string is not closed");
    for (const auto& e : entries_) make_accounts(e);
    return std::move(r_);
  }

 private:
  std::string where(std::size_t line) const {
    return opts_.source_name + ":" + std::to_string(line);
  }

  void skipped(std::size_t line, std::string option, std::string reason,
               std::size_t index = Skipped::kNone, std::string account = {}) {
    r_.skipped.push_back(
        {where(line), std::move(account), std::move(option), std::move(reason), index});
  }

  void syntax(std::size_t line, std::string what, const std::string& reason) {
    skipped(line, std::move(what), "syntax error: " + reason + "; the statement is not imported");
  }

  void parse_set(std::size_t line) {
    if (i_ >= toks_.size()) return syntax(line, "set", "nothing after it");
    bool negated = false;
    Token t = toks_[i_++];
    std::string w = ascii_lowercase(t.text);
    if (!t.quoted && w == "no" && i_ < toks_.size()) {
      negated = true;
      t = toks_[i_++];
      w = ascii_lowercase(t.text);
    }
    static constexpr std::array<std::string_view, 6> kWithValue = {
        "daemon", "logfile", "idfile", "postmaster", "properties", "pidfile"};
    const bool has_value =
        !negated && std::find(kWithValue.begin(), kWithValue.end(), w) != kWithValue.end();
    std::string value;
    if (has_value) {
      if (i_ >= toks_.size()) return syntax(line, "set " + w, "no value after it");
      value = toks_[i_++].text;
    }
    if (w == "daemon") {
      auto n = parse_decimal(value, {.max = 10ull * 365 * 86400, .max_digits = 12});
      if (!n) return syntax(line, "set daemon", "not a number of seconds");
      daemon_ = *n;
      return;
    }
    std::string reason;
    if (w == "logfile" || w == "syslog")
      reason = "apop fetch logs to standard error (the journal under systemd)";
    else if (w == "idfile")
      reason =
          "fetchmail's record of seen messages is not imported: accounts with keep = true "
          "download the messages still on the server once more";
    else if (w == "postmaster" || w == "bouncemail" || w == "spambounce" || w == "softbounce")
      reason = "apop fetch sends no bounces: a rejected message stays on the server (on_reject)";
    else if (w == "invisible")
      reason = "apop fetch adds no Received header in any case";
    else
      reason = "not supported by apop fetch";
    skipped(line, "set " + std::string(negated ? "no " : "") + (t.quoted ? "string" : w), reason);
  }

  // Options until the next statement, into e.server (before the first
  // `user`) and e.users. false on a syntax error (reported; the rest of the
  // statement is skipped).
  bool parse_options(Entry& e, std::size_t stmt_line) {
    Options* cur = &e.server;
    while (i_ < toks_.size() && !is_statement(toks_[i_])) {
      const Token t = toks_[i_++];
      if (is_noise(t)) continue;
      if (t.quoted)
        return fail(stmt_line, t.line, "string", "a value where an option was expected");
      std::string c = canonical(t.text);
      bool negated = false;
      if (c == "no") {
        if (i_ >= toks_.size()) return fail(stmt_line, t.line, "no", "nothing after it");
        c = canonical(toks_[i_++].text);
        negated = true;
      } else if (find_keyword(c) == nullptr && c.size() > 2 && c.compare(0, 2, "no") == 0) {
        c = c.substr(2);
        negated = true;
      }
      const Keyword* k = find_keyword(c);
      if (k == nullptr || k->arity == Arity::none)
        return fail(stmt_line, t.line, c, "unknown keyword");
      if (negated && k->arity != Arity::flag && c != "envelope")
        return fail(stmt_line, t.line, "no " + c, "this option cannot be negated");
      Given g;
      g.set = true;
      g.line = t.line;
      g.flag = !negated;
      if (negated) {
        // `no envelope` and the flags take no value.
      } else if (k->arity == Arity::value) {
        if (i_ >= toks_.size()) return fail(stmt_line, t.line, c, "no value after it");
        // `envelope [N] "Header"`: an optional count first.
        if (c == "envelope" && i_ + 1 < toks_.size() && !toks_[i_].quoted &&
            parse_decimal(toks_[i_].text, {.max_digits = 9}))
          ++i_;
        const Token& v = toks_[i_++];
        g.value = v.text;
        g.span = {v.offset, v.length};
        if (c == "password" || c == "esmtppassword") r_.secret_spans.push_back(g.span);
      } else if (k->arity == Arity::list) {
        while (i_ < toks_.size() && (toks_[i_].quoted || !is_keyword(toks_[i_]))) {
          if (is_noise(toks_[i_])) {
            ++i_;
            continue;
          }
          g.list.push_back(toks_[i_++].text);
        }
        if (g.list.empty()) return fail(stmt_line, t.line, c, "no value after it");
      }
      if (c == "user") {
        e.users.push_back({});
        e.users.back().line = t.line;
        cur = &e.users.back().opts;
      }
      (*cur)[c] = std::move(g);
    }
    return true;
  }

  bool fail(std::size_t stmt_line, std::size_t line, const std::string& what,
            const std::string& why) {
    syntax(line, what, why + " (statement of line " + std::to_string(stmt_line) + ")");
    while (i_ < toks_.size() && !is_statement(toks_[i_])) ++i_;
    return false;
  }

  void make_accounts(const Entry& e) {
    if (e.users.empty()) {
      make_account(e, UserClause{{}, e.line});
    } else {
      for (const auto& u : e.users) make_account(e, u);
    }
  }

  // defaults < server options < user options.
  static const Given* get(const std::vector<const Options*>& layers, const std::string& key) {
    for (const Options* o : layers) {
      auto it = o->find(key);
      if (it != o->end()) return &it->second;
    }
    return nullptr;
  }

  void make_account(const Entry& e, const UserClause& u) {
    const std::vector<const Options*> layers = {&u.opts, &e.server, &defaults_};
    auto opt = [&](const char* key) { return get(layers, key); };
    auto flag = [&](const char* key) -> std::optional<bool> {
      const Given* g = opt(key);
      return g ? std::optional<bool>(g->flag) : std::nullopt;
    };
    ImportedAccount a;
    a.source = where(u.line);
    a.host = e.host;  // the account's name: the poll entry's, even with `via`
    const Given* via = opt("via");
    const Given* user = opt("user");
    a.user = user ? user->value : opts_.local_user;
    const std::string label = (a.user.empty() ? std::string("?") : a.user) + "@" + e.host;

    auto drop = [&](std::size_t line, std::string option, std::string why) {
      skipped(line, std::move(option), "account not imported: " + why, Skipped::kNone, label);
    };
    if (e.skip)
      return drop(e.line, "skip",
                  "fetchmail polls a `skip` entry only when named on its command line");
    if (a.user.empty()) return drop(u.line, "user", "no user name and no local user to default to");
    if (a.host.empty() || (via && via->value.empty()))
      return drop(e.line, "poll", "empty server name");

    std::vector<Skipped> notes;  // about this account, once it is imported
    auto note = [&](const Given* g, std::string option, std::string why) {
      notes.push_back({where(g ? g->line : u.line), {}, std::move(option), std::move(why)});
    };

    // Protocol and authentication.
    if (const Given* p = opt("protocol")) {
      const std::string proto = ascii_lowercase(p->value);
      if (proto == "apop") {
        a.auth = "apop";
      } else if (proto == "auto") {
        note(p, "protocol",
             "auto (IMAP first, then POP3) is imported as POP3: apop fetch speaks POP3 only");
      } else if (proto != "pop3") {
        return drop(p->line, "protocol", "protocol " + proto + ": apop fetch speaks POP3 only");
      }
    }
    if (const Given* au = opt("auth")) {
      const std::string m = ascii_lowercase(au->value);
      if (m == "password") {
        if (a.auth.empty()) a.auth = "user";
      } else if (m == "apop" || m == "cram-md5" || m == "oauthbearer" || m == "xoauth2") {
        a.auth = m;
      } else if (m != "any") {
        note(au, "auth", "auth " + m + " is not supported by apop fetch; auth = \"auto\" is used");
      }
    }
    const Given* port = opt("port");
    std::string port_text;
    if (port) {
      if (auto n = parse_decimal(port->value, {.max = 65535, .max_digits = 5}); n && *n != 0)
        port_text = std::to_string(*n);
      else
        note(port, "port",
             "not a port number (a service name?); the protocol's default port is used");
    }

    // TLS.
    const bool ssl = flag("ssl").value_or(false);
    a.url = pop3_url(ssl, a.user, via ? via->value : a.host, port_text);
    if (const Given* sp = opt("sslproto")) {
      if (ssl)
        note(sp, "sslproto",
             "apop fetch negotiates TLS 1.2 or later; the setting is not carried over");
      else if (sp->value.empty())
        note(sp, "sslproto",
             "an empty sslproto disables STARTTLS in fetchmail; apop fetch uses it when "
             "offered (tls = auto)");
      else
        a.tls = "starttls";  // fetchmail 6.4: a TLS sslproto without ssl requires STARTTLS
    }
    if (auto ck = flag("sslcertck"); ck && !*ck)
      note(opt("sslcertck"), "no sslcertck", "apop fetch always verifies the server certificate");
    if (const Given* cf = opt("sslcertfile")) a.ca_file = cf->value;
    for (const char* k : {"sslcertpath", "sslcommonname", "sslfingerprint", "sslcert", "sslkey"})
      if (const Given* g = opt(k))
        note(g, k,
             std::string(k) == "sslcertpath"
                 ? "ca_file takes one PEM file, not a hashed directory; the system CAs are used"
                 : "not supported by apop fetch");

    // Secret.
    if (const Given* pw = opt("password")) a.password = pw->value;

    // Mode and limits.
    const bool keep = flag("keep").value_or(false);
    a.keep = keep;
    if (keep)
      note(opt("keep"), "keep",
           "fetchmail's record of seen messages (.fetchids) is not imported: the messages now on "
           "the server are downloaded once more at the first poll");
    if (auto fa = flag("fetchall"); fa && *fa && keep)
      note(opt("fetchall"), "fetchall",
           "with keep, apop fetch downloads only messages not seen before");
    if (auto fl = flag("flush"); fl && *fl && keep)
      note(opt("flush"), "flush", "with keep = true nothing is deleted from the server");
    constexpr DecimalRules kCount{.max = 1'000'000'000'000ull, .max_digits = 13};
    if (const Given* l = opt("limit")) {
      if (auto n = parse_decimal(l->value, kCount)) {
        if (*n > 0) a.max_message_size = *n;
      } else {
        note(l, "limit", "not a number");
      }
    }
    if (const Given* l = opt("fetchlimit")) {
      if (auto n = parse_decimal(l->value, kCount)) {
        if (*n > 0) a.fetch_limit = *n;
      } else {
        note(l, "fetchlimit", "not a number");
      }
    }
    const Given* interval = opt("interval");
    std::optional<std::uint64_t> every;
    if (interval) {
      every = parse_decimal(interval->value, {.max = 1'000'000, .max_digits = 7});
      if (!every || *every == 0) note(interval, "interval", "not a positive number");
    }
    if (daemon_ && *daemon_ > 0) {
      a.poll_interval = *daemon_ * (every && *every > 0 ? *every : 1);
    } else if (interval) {
      note(interval, "interval", "counts `set daemon` cycles, and there is no `set daemon`");
    }

    // Delivery.
    std::string local = opts_.local_user;
    if (const Given* is = opt("is")) {
      if (!is->list.empty()) local = is->list.front();
      if (local == "*" || local.find('=') != std::string::npos)
        return drop(is->line, "is",
                    "multidrop (several recipients in one mailbox) is not supported");
      if (is->list.size() > 1)
        note(is, "is", "multidrop (several local names) is not supported; the first name is used");
    }
    std::string deliver_to = local;
    if (const Given* n = opt("smtpname"))
      deliver_to = n->value;
    else if (const Given* d = opt("smtpaddress"))
      deliver_to = local + "@" + d->value;
    const Given* mda = opt("mda");
    const Given* smtphost = opt("smtphost");
    const bool lmtp = flag("lmtp").value_or(false);
    if (const Given* b = opt("bsmtp"))
      return drop(b->line, "bsmtp", "writing BSMTP batch files is not supported");
    if (mda) {
      a.to = "mda:" + mda->value;
      if (mda->value.find('%') != std::string::npos)
        note(mda, "mda",
             "fetchmail's %T %F %s placeholders are not expanded by apop fetch; edit the "
             "command (the message is on its standard input)");
      if (smtphost) note(smtphost, "smtphost", "mda takes precedence, as in fetchmail");
    } else {
      std::string h = smtphost ? smtphost->list.front() : "localhost";
      if (smtphost && smtphost->list.size() > 1)
        note(smtphost, "smtphost", "only the first host is used (no fallback to the others)");
      std::string hport;
      if (!h.empty() && h.front() != '/') {
        if (auto slash = h.rfind('/'); slash != std::string::npos) {
          hport = h.substr(slash + 1);
          h.resize(slash);
          if (!parse_decimal(hport, {.max = 65535, .max_digits = 5}))
            return drop(smtphost->line, "smtphost", "not a HOST/PORT");
        }
      }
      if (lmtp) {
        a.to = !h.empty() && h.front() == '/' ? "lmtp:unix:" + h
                                              : "lmtp:" + h + ":" + (hport.empty() ? "24" : hport);
      } else {
        if (!h.empty() && h.front() == '/')
          return drop(smtphost->line, "smtphost",
                      "SMTP over a local socket is not supported (lmtp is)");
        a.to = "smtp:" + h + ":" + (hport.empty() ? "25" : hport);
      }
      if (deliver_to.empty())
        return drop(u.line, "is", "no local user to deliver to (add `is NAME here`)");
      a.deliver_to = deliver_to;
    }

    // Options with nothing to carry them over to.
    for (const Options* o : std::array<const Options*, 3>{&defaults_, &e.server, &u.opts}) {
      for (const auto& [k, g] : *o) {
        if (handled(k) || !g.set) continue;
        if (o != &u.opts && u.opts.count(k) != 0) continue;  // reported once, at the user
        if (o == &defaults_ && e.server.count(k) != 0) continue;
        if (o == &defaults_) {
          // Reported once, as an option of the `defaults` line.
          if (reported_defaults_.insert(k).second)
            skipped(g.line, (g.flag ? "" : "no ") + k, reason_for(k));
          continue;
        }
        note(&g, (g.flag ? "" : "no ") + k, reason_for(k));
      }
    }

    const std::size_t index = r_.accounts.size();
    r_.accounts.push_back(std::move(a));
    for (auto& n : notes) {
      n.index = index;
      r_.skipped.push_back(std::move(n));
    }
  }

  static bool handled(const std::string& k) {
    static constexpr std::array<std::string_view, 22> kHandled = {
        "via",         "protocol",      "auth",           "port",
        "ssl",         "sslproto",      "sslcertck",      "sslcertfile",
        "sslcertpath", "sslcommonname", "sslfingerprint", "sslcert",
        "sslkey",      "password",      "keep",           "fetchall",
        "flush",       "limit",         "fetchlimit",     "interval",
        "is",          "user"};
    static constexpr std::array<std::string_view, 6> kDelivery = {
        "smtpname", "smtpaddress", "mda", "smtphost", "lmtp", "bsmtp"};
    return std::find(kHandled.begin(), kHandled.end(), k) != kHandled.end() ||
           std::find(kDelivery.begin(), kDelivery.end(), k) != kDelivery.end() || k == "uidl";
  }

  static std::string reason_for(const std::string& k) {
    if (k == "folder") return "POP3 has one mailbox; folders are IMAP";
    if (k == "timeout")
      return "not a configuration key; apop fetch waits 60 s per network operation";
    if (k == "esmtppassword" || k == "esmtpname")
      return "apop fetch does not authenticate to the SMTP server";
    if (k == "mimedecode" || k == "rewrite" || k == "stripcr" || k == "forcecr" ||
        k == "pass8bits" || k == "dropstatus" || k == "dropdelivered")
      return "apop fetch delivers messages unchanged";
    if (k == "preconnect" || k == "postconnect" || k == "plugin" || k == "plugout")
      return "apop fetch runs no commands around a poll";
    if (k == "envelope" || k == "qvirtual" || k == "aka" || k == "localdomains" || k == "dns" ||
        k == "checkalias" || k == "fetchdomains")
      return "multidrop options have no equivalent";
    if (k == "idle") return "POP3 has no IDLE";
    if (k == "expunge" || k == "batchlimit" || k == "fetchsizelimit" || k == "fastuidl" ||
        k == "limitflush" || k == "warnings")
      return "no equivalent in apop fetch";
    if (k == "antispam") return "a 5xx from lmtp:/smtp: is handled by on_reject (default keep)";
    return "not supported by apop fetch";
  }

  const ImportOptions& opts_;
  std::vector<Token> toks_;
  std::size_t unterminated_ = 0;
  std::size_t i_ = 0;
  Options defaults_;
  std::set<std::string> reported_defaults_;
  std::vector<Entry> entries_;
  std::optional<std::uint64_t> daemon_;
  ImportResult r_;
};

}  // namespace

Result<ImportResult> parse_fetchmailrc(std::string_view text, const ImportOptions& opts) {
  if (text.size() > limits::kMaxImportRcFile)
    return make_error(Errc::invalid, "larger than " + std::to_string(limits::kMaxImportRcFile) +
                                         " bytes; not a .fetchmailrc");
  return Parser(text, opts).run();
}

}  // namespace apop::client
