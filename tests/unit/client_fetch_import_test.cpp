// `apop fetch import-config`: the .fetchmailrc and getmail rc parsers, the
// account names, and the TOML text read back with toml++.
#include <gtest/gtest.h>

#include <toml++/toml.h>
#include <set>
#include <string>

#include "client/fetch_import.hpp"
#include "common/limits.hpp"

namespace apop::client {
namespace {

ImportOptions opts(std::string name = "rc") {
  ImportOptions o;
  o.source_name = std::move(name);
  o.local_user = "me";
  return o;
}

ImportResult fetchmail(std::string_view text) {
  auto r = parse_fetchmailrc(text, opts(".fetchmailrc"));
  EXPECT_TRUE(r.ok());
  ImportResult out = r.ok() ? std::move(r.value()) : ImportResult{};
  finish_import(out);
  return out;
}

ImportResult getmail(std::string_view text, std::string name = "getmailrc-work") {
  auto r = parse_getmailrc(text, opts(std::move(name)));
  EXPECT_TRUE(r.ok());
  ImportResult out = r.ok() ? std::move(r.value()) : ImportResult{};
  finish_import(out);
  return out;
}

std::string report(const ImportResult& r) {
  std::string s;
  for (const auto& k : r.skipped) s += format_skipped(k) + "\n";
  return s;
}

bool reported(const ImportResult& r, std::string_view option, std::string_view account = {}) {
  for (const auto& k : r.skipped)
    if (k.option == option && (account.empty() || k.account == account)) return true;
  return false;
}

constexpr std::string_view kFetchmailrc = R"(# fetchmail for the household
set daemon 300          # every five minutes
set logfile "/var/log/fetchmail.log"
set postmaster "root"

defaults proto pop3 timeout 90
    fetchlimit 50

poll pop.example.com with proto pop3 port 995
    user "alice" there with password "s3cr\"et pass" is alice here
        options ssl keep sslcertck sslcertfile "/etc/ssl/isp.pem" limit 20971520
        mda "/usr/bin/procmail -d %T"
    user 'bob' with pass BobSecretToken is bob here, smtphost /run/dovecot/lmtp lmtp
poll imap.example.org proto imap user carol password "imapsecret"
poll pop.isp.net via mx.isp.net auth apop interval 2
    user carol@isp.net password "x#y\x41z\101" is carol here nokeep folder INBOX mimedecode
    smtphost mail.local/2525
skip old.example.com user dave password "oldsecret"
)";

TEST(FetchImportFetchmail, RealisticFile) {
  const auto r = fetchmail(kFetchmailrc);
  ASSERT_EQ(r.accounts.size(), 3u) << report(r);

  const auto& alice = r.accounts[0];
  EXPECT_EQ(alice.name, "alice-pop.example.com");
  EXPECT_EQ(alice.url, "pop3s://alice@pop.example.com:995");
  EXPECT_EQ(alice.password, "s3cr\"et pass");
  EXPECT_EQ(alice.ca_file, "/etc/ssl/isp.pem");
  EXPECT_EQ(alice.to, "mda:/usr/bin/procmail -d %T");
  EXPECT_EQ(alice.deliver_to, "");
  EXPECT_EQ(alice.keep, true);
  EXPECT_EQ(alice.max_message_size, 20971520u);
  EXPECT_EQ(alice.fetch_limit, 50u);  // from `defaults`
  EXPECT_EQ(alice.poll_interval, 300u);

  const auto& bob = r.accounts[1];
  EXPECT_EQ(bob.name, "bob-pop.example.com");
  EXPECT_EQ(bob.url, "pop3://bob@pop.example.com:995");  // ssl was alice's option
  EXPECT_EQ(bob.password, "BobSecretToken");
  EXPECT_EQ(bob.to, "lmtp:unix:/run/dovecot/lmtp");
  EXPECT_EQ(bob.deliver_to, "bob");
  EXPECT_EQ(bob.keep, false);

  const auto& carol = r.accounts[2];
  EXPECT_EQ(carol.name, "pop.isp.net");  // the poll name, though `via` is dialled
  EXPECT_EQ(carol.url, "pop3://carol%40isp.net@mx.isp.net");
  EXPECT_EQ(carol.auth, "apop");
  EXPECT_EQ(carol.password, "x#yAzA");  // '#' inside a string; \x41 and \101
  EXPECT_EQ(carol.to, "smtp:mail.local:2525");
  EXPECT_EQ(carol.deliver_to, "carol");
  EXPECT_EQ(carol.poll_interval, 600u);  // interval 2 x daemon 300

  EXPECT_TRUE(reported(r, "set logfile"));
  EXPECT_TRUE(reported(r, "set postmaster"));
  EXPECT_TRUE(reported(r, "timeout"));  // once, for `defaults`
  int timeouts = 0;
  for (const auto& k : r.skipped) timeouts += k.option == "timeout";
  EXPECT_EQ(timeouts, 1);
  EXPECT_TRUE(reported(r, "protocol", "carol@imap.example.org"));
  EXPECT_TRUE(reported(r, "skip", "dave@old.example.com"));
  EXPECT_TRUE(reported(r, "folder", "pop.isp.net"));
  EXPECT_TRUE(reported(r, "mimedecode", "pop.isp.net"));
  EXPECT_TRUE(reported(r, "mda", "alice-pop.example.com"));   // %T
  EXPECT_TRUE(reported(r, "keep", "alice-pop.example.com"));  // .fetchids not imported

  // Secrets: in the password field only.
  const std::string toml = render_toml(r.accounts, {".fetchmailrc"});
  const std::string rep = report(r);
  for (std::string_view secret : {"s3cr", "BobSecretToken", "imapsecret", "x#yAzA", "oldsecret"}) {
    EXPECT_EQ(toml.find(secret), std::string::npos) << secret;
    EXPECT_EQ(rep.find(secret), std::string::npos) << secret;
  }
  EXPECT_EQ(r.secret_spans.size(), 5u);  // one per password, imported or not
}

TEST(FetchImportFetchmail, DefaultsAndImplicitUser) {
  // No `user`: fetchmail logs in as, and delivers to, the local user.
  const auto r = fetchmail("defaults keep\npoll pop.x.org\n");
  ASSERT_EQ(r.accounts.size(), 1u) << report(r);
  EXPECT_EQ(r.accounts[0].url, "pop3://me@pop.x.org");
  EXPECT_EQ(r.accounts[0].to, "smtp:localhost:25");
  EXPECT_EQ(r.accounts[0].deliver_to, "me");
  EXPECT_EQ(r.accounts[0].keep, true);
  EXPECT_FALSE(r.accounts[0].poll_interval.has_value());
}

TEST(FetchImportFetchmail, NegatedFlagsAndNoise) {
  const auto r = fetchmail(
      "defaults keep\n"
      "poll a.example user u1 and wants no keep; and has options here\n"
      "poll b.example user u2 nokeep smtpname u2@example.org\n"
      "poll c.example user u3 smtpaddress example.net is local3 here\n");
  ASSERT_EQ(r.accounts.size(), 3u) << report(r);
  EXPECT_EQ(r.accounts[0].keep, false);
  EXPECT_EQ(r.accounts[1].keep, false);
  EXPECT_EQ(r.accounts[1].deliver_to, "u2@example.org");
  EXPECT_EQ(r.accounts[2].keep, true);
  EXPECT_EQ(r.accounts[2].deliver_to, "local3@example.net");
}

TEST(FetchImportFetchmail, SyntaxErrorSkipsOneStatement) {
  const auto r = fetchmail(
      "poll bad.example user x frobnicate 3\n"
      "poll good.example user y password \"pw\"\n");
  ASSERT_EQ(r.accounts.size(), 1u) << report(r);
  EXPECT_EQ(r.accounts[0].url, "pop3://y@good.example");
  EXPECT_TRUE(reported(r, "frobnicate"));
}

TEST(FetchImportFetchmail, UnterminatedString) {
  const auto r = fetchmail("poll a.example user x password \"never closed\n");
  EXPECT_TRUE(reported(r, "string")) << report(r);
  EXPECT_EQ(report(r).find("never"), std::string::npos);
}

TEST(FetchImportFetchmail, DeliveryThatCannotBeCarried) {
  const auto r = fetchmail(
      "poll a.example user x is * here\n"
      "poll b.example user y bsmtp /tmp/out\n"
      "poll c.example user z smtphost /var/run/smtp.sock\n"
      "poll d.example user w lmtp smtphost lmtp.example/24 is w1 w2 here\n"
      "poll e.example proto pop2 user v\n");
  ASSERT_EQ(r.accounts.size(), 1u) << report(r);
  EXPECT_EQ(r.accounts[0].to, "lmtp:lmtp.example:24");
  EXPECT_EQ(r.accounts[0].deliver_to, "w1");
  EXPECT_TRUE(reported(r, "is", "x@a.example"));
  EXPECT_TRUE(reported(r, "bsmtp", "y@b.example"));
  EXPECT_TRUE(reported(r, "smtphost", "z@c.example"));
  EXPECT_TRUE(reported(r, "is", "d.example"));
  EXPECT_TRUE(reported(r, "protocol", "v@e.example"));
}

TEST(FetchImportFetchmail, TooLarge) {
  const std::string big(limits::kMaxImportRcFile + 1, '#');
  auto r = parse_fetchmailrc(big, opts());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::invalid);
}

