// The getmail6 rc parser of `apop fetch import-config` (getmail's
// "configuration" documentation; client/fetch_import.hpp has the contract).
//
// The file is Python configparser INI: "[section]" lines, "key = value" or
// "key: value" (keys case-insensitive), whole-line comments starting with
// '#' or ';', and continuation lines (indented) appended to the value with
// a line break. Values are taken as written (no %(name)s interpolation).
#include <algorithm>
#include <map>

#include "client/fetch_import.hpp"
#include "common/limits.hpp"
#include "common/parse.hpp"
#include "common/text.hpp"

namespace apop::client {
namespace {

struct Value {
  std::string text;
  std::size_t line = 0;
  // Where the value's text is: the first line's, then each continuation
  // line's (the comment and blank lines between them are not the value's).
  std::vector<ImportResult::Span> spans;
  bool used = false;
};

using Section = std::map<std::string, Value>;

std::optional<bool> parse_bool(std::string_view v) {
  const std::string s = ascii_lowercase(trim(v, " \t\r"));
  if (s == "1" || s == "yes" || s == "true" || s == "on") return true;
  if (s == "0" || s == "no" || s == "false" || s == "off") return false;
  return std::nullopt;
}

// A Python tuple (or list) of string literals: ("cmd", 'arg',). nullopt for
// anything else.
std::optional<std::vector<std::string>> parse_tuple(std::string_view v) {
  v = trim(v, " \t\r\n");
  if (v.size() < 2) return std::nullopt;
  const char open = v.front(), close = v.back();
  if (!((open == '(' && close == ')') || (open == '[' && close == ']'))) return std::nullopt;
  v = v.substr(1, v.size() - 2);
  std::vector<std::string> out;
  std::size_t i = 0;
  auto skip_ws = [&] {
    while (i < v.size() && (v[i] == ' ' || v[i] == '\t' || v[i] == '\r' || v[i] == '\n')) ++i;
  };
  for (;;) {
    skip_ws();
    if (i >= v.size()) break;
    const char q = v[i];
    if (q != '"' && q != '\'') return std::nullopt;
    ++i;
    std::string s;
    bool closed = false;
    while (i < v.size()) {
      char c = v[i++];
      if (c == q) {
        closed = true;
        break;
      }
      if (c == '\\' && i < v.size()) {
        c = v[i++];
        if (c == 'n')
          c = '\n';
        else if (c == 't')
          c = '\t';
        else if (c != '\\' && c != '\'' && c != '"')
          s += '\\';
      }
      s += c;
    }
    if (!closed) return std::nullopt;
    out.push_back(std::move(s));
    skip_ws();
    if (i >= v.size()) break;
    if (v[i] != ',') return std::nullopt;
    ++i;
  }
  if (out.empty()) return std::nullopt;
  return out;
}

// A word for `sh -c`: as is when it is plainly safe, else in single quotes.
std::string shell_quote(std::string_view s) {
  const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("-_./=+,:@%").find(c) != std::string_view::npos;
  });
  if (plain) return std::string(s);
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The account name from the file name: "getmailrc-work" and "work.rc" give
// "work"; a plain "getmailrc" gives nothing (the host is used).
std::string name_from_file(std::string_view path) {
  if (auto slash = path.rfind('/'); slash != std::string_view::npos) path.remove_prefix(slash + 1);
  for (std::string_view p : {"getmailrc-", "getmailrc_", "getmailrc."})
    if (istarts_with(path, p)) path.remove_prefix(p.size());
  for (std::string_view sfx : {".rc", ".conf", ".ini"})
    if (path.size() > sfx.size() && iequals(path.substr(path.size() - sfx.size()), sfx))
      path.remove_suffix(sfx.size());
  if (iequals(path, "getmailrc")) return {};
  return std::string(path);
}

class Parser {
 public:
  Parser(std::string_view text, const ImportOptions& opts) : text_(text), opts_(opts) {}

  ImportResult run() {
    read_ini();
    make_account();
    return std::move(r_);
  }

 private:
  std::string where(std::size_t line) const {
    return opts_.source_name + ":" + std::to_string(line);
  }

