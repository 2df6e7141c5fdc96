// The I/O-free parts of `apop bench`: accounts file, workload scripts, the
// multi-line terminator scanner, the latency histogram and the report.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "client/bench.hpp"

namespace apop::client::bench {
namespace {

TEST(BenchAccounts, ParsesPairsCommentsAndBlankLines) {
  auto r = parse_accounts("# users\n\nalice secret-one\r\n  bob\tsecret two  \ncarol x\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].user, "alice");
  EXPECT_EQ((*r)[0].secret, "secret-one");
  EXPECT_EQ((*r)[1].user, "bob");
  EXPECT_EQ((*r)[1].secret, "secret two");  // the rest of the line, inner space kept
  EXPECT_EQ((*r)[2].secret, "x");
}

TEST(BenchAccounts, NoTrailingNewline) {
  auto r = parse_accounts("alice s1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0].secret, "s1");
}

TEST(BenchAccounts, RejectsLineWithoutSecretNamingTheLine) {
  auto r = parse_accounts("alice s1\nbob\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::invalid);
  EXPECT_NE(r.error().message.find("line 2"), std::string::npos) << r.error().message;
}

TEST(BenchAccounts, RejectsControlCharactersAndEmptyFiles) {
  EXPECT_FALSE(parse_accounts(std::string("al\x01ice s\n")).ok());
  EXPECT_FALSE(parse_accounts(std::string("alice s\0x\n", 10)).ok());
  EXPECT_FALSE(parse_accounts("").ok());
  EXPECT_FALSE(parse_accounts("# only a comment\n\n").ok());
}

TEST(BenchWorkload, NamesRoundTrip) {
  for (auto w : {Workload::login, Workload::stat, Workload::retr, Workload::top, Workload::mixed}) {
    EXPECT_EQ(parse_workload(workload_name(w)), w);
  }
  EXPECT_EQ(parse_workload("RETR"), Workload::retr);
  EXPECT_FALSE(parse_workload("dele").has_value());
  EXPECT_EQ(parse_auth_kind("SCRAM-SHA-256"), AuthKind::scram_sha_256);
  EXPECT_EQ(parse_auth_kind("user"), AuthKind::user);
  EXPECT_EQ(parse_auth_kind("none"), AuthKind::none);
  EXPECT_EQ(auth_kind_name(AuthKind::none), "none");
  EXPECT_FALSE(parse_auth_kind("plain").has_value());
}

std::vector<std::string> commands(const std::vector<Step>& steps) {
  std::vector<std::string> out;
  for (const auto& s : steps) out.push_back(step_command(s));
  return out;
}

TEST(BenchWorkload, Scripts) {
  using V = std::vector<std::string>;
  EXPECT_FALSE(needs_stat(Workload::login));
  EXPECT_TRUE(needs_stat(Workload::stat));
  EXPECT_EQ(commands(plan(Workload::login, 5, 0, 0)), V{"QUIT\r\n"});
  EXPECT_EQ(commands(plan(Workload::stat, 5, 0, 0)), V{"QUIT\r\n"});
  EXPECT_EQ(commands(plan(Workload::retr, 3, 0, 0)),
            (V{"RETR 1\r\n", "RETR 2\r\n", "RETR 3\r\n", "QUIT\r\n"}));
  EXPECT_EQ(commands(plan(Workload::retr, 3, 2, 0)), (V{"RETR 1\r\n", "RETR 2\r\n", "QUIT\r\n"}));
  EXPECT_EQ(commands(plan(Workload::top, 2, 0, 0)), (V{"TOP 1 0\r\n", "TOP 2 0\r\n", "QUIT\r\n"}));
  EXPECT_EQ(commands(plan(Workload::retr, 0, 0, 0)), V{"QUIT\r\n"});  // empty mailbox
}

TEST(BenchWorkload, MixedCyclesThroughFourSessionKinds) {
  using V = std::vector<std::string>;
  EXPECT_EQ(commands(plan(Workload::mixed, 50, 0, 0)), V{"QUIT\r\n"});
  EXPECT_EQ(commands(plan(Workload::mixed, 50, 0, 1)), (V{"UIDL\r\n", "QUIT\r\n"}));
  auto tops = plan(Workload::mixed, 50, 0, 2);
  ASSERT_EQ(tops.size(), 11u);  // at most 10 messages, then QUIT
  EXPECT_EQ(step_command(tops[9]), "TOP 10 0\r\n");
  auto dl = plan(Workload::mixed, 3, 0, 7);
  EXPECT_EQ(commands(dl), (V{"LIST\r\n", "RETR 1\r\n", "RETR 2\r\n", "RETR 3\r\n", "QUIT\r\n"}));
  EXPECT_EQ(plan(Workload::mixed, 50, 0, 4).size(), 1u);  // index 4 is kind 0 again
}

TEST(BenchWorkload, MultilineCommands) {
  EXPECT_TRUE(step_multiline(Step::Kind::retr));
  EXPECT_TRUE(step_multiline(Step::Kind::top));
  EXPECT_TRUE(step_multiline(Step::Kind::list));
  EXPECT_TRUE(step_multiline(Step::Kind::uidl));
  EXPECT_FALSE(step_multiline(Step::Kind::stat));
  EXPECT_FALSE(step_multiline(Step::Kind::quit));
}

// ---------------------------------------------------------------------------

TEST(BenchScanner, FindsTerminatorInOneChunk) {
  TerminatorScanner sc;
  std::string body = "line 1\r\n..stuffed\r\n.x\r\n\r\n.\r\nNEXT";
  auto end = sc.feed(body);
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(body.substr(*end), "NEXT");
  EXPECT_TRUE(sc.done());
}

TEST(BenchScanner, EmptyBodyAndBareLf) {
  TerminatorScanner a;
  EXPECT_EQ(a.feed(".\r\n"), std::optional<std::size_t>(3));
  TerminatorScanner b;
  EXPECT_EQ(b.feed("x\n.\nrest"), std::optional<std::size_t>(4));
}

TEST(BenchScanner, DotInsideALineIsNotTheEnd) {
  TerminatorScanner sc;
  EXPECT_FALSE(sc.feed("a.\r\n b\r\n.. \r\n x.\r\n").has_value());
  EXPECT_FALSE(sc.done());
  EXPECT_TRUE(sc.feed(".\r\n").has_value());
}

TEST(BenchScanner, EveryChunkingGivesTheSameEnd) {
  const std::string body = "From: a\r\n\r\n..dot\r\n.\rx\r\nend\r\n.\r\n";
  for (std::size_t cut1 = 0; cut1 <= body.size(); ++cut1) {
    for (std::size_t cut2 = cut1; cut2 <= body.size(); ++cut2) {
      TerminatorScanner sc;
      std::size_t total = 0;
      std::optional<std::size_t> end;
      for (auto piece : {body.substr(0, cut1), body.substr(cut1, cut2 - cut1), body.substr(cut2)}) {
        if (end) break;
        auto r = sc.feed(piece);
        if (r) {
          end = total + *r;
        } else {
          total += piece.size();
        }
      }
      ASSERT_TRUE(end.has_value()) << cut1 << "/" << cut2;
      EXPECT_EQ(*end, body.size()) << cut1 << "/" << cut2;
    }
  }
}

// ---------------------------------------------------------------------------

TEST(BenchHistogram, EmptyIsZero) {
  Histogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.percentile(50), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.mean(), 0.0);
}

TEST(BenchHistogram, ExactBelow1024NearestRank) {
  Histogram h;
  for (std::uint64_t v = 1; v <= 100; ++v) h.add(v);
  EXPECT_EQ(h.percentile(50), 50u);
  EXPECT_EQ(h.percentile(99), 99u);
  EXPECT_EQ(h.percentile(100), 100u);
  EXPECT_EQ(h.percentile(0), 1u);
  EXPECT_EQ(h.percentile(1), 1u);
  EXPECT_EQ(h.percentile(1.5), 2u);
  EXPECT_EQ(h.min(), 1u);
  EXPECT_EQ(h.max(), 100u);
  EXPECT_DOUBLE_EQ(h.mean(), 50.5);
}

TEST(BenchHistogram, SingleSampleIsEveryPercentile) {
  Histogram h;
  h.add(123456);
  EXPECT_EQ(h.percentile(1), 123456u);
  EXPECT_EQ(h.percentile(50), 123456u);
  EXPECT_EQ(h.percentile(99), 123456u);
}

TEST(BenchHistogram, LargeValuesWithinOnePercent) {
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<std::uint64_t> d(1, 10'000'000);
  std::vector<std::uint64_t> v(20000);
  Histogram h;
  for (auto& x : v) {
    x = d(rng);
    h.add(x);
  }
  std::sort(v.begin(), v.end());
  for (double p : {50.0, 90.0, 99.0, 99.9}) {
    auto rank = static_cast<std::size_t>(std::ceil(p / 100 * v.size()));
    double exact = static_cast<double>(v[rank - 1]);
    double got = static_cast<double>(h.percentile(p));
    EXPECT_GE(got, exact) << p;  // the bucket's upper bound
    EXPECT_LE(got, exact * 1.008) << p;
  }
  EXPECT_EQ(h.max(), v.back());
}

TEST(BenchHistogram, HugeValuesAreCappedNotLost) {
  Histogram h;
  h.add(~std::uint64_t{0});
  h.add(5);
  EXPECT_EQ(h.count(), 2u);
  EXPECT_EQ(h.percentile(50), 5u);
  EXPECT_EQ(h.percentile(100), ~std::uint64_t{0});
}

TEST(BenchHistogram, MergeEqualsAddingEverything) {
  Histogram a, b, all;
  for (std::uint64_t v = 0; v < 5000; v += 7) {
    (v % 2 ? a : b).add(v * 13);
    all.add(v * 13);
  }
  a.merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  for (double p : {10.0, 50.0, 99.0}) EXPECT_EQ(a.percentile(p), all.percentile(p));
}

// ---------------------------------------------------------------------------

TEST(BenchReport, RatesJsonAndText) {
  Report r;
  r.target = "127.0.0.1:110";
  r.workload = Workload::retr;
  r.concurrency = 4;
  r.sessions_ok = 50;
  r.sessions_failed = 2;
  r.elapsed_s = 2.0;
  r.bytes_received = 10'000'000;
  r.session.add(2000);
  r.commands["RETR"].add(1500);
  r.errors["auth"] = 2;
  r.error_samples["auth"] = "APOP: -ERR [AUTH] nope";
  EXPECT_DOUBLE_EQ(r.sessions_per_s(), 25.0);
  EXPECT_DOUBLE_EQ(r.mb_per_s(), 5.0);
  auto j = r.json();
  EXPECT_EQ(j["workload"], "retr");
  EXPECT_EQ(j["sessions_ok"], 50);
  EXPECT_EQ(j["errors"]["auth"], 2);
  EXPECT_DOUBLE_EQ(j["latency_ms"]["RETR"]["p50"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(j["latency_ms"]["session"]["p99"].get<double>(), 2.0);
  std::string t = r.text();
  EXPECT_NE(t.find("25.0 sessions/s"), std::string::npos) << t;
  EXPECT_NE(t.find("5.00 MB/s"), std::string::npos) << t;
  EXPECT_NE(t.find("auth"), std::string::npos) << t;
}

TEST(BenchReport, ZeroElapsedHasZeroRates) {
  Report r;
  r.sessions_ok = 3;
  EXPECT_EQ(r.sessions_per_s(), 0.0);
  EXPECT_EQ(r.mb_per_s(), 0.0);
  EXPECT_NE(r.text().find("errors: none"), std::string::npos);
}

}  // namespace
}  // namespace apop::client::bench