TEST(FetchImportFetchmail, StartTlsAndCertificates) {
  const auto r = fetchmail(
      "poll a.example user x sslproto TLS1.2+ sslcertpath /etc/ssl/certs no sslcertck "
      "auth kerberos_v5\n");
  ASSERT_EQ(r.accounts.size(), 1u) << report(r);
  EXPECT_EQ(r.accounts[0].tls, "starttls");
  EXPECT_EQ(r.accounts[0].auth, "");
  EXPECT_TRUE(reported(r, "sslcertpath"));
  EXPECT_TRUE(reported(r, "no sslcertck"));
  EXPECT_TRUE(reported(r, "auth"));
}

constexpr std::string_view kGetmailWork = R"(# work mail
[retriever]
type = SimplePOP3SSLRetriever
server = pop.work.example
port = 995
username = alice@work.example
password = w0rk s3cret;#x
ca_certs = /etc/ssl/work-ca.pem
use_apop = yes

[destination]
type = Maildir
path = ~/Mail/work/

[options]
delete = true
max_message_size = 10485760
max_messages_per_session = 100
verbose = 2
)";

TEST(FetchImportGetmail, RealisticFile) {
  const auto r = getmail(kGetmailWork);
  ASSERT_EQ(r.accounts.size(), 1u) << report(r);
  const auto& a = r.accounts[0];
  EXPECT_EQ(a.name, "work");
  EXPECT_EQ(a.url, "pop3s://alice%40work.example@pop.work.example:995");
  EXPECT_EQ(a.auth, "apop");
  EXPECT_EQ(a.password, "w0rk s3cret;#x");
  EXPECT_EQ(a.ca_file, "/etc/ssl/work-ca.pem");
  EXPECT_EQ(a.to, "maildir:~/Mail/work/");
  EXPECT_EQ(a.keep, false);
  EXPECT_EQ(a.max_message_size, 10485760u);
  EXPECT_EQ(a.fetch_limit, 100u);
  EXPECT_TRUE(reported(r, "[options] verbose", "work"));
  EXPECT_EQ(report(r).find("s3cret"), std::string::npos);
  EXPECT_EQ(render_toml(r.accounts, {"x"}).find("s3cret"), std::string::npos);
}