  void read_ini() {
    std::size_t pos = 0, line = 0;
    Section* cur = nullptr;
    Value* last = nullptr;  // the value a continuation line extends
    while (pos < text_.size()) {
      const std::size_t start = pos;
      std::size_t end = text_.find('\n', pos);
      if (end == std::string_view::npos) end = text_.size();
      pos = end + 1;
      ++line;
      std::string_view raw = text_.substr(start, end - start);
      if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
      const std::string_view t = trim(raw, " \t");
      if (t.empty()) continue;
      if (t.front() == '#' || t.front() == ';') continue;
      if ((raw.front() == ' ' || raw.front() == '\t') && last != nullptr) {
        last->text += "\n" + std::string(t);
        last->spans.push_back({static_cast<std::size_t>(t.data() - text_.data()), t.size()});
        continue;
      }
      last = nullptr;
      if (t.front() == '[') {
        if (t.back() != ']') {
          r_.skipped.push_back({where(line), {}, "section", "syntax error: no closing ']'"});
          cur = nullptr;
          continue;
        }
        std::string name(trim(t.substr(1, t.size() - 2), " \t"));
        cur = &sections_[ascii_lowercase(name)];
        if (!lines_.count(ascii_lowercase(name))) lines_[ascii_lowercase(name)] = line;
        continue;
      }
      const std::size_t sep = t.find_first_of("=:");
      if (sep == std::string_view::npos || cur == nullptr) {
        r_.skipped.push_back({where(line),
                              {},
                              "line",
                              cur ? "syntax error: not KEY = VALUE"
                                  : "syntax error: an option before the first [section]"});
        continue;
      }
      const std::string key = ascii_lowercase(trim(t.substr(0, sep), " \t"));
      std::string_view value = t.substr(sep + 1);
      const std::size_t lead = value.find_first_not_of(" \t");
      // An empty value is the empty view at the line's end (not a default
      // string_view, whose data() is not in text_: the span's offset).
      value = value.substr(lead == std::string_view::npos ? value.size() : lead);
      Value v;
      v.text = std::string(value);
      v.line = line;
      v.spans.push_back({static_cast<std::size_t>(value.data() - text_.data()), value.size()});
      (*cur)[key] = std::move(v);
      last = &(*cur)[key];
    }
  }

  Value* get(const std::string& section, const std::string& key) {
    auto s = sections_.find(section);
    if (s == sections_.end()) return nullptr;
    auto k = s->second.find(key);
    if (k == s->second.end()) return nullptr;
    k->second.used = true;
    return &k->second;
  }

  void note(std::size_t line, std::string option, std::string why) {
    notes_.push_back({where(line), {}, std::move(option), std::move(why)});
  }

