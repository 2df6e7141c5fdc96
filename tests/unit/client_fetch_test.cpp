// The fetch engine (src/client/fetch.hpp) driven by a scripted in-memory
// POP3 server behind a fake Transport, with an in-memory Destination: no
// sockets. Covers the safety properties listed in fetch.hpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "auth/base64.hpp"
#include "auth/sasl.hpp"
#include "client/fetch.hpp"
#include "client_fake_pop.hpp"
#include "temp_dir.hpp"

namespace apop::client {
namespace {

using test::FakePop;
using test::FakeTransport;
using test::kSecret;
using test::kTs;

class MemoryDestination final : public Destination {
 public:
  Result<void> store(std::string_view message, const MessageMeta& meta) override {
    ++attempts;
    if (fail_uids.count(meta.uidl)) return make_error(Errc::temporary, "disk full (simulated)");
    stored.emplace_back(message);
    uids.push_back(meta.uidl);
    return {};
  }
  std::string describe() const override { return "memory:"; }
  std::vector<std::string> stored;
  std::vector<std::string> uids;
  std::set<std::string> fail_uids;
  int attempts = 0;
};

class FetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("apop-fetch-" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    pop_.msgs = {{"uid-a", "Subject: a\n\nfirst\n"},
                 {"uid-b", "Subject: b\n\n.dotted line\n..two dots\n"},
                 {"uid-c", "Return-Path: <bounce@example.org>\nSubject: c\n\nthird\n"}};
    opts_.user = "alice";
    opts_.password = kSecret;
    opts_.trace = [this](std::string_view l) { trace_.emplace_back(l); };
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  AccountState state() {
    auto s = AccountState::load(dir_ / "state");
    EXPECT_TRUE(s) << s.error().message;
    return std::move(s).value();
  }
  FetchSummary run(FakePop& pop, bool implicit = false) {
    FakeTransport t(pop);
    if (implicit) t.set_implicit_tls();
    AccountState st = state();
    auto s = run_session(t, dest_, st, opts_);
    last_writes_ = t.writes;
    return s;
  }
  bool sent(const FakePop& pop, std::string_view prefix) const {
    for (const auto& c : pop.commands) {
      if (c.rfind(prefix, 0) == 0) return true;
    }
    return false;
  }

  std::filesystem::path dir_;
  FakePop pop_;
  FetchOptions opts_;
  MemoryDestination dest_;
  std::vector<std::string> trace_;
  std::vector<std::string> last_writes_;
};

TEST_F(FetchTest, ApopDeleteModeStoresThenDeletes) {
  opts_.auth = AuthMech::apop;
  opts_.tls_mode = TlsMode::none;
  auto s = run(pop_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.auth, "apop");
  EXPECT_EQ(s.stored, 3u);
  EXPECT_EQ(s.deleted, 3u);
  ASSERT_EQ(dest_.stored.size(), 3u);
  EXPECT_EQ(dest_.stored[0], "Subject: a\n\nfirst\n");
  EXPECT_EQ(dest_.stored[1], "Subject: b\n\n.dotted line\n..two dots\n");  // unstuffed, LF
  EXPECT_EQ(pop_.gone.size(), 3u);
  EXPECT_TRUE(pop_.live().empty());
  // The digest is not in the trace; the trace shows that it was hidden.
  for (const auto& l : trace_) EXPECT_EQ(l.find(apop_digest(kTs, kSecret)), std::string::npos) << l;
  // Every DELE comes after the last RETR (DELEs only for stored messages).
  std::size_t last_retr = 0, first_dele = pop_.commands.size();
  for (std::size_t i = 0; i < pop_.commands.size(); ++i) {
    if (pop_.commands[i].rfind("RETR", 0) == 0) last_retr = i;
    if (pop_.commands[i].rfind("DELE", 0) == 0) first_dele = std::min(first_dele, i);
  }
  EXPECT_LT(last_retr, first_dele);
}

TEST_F(FetchTest, RefusesEveryBadChallengeWithoutSendingADigest) {
  const std::vector<std::string> bad = {std::string("<1896.697\x80@host>"),
                                        std::string("<1896\x01.697@host>"),
                                        "<1896.697\r@host>",
                                        "<1896.697170952dbc.mtview.ca.us>",
                                        "1896.697170952@dbc.mtview.ca.us",
                                        "<1896.697170952@dbc",
                                        "<" + std::string(251, 'a') + "@b.c>",
                                        "<>",
                                        "<1896 697@host>",
                                        "<<1896.697@host>",
                                        "<\"q\"@host>",
                                        "<1896.697.@host>",
                                        "<1896..697@host>",
                                        "<a@b@c>",
                                        "<a(c)@host>",
                                        "<a@[1.2.3.4>",
                                        "<@host>",
                                        "<a@>",
                                        "<a@host.>",
                                        "<a,b@host>",
                                        std::string("<a\x7f@b>"),
                                        "<a@ho st>"};
  ASSERT_GE(bad.size(), 20u);
  for (AuthMech m : {AuthMech::apop, AuthMech::automatic}) {
    for (const auto& ts : bad) {
      FakePop pop;
      pop.greeting = "+OK hello " + ts;
      pop.capa_ok = false;
      pop.msgs = pop_.msgs;
      opts_.auth = m;
      opts_.tls_mode = TlsMode::none;
      auto s = run(pop);
      EXPECT_EQ(s.status, FetchStatus::security) << ts << " " << s.error;
      EXPECT_FALSE(sent(pop, "APOP")) << ts;
      EXPECT_FALSE(sent(pop, "PASS")) << ts;
      EXPECT_FALSE(sent(pop, "USER")) << ts;
      EXPECT_NE(s.error.find("challenge"), std::string::npos) << s.error;
    }
  }
  EXPECT_TRUE(dest_.stored.empty());
}

TEST_F(FetchTest, StlsInjectionAborts) {
  pop_.stls = true;
  pop_.stls_extra = "+OK injected\r\n";
  auto s = run(pop_);
  EXPECT_EQ(s.status, FetchStatus::security) << s.error;
  EXPECT_NE(s.error.find("injection"), std::string::npos);
  EXPECT_FALSE(sent(pop_, "APOP"));
  EXPECT_FALSE(sent(pop_, "AUTH"));
  EXPECT_EQ(pop_.commands.back(), "STLS");
}

TEST_F(FetchTest, StlsUsedInAutoModeAndCapaRefreshed) {
  pop_.stls = true;
  auto s = run(pop_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_TRUE(s.tls);
  EXPECT_EQ(s.auth, "apop");  // APOP inside TLS beats PLAIN inside TLS
  EXPECT_EQ(std::count(pop_.commands.begin(), pop_.commands.end(), "CAPA"), 2);
  EXPECT_TRUE(s.offer.tls && s.offer.apop);
}

TEST_F(FetchTest, StarttlsRequiredButRefused) {
  opts_.tls_mode = TlsMode::starttls;
  auto s = run(pop_);
  EXPECT_EQ(s.status, FetchStatus::tls_failed) << s.error;
  EXPECT_FALSE(sent(pop_, "APOP"));
}

TEST_F(FetchTest, DowngradeStopsBeforeAuthentication) {
  {
    AccountState st = state();
    st.set_offer(Offer{true, true, false});
    ASSERT_TRUE(st.save());
  }
  auto s = run(pop_);  // no STLS this time
  EXPECT_EQ(s.status, FetchStatus::security) << s.error;
  EXPECT_NE(s.error.find("downgrade"), std::string::npos);
  EXPECT_FALSE(sent(pop_, "APOP"));
  EXPECT_TRUE(dest_.stored.empty());

  FakePop again;
  again.msgs = pop_.msgs;
  opts_.accept_downgrade = true;
  auto ok = run(again);
  EXPECT_EQ(ok.status, FetchStatus::ok) << ok.error;
  EXPECT_FALSE(ok.warnings.empty());
  EXPECT_EQ(state().last_offer(), (Offer{false, true, false}));  // the new offer is remembered
}

TEST_F(FetchTest, ScramDowngradeDetected) {
  {
    AccountState st = state();
    st.set_offer(Offer{false, true, true});
    ASSERT_TRUE(st.save());
  }
  auto s = run(pop_);
  EXPECT_EQ(s.status, FetchStatus::security);
  EXPECT_NE(s.error.find("SCRAM"), std::string::npos);
}

TEST_F(FetchTest, PlaintextRefusedWithoutTls) {
  pop_.greeting = "+OK no apop here";
  pop_.capa = {"USER", "UIDL", "SASL PLAIN LOGIN"};
  auto s = run(pop_);
  EXPECT_EQ(s.status, FetchStatus::security) << s.error;
  EXPECT_FALSE(sent(pop_, "USER"));
  EXPECT_FALSE(sent(pop_, "PASS"));
  EXPECT_FALSE(sent(pop_, "AUTH"));

  FakePop pop2;
  pop2.greeting = "+OK no apop here";
  pop2.capa = {"USER", "UIDL"};
  pop2.msgs = pop_.msgs;
  opts_.allow_plaintext = true;
  auto ok = run(pop2);
  EXPECT_EQ(ok.status, FetchStatus::ok) << ok.error;
  EXPECT_EQ(ok.auth, "user");
  for (const auto& l : trace_) EXPECT_EQ(l.find(kSecret), std::string::npos) << l;
}

// Regression (fuzz_client_reply): a response code's own bytes reached the
// error text (and so the terminal and `--json`) unfiltered.
TEST_F(FetchTest, ResponseCodeWithControlAnd8BitBytesIsPrintedSafely) {
  pop_.apop_reply = std::string("-ERR [SYS/TEM\xff\x01P] busy\r\n");
  auto s = run(pop_);
  EXPECT_EQ(s.status, FetchStatus::error);
  EXPECT_NE(s.error.find("SYS/TEM"), std::string::npos) << s.error;
  for (unsigned char c : s.error) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << s.error;
}

TEST_F(FetchTest, WrongPasswordIsAuthFailure) {
  opts_.password = "wrong";
  auto s = run(pop_);
  EXPECT_EQ(s.status, FetchStatus::auth_failed);
  EXPECT_FALSE(sent(pop_, "STAT"));
}

TEST_F(FetchTest, ScramAgainstTheServerImplementation) {
  pop_.sasl = true;
  pop_.capa = {"UIDL", "SASL SCRAM-SHA-256 CRAM-MD5"};
  auto s = run(pop_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.auth, "scram-sha-256");
  EXPECT_EQ(s.stored, 3u);
  EXPECT_TRUE(s.offer.scram);

  FakePop bad;
  bad.sasl = true;
  bad.capa = pop_.capa;
  bad.msgs = pop_.msgs;
  opts_.password = "not the password";
  auto f = run(bad);
  EXPECT_EQ(f.status, FetchStatus::auth_failed) << f.error;
}

TEST_F(FetchTest, CramMd5AgainstTheServerImplementation) {
  pop_.sasl = true;
  pop_.greeting = "+OK no timestamp";
  pop_.capa = {"UIDL", "SASL CRAM-MD5"};
  auto s = run(pop_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.auth, "cram-md5");
}

TEST_F(FetchTest, PlainInsideImplicitTls) {
  pop_.sasl = true;
  pop_.greeting = "+OK no timestamp";
  pop_.capa_tls = {"UIDL", "SASL PLAIN"};
  auto s = run(pop_, /*implicit=*/true);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.auth, "plain");
  EXPECT_TRUE(s.tls);
}

TEST_F(FetchTest, TemporaryStoreFailureKeepsTheMessage) {
  dest_.fail_uids = {"uid-b"};
  auto s = run(pop_);
  EXPECT_EQ(s.status, FetchStatus::store_failed) << s.error;
  EXPECT_EQ(s.stored, 2u);
  EXPECT_EQ(s.store_failed, 1u);
  EXPECT_EQ(s.deleted, 2u);
  ASSERT_EQ(pop_.live().size(), 1u);
  EXPECT_EQ(pop_.msgs[pop_.live()[0]].uid, "uid-b");
  // Next time it works and only b is fetched.
  dest_.fail_uids.clear();
  FakePop next;
  next.msgs = pop_.msgs;
  next.gone = pop_.gone;
  auto s2 = run(next);
  EXPECT_EQ(s2.status, FetchStatus::ok) << s2.error;
  EXPECT_EQ(s2.stored, 1u);
  EXPECT_EQ(dest_.uids.back(), "uid-b");
}

TEST_F(FetchTest, CutDuringRetrLosesNothingAndRefetchesNothingStored) {
  // Commands: CAPA APOP STAT UIDL LIST RETR 1 RETR 2 ... cut in RETR 2's reply.
  pop_.capa = {"UIDL"};  // no pipelining: one RETR at a time
  pop_.cut_after = 7;
  pop_.cut_mid_reply = true;
  auto s = run(pop_);
  EXPECT_EQ(s.status, FetchStatus::network) << s.error;
  EXPECT_EQ(dest_.stored.size(), 1u);
  EXPECT_FALSE(sent(pop_, "DELE"));
  EXPECT_EQ(pop_.live().size(), 3u);  // nothing deleted on the server
  EXPECT_TRUE(state().seen("uid-a"));

  FakePop next;
  next.msgs = pop_.msgs;
  auto s2 = run(next);
  ASSERT_EQ(s2.status, FetchStatus::ok) << s2.error;
  EXPECT_EQ(s2.stored, 2u);   // b and c; a was already stored
  EXPECT_EQ(s2.deleted, 3u);  // a is deleted without being stored again
  EXPECT_EQ(dest_.stored.size(), 3u);
  EXPECT_TRUE(next.live().empty());
}

// During a session each stored UIDL is one line appended to the file the
// session's first save wrote (in store order, unsorted); a cut leaves them
// there. A torn last line (a kill mid-append) loads, is rewritten away by
// the next session's first save, and only its message is fetched again.
TEST_F(FetchTest, StoredUidlsAreAppendedAndATornTailIsRefetchedOnce) {
  opts_.keep = true;
  pop_.capa = {"UIDL"};  // no pipelining: one RETR at a time
  pop_.msgs = {{"uid-z", "Subject: z\n\nz\n"},
               {"uid-m", "Subject: m\n\nm\n"},
               {"uid-a", "Subject: a\n\na\n"}};
  pop_.cut_after = 8;  // CAPA APOP STAT UIDL LIST RETR 1 RETR 2 RETR 3: cut in RETR 3
  pop_.cut_mid_reply = true;
  auto s = run(pop_);
  EXPECT_EQ(s.status, FetchStatus::network) << s.error;
  ASSERT_EQ(dest_.uids, (std::vector<std::string>{"uid-z", "uid-m"}));
  const auto file = dir_ / "state";
  EXPECT_EQ(::apop::test::slurp(file),
            "apop-fetch-state 1\noffer tls=0 apop=1 scram=0\nuidl uid-z\nuidl uid-m\n");

  // A kill in the middle of appending uid-m's line.
  ::apop::test::spit(file, "apop-fetch-state 1\noffer tls=0 apop=1 scram=0\nuidl uid-z\nuidl uid-");
  FakePop next;
  next.capa = {"UIDL"};
  next.msgs = pop_.msgs;
  auto s2 = run(next);
  ASSERT_EQ(s2.status, FetchStatus::ok) << s2.error;
  EXPECT_EQ(s2.stored, 2u);  // m again (its UIDL was torn) and a; never z
  EXPECT_EQ(dest_.uids, (std::vector<std::string>{"uid-z", "uid-m", "uid-m", "uid-a"}));
  // The end of the session compacts: sorted, whole lines only.
  EXPECT_EQ(::apop::test::slurp(file),
            "apop-fetch-state 1\noffer tls=0 apop=1 scram=0\nuidl uid-a\nuidl uid-m\nuidl "
            "uid-z\n");
}

TEST_F(FetchTest, CutDuringDelePhaseLosesNothing) {
  pop_.capa = {"UIDL"};
  // CAPA APOP STAT UIDL LIST RETR*3 DELE 1 DELE 2 <cut>
  pop_.cut_after = 10;
  auto s = run(pop_);
  EXPECT_EQ(s.status, FetchStatus::network) << s.error;
  EXPECT_EQ(dest_.stored.size(), 3u);
  EXPECT_EQ(pop_.live().size(), 3u);  // no QUIT: no deletion committed
  EXPECT_FALSE(sent(pop_, "QUIT"));

  FakePop next;
  next.msgs = pop_.msgs;
  auto s2 = run(next);
  ASSERT_EQ(s2.status, FetchStatus::ok) << s2.error;
  EXPECT_EQ(s2.stored, 0u);
  EXPECT_EQ(s2.deleted, 3u);
  EXPECT_EQ(dest_.stored.size(), 3u);  // no duplicates
  EXPECT_TRUE(next.live().empty());
}

TEST_F(FetchTest, KeepModeFetchesOnlyNewMessages) {
  opts_.keep = true;
  auto s = run(pop_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.stored, 3u);
  EXPECT_FALSE(sent(pop_, "DELE"));
  EXPECT_EQ(pop_.live().size(), 3u);

  FakePop again;
  again.msgs = pop_.msgs;
  again.msgs.push_back({"uid-d", "Subject: d\n\nnew\n"});
  auto s2 = run(again);
  ASSERT_EQ(s2.status, FetchStatus::ok) << s2.error;
  EXPECT_EQ(s2.new_messages, 1u);
  EXPECT_EQ(s2.stored, 1u);
  EXPECT_EQ(dest_.uids.back(), "uid-d");
  EXPECT_FALSE(sent(again, "RETR 1"));
}

TEST_F(FetchTest, DryRunListsButNeitherRetrievesNorDeletesNorSavesState) {
  opts_.keep = true;
  opts_.dry_run = true;
  auto s = run(pop_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.new_messages, 3u);
  std::uint64_t bytes = 0;  // as LIST announces them
  for (std::size_t i = 0; i < pop_.msgs.size(); ++i) bytes += pop_.size_of(i);
  EXPECT_EQ(s.new_bytes, bytes);
  EXPECT_EQ(s.stored, 0u);
  EXPECT_FALSE(sent(pop_, "RETR"));
  EXPECT_FALSE(sent(pop_, "DELE"));
  EXPECT_TRUE(sent(pop_, "QUIT"));
  EXPECT_TRUE(dest_.uids.empty());
  EXPECT_FALSE(state().seen("uid-a"));
}

TEST_F(FetchTest, LyingSizeIsAProtocolErrorAndNothingIsStored) {
  pop_.msgs[0].size_delta = -15;  // LIST says less than is sent
  auto s = run(pop_);
  EXPECT_EQ(s.status, FetchStatus::protocol) << s.error;
  EXPECT_TRUE(dest_.stored.empty());
  EXPECT_FALSE(sent(pop_, "DELE"));

  FakePop big;
  big.msgs = pop_.msgs;
  big.msgs[0].size_delta = 1'000'000;  // announces far more than it sends
  auto s2 = run(big);
  EXPECT_EQ(s2.status, FetchStatus::protocol) << s2.error;
}

TEST_F(FetchTest, GarbageUidlAndListAreProtocolErrors) {
  for (auto lines :
       std::vector<std::vector<std::string>>{{"1 " + std::string(71, 'x'), "2 b", "3 c"},
                                             {"1 a", "2 a", "3 c"},
                                             {"1 a", "99999999999999999999999 b", "3 c"},
                                             {"1 a", "4 b", "3 c"},
                                             {"1 a b"}}) {
    FakePop pop;
    pop.msgs = pop_.msgs;
    pop.uidl_lines = lines;
    auto s = run(pop);
    EXPECT_EQ(s.status, FetchStatus::protocol) << lines[0] << " " << s.error;
    EXPECT_FALSE(sent(pop, "RETR"));
  }
  FakePop pop;
  pop.msgs = pop_.msgs;
  pop.list_lines = std::vector<std::string>{"1 18446744073709551616", "2 10", "3 10"};
  auto s = run(pop);
  EXPECT_EQ(s.status, FetchStatus::protocol) << s.error;
  EXPECT_TRUE(dest_.stored.empty());
}

TEST_F(FetchTest, OverlongReplyIsAProtocolError) {
  pop_.greeting = "+OK " + std::string(600, 'x');
  auto s = run(pop_);
  EXPECT_EQ(s.status, FetchStatus::protocol) << s.error;
}

TEST_F(FetchTest, NotPop3IsAProtocolError) {
  pop_.greeting = "HTTP/1.1 400 Bad Request";
  auto s = run(pop_);
  EXPECT_EQ(s.status, FetchStatus::protocol) << s.error;
}

TEST_F(FetchTest, PipeliningBatchesRetr) {
  auto s = run(pop_);  // the default CAPA offers PIPELINING
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  bool batched = false;
  for (const auto& w : last_writes_) batched |= w == "RETR 1\r\nRETR 2\r\nRETR 3\r\n";
  EXPECT_TRUE(batched);
  pop_ = FakePop();
}

// A full window first, then a batch each time half of it was answered (not
// one command per reply): fewer writes, fewer wake-ups of the server.
TEST_F(FetchTest, PipeliningRefillsHalfAWindowAtATime) {
  pop_.msgs.clear();
  for (int i = 1; i <= 10; ++i) {
    pop_.msgs.push_back({"uid-" + std::to_string(i), "Subject: " + std::to_string(i) + "\n\nx\n"});
  }
  opts_.pipeline_window = 4;
  auto s = run(pop_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.stored, 10u);
  std::vector<std::string> retr, dele;
  for (const auto& w : last_writes_) {
    if (w.starts_with("RETR")) retr.push_back(w);
    if (w.starts_with("DELE")) dele.push_back(w);
  }
  EXPECT_EQ(retr, (std::vector<std::string>{"RETR 1\r\nRETR 2\r\nRETR 3\r\nRETR 4\r\n",
                                            "RETR 5\r\nRETR 6\r\n", "RETR 7\r\nRETR 8\r\n",
                                            "RETR 9\r\nRETR 10\r\n"}));
  EXPECT_EQ(dele.size(), 4u);
  pop_ = FakePop();
}

// With PIPELINING: STAT, UIDL and LIST in one write, QUIT with the last
// DELE; an empty maildrop still reads all three replies.
TEST_F(FetchTest, PipeliningListsInOneWriteAndQuitsWithTheLastDele) {
  auto s = run(pop_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.deleted, 3u);
  const auto& w = last_writes_;
  EXPECT_NE(std::find(w.begin(), w.end(), "STAT\r\nUIDL\r\nLIST\r\n"), w.end());
  EXPECT_NE(std::find(w.begin(), w.end(), "DELE 1\r\nDELE 2\r\nDELE 3\r\nQUIT\r\n"), w.end());
  EXPECT_EQ(pop_.live().size(), 0u);
  // Nothing left: the same exchange, nothing fetched, a clean QUIT.
  auto again = run(pop_);
  ASSERT_EQ(again.status, FetchStatus::ok) << again.error;
  EXPECT_EQ(again.stored, 0u);
  EXPECT_EQ(last_writes_.back(), "QUIT\r\n");
  // Without PIPELINING one command at a time.
  pop_ = FakePop();
  pop_.capa = {"UIDL"};
  auto plain = run(pop_);
  ASSERT_EQ(plain.status, FetchStatus::ok) << plain.error;
  EXPECT_EQ(std::find(last_writes_.begin(), last_writes_.end(), "STAT\r\nUIDL\r\nLIST\r\n"),
            last_writes_.end());
  EXPECT_EQ(last_writes_.back(), "QUIT\r\n");
  pop_ = FakePop();
}

TEST_F(FetchTest, EnvelopeFromAndMetaUidl) {
  struct Capture final : public Destination {
    std::vector<MessageMeta> metas;
    Result<void> store(std::string_view, const MessageMeta& m) override {
      metas.push_back(m);
      return {};
    }
    std::string describe() const override { return "capture"; }
  } cap;
  FakeTransport t(pop_);
  AccountState st = state();
  auto s = run_session(t, cap, st, opts_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  ASSERT_EQ(cap.metas.size(), 3u);
  EXPECT_EQ(cap.metas[0].envelope_from, "MAILER-DAEMON");
  EXPECT_EQ(cap.metas[2].envelope_from, "bounce@example.org");
  EXPECT_EQ(cap.metas[1].uidl, "uid-b");
  EXPECT_GT(cap.metas[0].received_at, 0);
}

TEST_F(FetchTest, NoCommandInjectionThroughUserOrPassword) {
  opts_.user = "alice\r\nDELE 1";
  opts_.auth = AuthMech::apop;
  auto s = run(pop_);
  EXPECT_NE(s.status, FetchStatus::ok);
  EXPECT_FALSE(sent(pop_, "DELE"));
  EXPECT_FALSE(sent(pop_, "APOP"));

  FakePop pop2;
  pop2.greeting = "+OK no apop";
  pop2.capa = {"USER"};
  opts_.user = "alice";
  opts_.password = "pw\r\nDELE 1";
  opts_.allow_plaintext = true;
  auto s2 = run(pop2);
  EXPECT_NE(s2.status, FetchStatus::ok);
  EXPECT_FALSE(sent(pop2, "DELE"));
  EXPECT_FALSE(sent(pop2, "PASS"));
}

// ---- issue 20: max_message_size, fetch_limit, stop -----------------------

TEST_F(FetchTest, MaxMessageSizeLeavesBigMessagesUnseenAndIsNoFailure) {
  pop_.msgs[1].text = "Subject: big\n\n" + std::string(5000, 'x') + "\n";
  opts_.max_message_size = 1000;
  auto s = run(pop_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.too_big, 1u);
  EXPECT_EQ(s.store_failed, 0u);
  EXPECT_EQ(s.stored, 2u);
  EXPECT_EQ(s.deleted, 2u);
  EXPECT_FALSE(sent(pop_, "RETR 2"));
  EXPECT_FALSE(sent(pop_, "DELE 2"));
  ASSERT_EQ(pop_.live().size(), 1u);  // the big one stays on the server
  EXPECT_FALSE(state().seen("uid-b"));
  // Keep mode: still not seen, so a later larger limit fetches it.
  opts_.keep = true;
  opts_.max_message_size = 0;
  auto s2 = run(pop_);
  ASSERT_EQ(s2.status, FetchStatus::ok) << s2.error;
  EXPECT_EQ(s2.too_big, 0u);
  EXPECT_EQ(s2.stored, 1u);
}

TEST_F(FetchTest, FetchLimitTakesTheFirstNewMessagesAndDefersTheRest) {
  opts_.fetch_limit = 2;
  auto s = run(pop_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.stored, 2u);
  EXPECT_EQ(s.deferred, 1u);
  EXPECT_EQ(s.deleted, 2u);
  EXPECT_EQ(s.new_messages, 2u);
  EXPECT_FALSE(sent(pop_, "RETR 3"));
  ASSERT_EQ(dest_.uids, (std::vector<std::string>{"uid-a", "uid-b"}));
  // The next session gets the rest.
  FakePop& again = pop_;
  again.commands.clear();
  auto s2 = run(again);
  ASSERT_EQ(s2.status, FetchStatus::ok) << s2.error;
  EXPECT_EQ(s2.stored, 1u);
  EXPECT_EQ(s2.deferred, 0u);
  EXPECT_TRUE(pop_.live().empty());
}

TEST_F(FetchTest, FetchLimitDoesNotHoldBackDeletionsOfAStoredMessage) {
  // uid-a was stored by a session cut before QUIT: deleted whatever the limit.
  {
    AccountState st = state();
    st.mark_seen("uid-a");
    ASSERT_TRUE(st.save());
  }
  opts_.fetch_limit = 1;
  auto s = run(pop_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.stored, 1u);
  EXPECT_EQ(s.deleted, 2u);
  EXPECT_EQ(s.deferred, 1u);
  EXPECT_EQ(dest_.uids, (std::vector<std::string>{"uid-b"}));
}

TEST_F(FetchTest, StopEndsAfterTheMessageInFlightAndQuitsNormally) {
  std::atomic<bool> stop{false};
  opts_.stop = &stop;
  opts_.pipeline_window = 1;
  opts_.progress = [&stop](const FetchOptions::Progress& p) {
    if (p.done == 1) stop = true;
  };
  auto s = run(pop_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.stored, 1u);
  EXPECT_EQ(s.deleted, 1u);
  EXPECT_TRUE(sent(pop_, "QUIT"));
  EXPECT_FALSE(sent(pop_, "RETR 2"));
  EXPECT_EQ(pop_.live().size(), 2u);
  EXPECT_TRUE(state().seen("uid-a"));
  EXPECT_FALSE(state().seen("uid-b"));
}

TEST_F(FetchTest, StopWithPipeliningStoresTheAnswersAlreadyAskedFor) {
  std::atomic<bool> stop{false};
  opts_.stop = &stop;
  opts_.pipeline_window = 2;
  opts_.progress = [&stop](const FetchOptions::Progress& p) {
    if (p.done == 1) stop = true;
  };
  auto s = run(pop_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.stored, 2u);  // RETR 2 was already sent: its answer is read and stored
  EXPECT_EQ(s.deleted, 2u);
  EXPECT_FALSE(sent(pop_, "RETR 3"));
  EXPECT_EQ(pop_.live().size(), 1u);
}

TEST_F(FetchTest, StopBeforeTheFirstMessageFetchesNothing) {
  std::atomic<bool> stop{true};
  opts_.stop = &stop;
  auto s = run(pop_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.stored, 0u);
  EXPECT_FALSE(sent(pop_, "RETR"));
  EXPECT_TRUE(sent(pop_, "QUIT"));
  EXPECT_EQ(pop_.live().size(), 3u);
}

TEST(FetchStatusMap, NetFailures) {
  EXPECT_EQ(status_for(NetFailure::timeout), FetchStatus::network);
  EXPECT_EQ(status_for(NetFailure::resolve), FetchStatus::network);
  EXPECT_EQ(status_for(NetFailure::tls_verify), FetchStatus::tls_failed);
  EXPECT_EQ(status_for(NetFailure::overlong), FetchStatus::protocol);
}

}  // namespace
}  // namespace apop::client