TEST(FetchImportGetmail, PasswordCommandMdaAndDefaults) {
  const auto r = getmail(
      "[retriever]\ntype = SimplePOP3Retriever\nserver = pop.home.example\nusername = bob\n"
      "password_command = (\"/usr/bin/pass\", \"show\",\n    'mail/home',)\n"
      "[destination]\ntype = MDA_external\npath = /usr/bin/maildrop\n"
      "arguments = (\"-d\", \"%(local)\")\n",
      "/home/bob/.getmail/getmailrc");
  ASSERT_EQ(r.accounts.size(), 1u) << report(r);
  const auto& a = r.accounts[0];
  EXPECT_EQ(a.name, "pop.home.example");  // plain "getmailrc": the host
  EXPECT_EQ((a.password_command), (std::vector<std::string>{"/usr/bin/pass", "show", "mail/home"}));
  EXPECT_EQ(a.to, "mda:/usr/bin/maildrop -d '%(local)'");
  EXPECT_EQ(a.keep, true);                         // getmail's default: delete = false
  EXPECT_TRUE(reported(r, "[options] read_all"));  // and read_all = true
  EXPECT_TRUE(reported(r, "[destination] arguments"));
}

TEST(FetchImportGetmail, LmtpAndSkippedTypes) {
  auto r = getmail(
      "[retriever]\ntype = BrokenUIDLPOP3SSLRetriever\nserver = s\nusername = u\n"
      "[destination]\ntype = MDA_lmtp\nhost = /run/dovecot/lmtp\noverride = u@example.org\n"
      "[options]\ndelete = 1\n",
      "lmtp.conf");
  ASSERT_EQ(r.accounts.size(), 1u) << report(r);
  EXPECT_EQ(r.accounts[0].name, "lmtp");
  EXPECT_EQ(r.accounts[0].url, "pop3s://u@s");
  EXPECT_EQ(r.accounts[0].to, "lmtp:unix:/run/dovecot/lmtp");
  EXPECT_EQ(r.accounts[0].deliver_to, "u@example.org");

  r = getmail(
      "[retriever]\ntype = SimpleIMAPSSLRetriever\nserver = s\nusername = u\n"
      "password = imapsecret\n[destination]\ntype = Maildir\npath = /m/\n");
  EXPECT_TRUE(r.accounts.empty());
  EXPECT_TRUE(reported(r, "[retriever] type", "u@s"));
  EXPECT_EQ(report(r).find("imapsecret"), std::string::npos);

  r = getmail(
      "[retriever]\ntype = SimplePOP3Retriever\nserver = s\nusername = u\n"
      "[destination]\ntype = MultiSorter\n");
  EXPECT_TRUE(r.accounts.empty());
  EXPECT_TRUE(reported(r, "[destination] type"));
}