  void make_account() {
    // Secrets first: their spans are recorded whatever else happens.
    Value* password = get("retriever", "password");
    if (password)
      r_.secret_spans.insert(r_.secret_spans.end(), password->spans.begin(), password->spans.end());

    ImportedAccount a;
    a.source = where(lines_.count("retriever") ? lines_["retriever"] : 1);
    a.name_hint = name_from_file(opts_.source_name);
    Value* type = get("retriever", "type");
    Value* server = get("retriever", "server");
    Value* user = get("retriever", "username");
    a.host = server ? server->text : std::string();
    a.user = user ? user->text : std::string();
    const std::string label =
        (a.user.empty() ? "?" : a.user) + "@" + (a.host.empty() ? "?" : a.host);
    auto drop = [&](std::size_t line, std::string option, std::string why) {
      r_.skipped.push_back({where(line), label, std::move(option), "account not imported: " + why});
    };
    if (!type) return drop(1, "[retriever] type", "missing");
    const std::string& rt = type->text;
    const bool pop3 = rt.find("POP3") != std::string::npos;
    if (!pop3 || rt.find("Multidrop") != std::string::npos)
      return drop(type->line, "[retriever] type",
                  rt.find("IMAP") != std::string::npos
                      ? "IMAP: apop fetch speaks POP3 only"
                      : (rt.find("Multidrop") != std::string::npos
                             ? "multidrop (several recipients in one mailbox) is not supported"
                             : "not a POP3 retriever"));
    const bool ssl = rt.find("SSL") != std::string::npos;
    if (rt.find("BrokenUIDL") != std::string::npos)
      note(type->line, "[retriever] type", "BrokenUIDL: apop fetch relies on the server's UIDL");
    if (!server || server->text.empty()) return drop(type->line, "[retriever] server", "missing");
    if (!user || user->text.empty()) return drop(type->line, "[retriever] username", "missing");
    std::string port_text;
    if (Value* port = get("retriever", "port")) {
      if (auto n = parse_decimal(port->text, {.max = 65535, .max_digits = 5}); n && *n != 0)
        port_text = std::to_string(*n);
      else
        note(port->line, "[retriever] port", "not a port number; the default port is used");
    }
    a.url = pop3_url(ssl, a.user, a.host, port_text);
    if (Value* v = get("retriever", "use_apop"); v && parse_bool(v->text).value_or(false))
      a.auth = "apop";
    if (Value* v = get("retriever", "use_xoauth2"); v && parse_bool(v->text).value_or(false))
      a.auth = "xoauth2";
    if (Value* v = get("retriever", "ca_certs")) a.ca_file = v->text;
    if (password) a.password = password->text;
    if (Value* pc = get("retriever", "password_command")) {
      if (auto argv = parse_tuple(pc->text)) {
        if (password) {
          note(pc->line, "[retriever] password_command", "password is given too and is used");
        } else {
          a.password_command = std::move(*argv);
        }
      } else {
        note(pc->line, "[retriever] password_command",
             "not a tuple of strings like (\"cmd\", \"arg\")");
      }
    }

    // Destination.
    Value* dtype = get("destination", "type");
    if (!dtype) return drop(1, "[destination] type", "missing");
    const std::string& dt = dtype->text;
    Value* path = get("destination", "path");
    if (dt == "Maildir" || dt == "Mboxrd") {
      if (!path || path->text.empty()) return drop(dtype->line, "[destination] path", "missing");
      a.to = (dt == "Maildir" ? "maildir:" : "mbox:") + path->text;
    } else if (dt == "MDA_external") {
      if (!path || path->text.empty()) return drop(dtype->line, "[destination] path", "missing");
      std::string cmd = shell_quote(path->text);
      if (Value* args = get("destination", "arguments")) {
        auto argv = parse_tuple(args->text);
        if (!argv && trim(args->text, " \t()") != "")
          return drop(args->line, "[destination] arguments", "not a tuple of strings");
        if (argv)
          for (const auto& s : *argv) {
            cmd += " " + shell_quote(s);
            if (s.find("%(") != std::string::npos)
              note(args->line, "[destination] arguments",
                   "getmail's %(sender)/%(recipient)/%(local)... are not expanded by apop fetch; "
                   "edit the command");
          }
      }
      a.to = "mda:" + cmd;
    } else if (dt == "MDA_lmtp") {
      Value* host = get("destination", "host");
      std::string h = host ? host->text : "localhost";
      std::string p = "24";
      if (Value* port = get("destination", "port")) {
        if (!parse_decimal(port->text, {.max = 65535, .max_digits = 5}))
          return drop(port->line, "[destination] port", "not a port number");
        p = port->text;
      }
      a.to = !h.empty() && h.front() == '/' ? "lmtp:unix:" + h : "lmtp:" + h + ":" + p;
      if (Value* o = get("destination", "override")) {
        a.deliver_to = o->text;
      } else {
        a.deliver_to = opts_.local_user;
        note(dtype->line, "[destination] override",
             "none: apop fetch needs a recipient; deliver_to is the local user");
        if (a.deliver_to.empty()) return drop(dtype->line, "[destination] override", "missing");
      }
    } else {
      return drop(dtype->line, "[destination] type",
                  dt + ": only Maildir, Mboxrd, MDA_external and MDA_lmtp can be carried over");
    }

    // Options. getmail's defaults: delete = false (keep), read_all = true.
    bool keep = true;
    if (Value* d = get("options", "delete")) {
      if (auto b = parse_bool(d->text))
        keep = !*b;
      else
        note(d->line, "[options] delete", "not a boolean; getmail's default (keep) is used");
    }
    a.keep = keep;
    Value* read_all = get("options", "read_all");
    if (keep && (!read_all || parse_bool(read_all->text).value_or(true)))
      note(read_all ? read_all->line : 1, "[options] read_all",
           "getmail downloads every message at each run (read_all = true); with keep, apop fetch "
           "downloads only messages not seen before");
    else if (keep)
      note(read_all->line, "[options] read_all",
           "getmail's record of seen messages (oldmail-*) is not imported: the messages now on "
           "the server are downloaded once more at the first poll");
    constexpr DecimalRules kCount{.max = 1'000'000'000'000ull, .max_digits = 13};
    if (Value* m = get("options", "max_message_size")) {
      if (auto n = parse_decimal(m->text, kCount)) {
        if (*n > 0) a.max_message_size = *n;
      } else {
        note(m->line, "[options] max_message_size", "not a number");
      }
    }
    if (Value* m = get("options", "max_messages_per_session")) {
      if (auto n = parse_decimal(m->text, kCount)) {
        if (*n > 0) a.fetch_limit = *n;
      } else {
        note(m->line, "[options] max_messages_per_session", "not a number");
      }
    }

    // Everything else that was given.
    for (auto& [sname, section] : sections_) {
      const bool known = sname == "retriever" || sname == "destination" || sname == "options";
      if (!known) {
        note(lines_[sname], "[" + sname + "]", "section not known to apop fetch import-config");
        continue;
      }
      for (auto& [key, v] : section) {
        if (v.used) continue;
        std::string why = "not supported by apop fetch";
        if (key == "timeout")
          why = "not a configuration key; apop fetch waits 60 s per network operation";
        else if (key == "delivered_to" || key == "received")
          why = "apop fetch adds no Delivered-To or Received header";
        else if (key == "verbose" || key == "message_log" || key == "message_log_syslog" ||
                 key == "message_log_verbose")
          why = "apop fetch logs to standard error (the journal under systemd)";
        else if (key == "mailboxes" || key == "move_on_delete")
          why = "IMAP options";
        note(v.line, "[" + sname + "] " + key, why);
      }
    }

    const std::size_t index = r_.accounts.size();
    r_.accounts.push_back(std::move(a));
    for (auto& n : notes_) {
      n.index = index;
      r_.skipped.push_back(std::move(n));
    }
  }

  std::string_view text_;
  const ImportOptions& opts_;
  std::map<std::string, Section> sections_;
  std::map<std::string, std::size_t> lines_;
  std::vector<Skipped> notes_;
  ImportResult r_;
};

}  // namespace

Result<ImportResult> parse_getmailrc(std::string_view text, const ImportOptions& opts) {
  if (text.size() > limits::kMaxImportRcFile)
    return make_error(Errc::invalid, "larger than " + std::to_string(limits::kMaxImportRcFile) +
                                         " bytes; not a getmail rc file");
  return Parser(text, opts).run();
}

}  // namespace apop::client