TEST(FetchImportGetmail, SecretSpanOfAValueOnContinuationLines) {
  // Regressions (fuzz_getmailrc): an empty first line gave a span offset
  // computed from a null pointer; a span over several lines took in the
  // comment lines between them.
  const std::string text =
      "[retriever]\ntype = SimplePOP3Retriever\nserver = s\nusername = u\npassword =\n"
      "; a comment\n  rk s3cret\n[destination]\ntype = Maildir\npath = /m/\n";
  auto r = parse_getmailrc(text, opts());
  ASSERT_TRUE(r.ok());
  // One span per line of the value: the empty first one, then the
  // continuation without its indentation.
  ASSERT_EQ(r->secret_spans.size(), 2u);
  std::string spans;
  for (const auto& sp : r->secret_spans) {
    ASSERT_LE(sp.offset + sp.length, text.size());
    spans += "[" + text.substr(sp.offset, sp.length) + "]";
  }
  EXPECT_EQ(spans, "[][rk s3cret]");
  EXPECT_EQ(r->accounts.at(0).password, "\nrk s3cret");
}

TEST(FetchImportNames, UniqueAndSanitized) {
  ImportResult r;
  for (const char* host : {"pop.a", "pop.a", "pop.a"}) {
    ImportedAccount a;
    a.host = host;
    a.user = "u s@r";
    r.accounts.push_back(a);
  }
  ImportedAccount bad;
  bad.host = "x";
  bad.to = "maildir:/\xff";
  r.accounts.push_back(bad);
  r.skipped.push_back({"f:1", {}, "keep", "why", 1});
  finish_import(r);
  ASSERT_EQ(r.accounts.size(), 3u);
  EXPECT_EQ(r.accounts[0].name, "u_s_r-pop.a");
  EXPECT_EQ(r.accounts[1].name, "u_s_r-pop.a-2");
  EXPECT_EQ(r.accounts[2].name, "u_s_r-pop.a-3");
  EXPECT_EQ(r.skipped[0].account, "u_s_r-pop.a-2");
  EXPECT_TRUE(reported(r, "account", "x"));  // not UTF-8
}

TEST(FetchImportToml, QuoteEscapes) {
  EXPECT_EQ(toml_quote("plain"), "\"plain\"");
  EXPECT_EQ(toml_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(toml_quote("t\tn\nr\r"), "\"t\\tn\\nr\\r\"");
  EXPECT_EQ(toml_quote(std::string("\x01\x7f", 2)), "\"\\u0001\\u007F\"");
  EXPECT_EQ(toml_quote("\xc3\xa9"), "\"\xc3\xa9\"");
  EXPECT_EQ(format_interval(300), "5m");
  EXPECT_EQ(format_interval(90), "90s");
  EXPECT_EQ(format_interval(7200), "2h");
  EXPECT_EQ(format_interval(86400 * 2), "2d");
  EXPECT_EQ(format_size(20 * 1024 * 1024), "20M");
  EXPECT_EQ(format_size(1500), "1500");
  EXPECT_EQ(format_size(2048), "2K");
}

TEST(FetchImportToml, RoundTripThroughTomlPlusPlus) {
  ImportResult r = fetchmail(kFetchmailrc);
  ImportedAccount odd;
  odd.host = "odd";
  odd.url = "pop3://o@odd";
  odd.to = "mda:printf '%s\\n' \"q\" \t\x01\x7f \xc3\xa9 \xf0\x9f\x93\xac";
  odd.deliver_to = "line\nbreak";
  odd.password_command = {"a\"b", "c\\d", ""};
  odd.keep = true;
  odd.poll_interval = 45;
  r.accounts.push_back(odd);
  finish_import(r);
  r.accounts[0].password_file = "/home/a/.config/apop/alice.pass";
  const std::string text =
      render_toml(r.accounts, {"/home/a/.fetchmailrc", "evil\nname", "latin1-\xe9"});

  toml::table t;
  try {
    t = toml::parse(text);
  } catch (const toml::parse_error& e) {
    FAIL() << e.description() << "\n" << text;
  }
  const auto* accounts = t["account"].as_array();
  ASSERT_NE(accounts, nullptr);
  ASSERT_EQ(accounts->size(), r.accounts.size());
  for (std::size_t i = 0; i < r.accounts.size(); ++i) {
    const auto& a = r.accounts[i];
    const auto& row = *accounts->get(i)->as_table();
    EXPECT_EQ(row["name"].value_or(std::string()), a.name);
    EXPECT_EQ(row["url"].value_or(std::string()), a.url);
    EXPECT_EQ(row["to"].value_or(std::string()), a.to);
    EXPECT_EQ(row["deliver_to"].value_or(std::string()), a.deliver_to);
    EXPECT_EQ(row["password_file"].value_or(std::string()), a.password_file);
    EXPECT_EQ(row["keep"].value_or(false), a.keep.value_or(false));
    if (a.fetch_limit) {
      EXPECT_EQ(row["fetch_limit"].value_or(std::uint64_t{0}), *a.fetch_limit);
    }
    if (a.poll_interval) {
      EXPECT_EQ(row["poll_interval"].value_or(std::string()), format_interval(*a.poll_interval));
    }
    if (!a.password_command.empty()) {
      const auto* argv = row["password_command"].as_array();
      ASSERT_NE(argv, nullptr);
      ASSERT_EQ(argv->size(), a.password_command.size());
      for (std::size_t k = 0; k < argv->size(); ++k)
        EXPECT_EQ(argv->get(k)->value_or(std::string()), a.password_command[k]);
    }
    // Only schema keys.
    for (const auto& [key, v] : row) {
      static const std::set<std::string> kSchema = {"name",
                                                    "url",
                                                    "auth",
                                                    "tls",
                                                    "ca_file",
                                                    "password_file",
                                                    "password_command",
                                                    "to",
                                                    "deliver_to",
                                                    "keep",
                                                    "max_message_size",
                                                    "fetch_limit",
                                                    "poll_interval"};
      EXPECT_EQ(kSchema.count(std::string(key.str())), 1u) << key.str();
    }
  }
}

}  // namespace
}  // namespace apop::client
