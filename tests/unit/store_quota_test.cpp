// Tests for store/quota.hpp: the maildirsize parser, the Maildir++
// recalculation rules, enforcement by Maildir and mbox delivery (also under
// concurrent deliveries), and POP3 deletes recorded in maildirsize.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "store/maildir.hpp"
#include "store/mbox.hpp"
#include "store/quota.hpp"
#include "temp_dir.hpp"

namespace apop::store {
namespace {

namespace fs = std::filesystem;
using ::apop::test::slurp;
using TempDir = ::apop::test::TempDir;

int content_fd(const std::string& content) {
  const int fd = ::memfd_create("apop-test", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  if (!write_all(fd, content) || ::lseek(fd, 0, SEEK_SET) != 0) std::abort();
  return fd;
}

Result<std::string> deliver_text(const fs::path& dir, const std::string& text, QuotaLimits q) {
  UniqueFd fd(content_fd(text));
  DeliverOptions opts;
  opts.hostname = "test";
  opts.quota = q;
  return deliver(dir, fd.get(), opts);
}

void write_file(const fs::path& p, const std::string& s) {
  UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd);
  ASSERT_TRUE(write_all(fd.get(), s));
}

// ---- parser ----

TEST(MaildirsizeParse, LimitsAndLines) {
  auto p = parse_maildirsize("1073741824S,50000C\n100 1\n  250   2\n-100 -1\n");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->limits.bytes, 1073741824u);
  EXPECT_EQ(p->limits.messages, 50000u);
  EXPECT_EQ(p->usage.bytes, 250);
  EXPECT_EQ(p->usage.messages, 2);
  EXPECT_EQ(p->lines, 3u);
}

TEST(MaildirsizeParse, OneLimitOrNone) {
  auto s = parse_maildirsize("1000S\n");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->limits, (QuotaLimits{1000, 0}));
  auto c = parse_maildirsize("20C\n5 1\n");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->limits, (QuotaLimits{0, 20}));
  auto none = parse_maildirsize("\n");
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->limits.unlimited());
}

TEST(MaildirsizeParse, RejectsBadContent) {
  for (const char* bad :
       {"", "1000S", "1000X\n", "1000S,1000S\n", "S\n", "10S,\n", "1000S\n12\n", "1000S\n1 2 3\n",
        "1000S\nabc 1\n", "1000S\n10 1", "1000S\n- 1\n", "99999999999999999999S\n"}) {
    EXPECT_FALSE(parse_maildirsize(bad)) << bad;
  }
}

TEST(MaildirsizeParse, SaturatesInsteadOfOverflowing) {
  std::string s = "1S\n";
  for (int i = 0; i < 20; ++i) s += "999999999999999999 1\n";
  auto p = parse_maildirsize(s);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->usage.bytes, std::numeric_limits<std::int64_t>::max());
}

// Regression (fuzz_maildirsize): a sum of 19 digits, written back, parses.
TEST(MaildirsizeParse, NineteenDigitValuesUpToInt64Max) {
  auto p = parse_maildirsize("10C\n1000000731050073798 0\n");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->usage.bytes, 1000000731050073798);
  EXPECT_TRUE(parse_maildirsize("10C\n9223372036854775807 0\n"));
  EXPECT_FALSE(parse_maildirsize("10C\n9223372036854775808 0\n"));
  EXPECT_FALSE(parse_maildirsize("10C\n10000000000000000000 0\n"));
}

// Regression (fuzz_maildirsize in CI): a sum saturated at std::int64_t's
// minimum, written back, parses again (and nothing below it does).
TEST(MaildirsizeParse, Int64MinimumWrittenBackParses) {
  auto p = parse_maildirsize("10C\n-9223372036854775808 -9223372036854775808\n");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->usage.bytes, std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(p->usage.messages, std::numeric_limits<std::int64_t>::min());
  EXPECT_FALSE(parse_maildirsize("10C\n-9223372036854775809 0\n"));
  EXPECT_FALSE(parse_maildirsize("10C\n+9223372036854775808 0\n"));
}

TEST(MaildirsizeFormat, Limits) {
  EXPECT_EQ(format_maildirsize_limits({1073741824, 50000}), "1073741824S,50000C");
  EXPECT_EQ(format_maildirsize_limits({1000, 0}), "1000S");
  EXPECT_EQ(format_maildirsize_limits({0, 7}), "7C");
  EXPECT_EQ(format_maildirsize_limits({0, 0}), "");
}

TEST(QuotaSize, Parses) {
  EXPECT_EQ(parse_quota_size("1G").value(), 1073741824u);
  EXPECT_EQ(parse_quota_size("500M").value(), 500u * 1024 * 1024);
  EXPECT_EQ(parse_quota_size("64k").value(), 65536u);
  EXPECT_EQ(parse_quota_size("2GiB").value(), 2147483648u);
  EXPECT_EQ(parse_quota_size("10MB").value(), 10u * 1024 * 1024);
  EXPECT_EQ(parse_quota_size("1234").value(), 1234u);
  EXPECT_EQ(parse_quota_size("0").value(), 0u);
  for (const char* bad : {"", "G", "1X", "1GG", "-1", "1.5G", "99999999999T", "iB", "1 G"}) {
    EXPECT_FALSE(parse_quota_size(bad)) << bad;
  }
}

TEST(QuotaAllows, Limits) {
  EXPECT_TRUE(quota_allows({100, 0}, {50, 9}, 50, 1));
  EXPECT_FALSE(quota_allows({100, 0}, {50, 9}, 51, 1));
  EXPECT_TRUE(quota_allows({0, 10}, {5000, 9}, 50, 1));
  EXPECT_FALSE(quota_allows({0, 10}, {0, 10}, 1, 1));
  EXPECT_TRUE(quota_allows({0, 0}, {1 << 30, 1 << 30}, 1 << 30, 1));
}

// ---- the Maildir++ recalculation rules ----

TEST(MaildirsizeRecalc, Rules) {
  using std::chrono::seconds;
  const QuotaLimits q{1000, 10};
  Maildirsize ok{q, {100, 1}, 1};
  EXPECT_FALSE(maildirsize_needs_recalc(ok, 30, seconds(0), q, 10, 1));
  EXPECT_TRUE(maildirsize_needs_recalc(std::nullopt, 0, seconds(0), q, 10, 1));  // missing
  EXPECT_TRUE(maildirsize_needs_recalc(ok, 30, seconds(0), {2000, 10}, 10, 1));  // new limits
  EXPECT_TRUE(maildirsize_needs_recalc(ok, 5120, seconds(0), q, 10, 1));         // too big
  EXPECT_FALSE(maildirsize_needs_recalc(ok, 5119, seconds(0), q, 10, 1));
  // Over quota: recalculated only once the file is 15 minutes old.
  Maildirsize full{q, {990, 5}, 1};
  EXPECT_FALSE(maildirsize_needs_recalc(full, 30, seconds(899), q, 20, 1));
  EXPECT_TRUE(maildirsize_needs_recalc(full, 30, seconds(900), q, 20, 1));
  // An old file that is not over quota is trusted.
  EXPECT_FALSE(maildirsize_needs_recalc(ok, 30, seconds(100000), q, 10, 1));
  Maildirsize negative{q, {-5, 0}, 1};
  EXPECT_TRUE(maildirsize_needs_recalc(negative, 30, seconds(0), q, 10, 1));
}

// ---- Maildir delivery ----

class MaildirQuotaTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(ensure_maildir(dir())); }
  fs::path dir() const { return tmp_.path() / "Maildir"; }
  fs::path size_file() const { return dir() / "maildirsize"; }
  std::size_t count(const char* sub) const {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir() / sub)) ++n;
    return n;
  }
  TempDir tmp_;
};

TEST_F(MaildirQuotaTest, UnlimitedWritesNoMaildirsize) {
  ASSERT_TRUE(deliver_text(dir(), "Subject: a\n\nbody\n", {}));
  EXPECT_FALSE(fs::exists(size_file()));
}

TEST_F(MaildirQuotaTest, DeliveriesAppendLinesAndStopAtTheLimit) {
  const std::string msg(100, 'x');
  const QuotaLimits q{250, 0};
  ASSERT_TRUE(deliver_text(dir(), msg, q));
  // Created by a recalculation (of the empty Maildir) before the link, then
  // the delivery's line.
  EXPECT_EQ(slurp(size_file()), "250S\n0 0\n100 1\n");
  ASSERT_TRUE(deliver_text(dir(), msg, q));
  EXPECT_EQ(slurp(size_file()), "250S\n0 0\n100 1\n100 1\n");
  auto r = deliver_text(dir(), msg, q);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::over_quota);
  EXPECT_EQ(count("new"), 2u);
  EXPECT_EQ(count("tmp"), 0u);  // the refused copy is not left behind
  // A smaller one still fits.
  EXPECT_TRUE(deliver_text(dir(), std::string(50, 'y'), q));
}

// The in-memory variant (the LMTP server's) goes through the same quota
// check, lock and maildirsize line.
TEST_F(MaildirQuotaTest, DeliverPartsAppendsLinesAndStopsAtTheLimit) {
  const QuotaLimits q{250, 0};
  DeliverOptions opts;
  opts.hostname = "test";
  opts.quota = q;
  const std::string head(40, 'h');
  const std::string body(60, 'b');
  const std::array<std::string_view, 2> parts{head, body};
  ASSERT_TRUE(deliver_parts(dir(), parts, opts));
  EXPECT_EQ(slurp(size_file()), "250S\n0 0\n100 1\n");
  ASSERT_TRUE(deliver_parts(dir(), parts, opts));
  EXPECT_EQ(slurp(size_file()), "250S\n0 0\n100 1\n100 1\n");
  auto r = deliver_parts(dir(), parts, opts);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::over_quota);
  EXPECT_EQ(slurp(size_file()), "250S\n0 0\n100 1\n100 1\n");
  EXPECT_EQ(count("new"), 2u);
  EXPECT_EQ(count("tmp"), 0u);  // the refused copy is not left behind
  // A smaller one still fits; a maildirsize file alone (no limits asked)
  // still gets the line.
  const std::array<std::string_view, 1> small{std::string_view(body).substr(0, 50)};
  EXPECT_TRUE(deliver_parts(dir(), small, opts));
  opts.quota = {};
  EXPECT_TRUE(deliver_parts(dir(), small, opts));
  EXPECT_EQ(slurp(size_file()), "250S\n0 0\n100 1\n100 1\n50 1\n50 1\n");
}

TEST_F(MaildirQuotaTest, MessageLimit) {
  const QuotaLimits q{0, 2};
  ASSERT_TRUE(deliver_text(dir(), "a\n", q));
  ASSERT_TRUE(deliver_text(dir(), "b\n", q));
  auto r = deliver_text(dir(), "c\n", q);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::over_quota);
}

TEST_F(MaildirQuotaTest, RecalculatesWhenLimitsChange) {
  ASSERT_TRUE(deliver_text(dir(), std::string(100, 'x'), {1000, 0}));
  // Wrong counts under the same limits are trusted (that is the point of the file) ...
  write_file(size_file(), "1000S\n950 1\n");
  EXPECT_FALSE(deliver_text(dir(), std::string(100, 'x'), {1000, 0}));
  // ... new limits recalculate from the directory: 100 bytes, 1 message.
  ASSERT_TRUE(deliver_text(dir(), std::string(100, 'x'), {1000, 10}));
  EXPECT_EQ(slurp(size_file()), "1000S,10C\n100 1\n100 1\n");
}

TEST_F(MaildirQuotaTest, RecalculatesAStaleFullFileAfter15Minutes) {
  const QuotaLimits q{1000, 0};
  ASSERT_TRUE(deliver_text(dir(), std::string(100, 'x'), q));
  write_file(size_file(), "1000S\n990 1\n");
  EXPECT_FALSE(deliver_text(dir(), std::string(100, 'x'), q));
  const timeval old[2] = {{::time(nullptr) - 901, 0}, {::time(nullptr) - 901, 0}};
  ASSERT_EQ(::utimes(size_file().c_str(), old), 0);
  EXPECT_TRUE(deliver_text(dir(), std::string(100, 'x'), q));
}

TEST_F(MaildirQuotaTest, RecalculatesALargeOrCorruptFile) {
  const QuotaLimits q{100000, 0};
  ASSERT_TRUE(deliver_text(dir(), std::string(10, 'x'), q));
  std::string big = "100000S\n";
  while (big.size() < 5120) big += "1 0\n";
  write_file(size_file(), big);
  ASSERT_TRUE(deliver_text(dir(), std::string(10, 'x'), q));
  EXPECT_EQ(slurp(size_file()), "100000S\n10 1\n10 1\n");
  write_file(size_file(), "100000S\n10 1\n12");  // a line cut by a crash
  ASSERT_TRUE(deliver_text(dir(), std::string(10, 'x'), q));
  EXPECT_EQ(slurp(size_file()), "100000S\n20 2\n10 1\n");
}

TEST_F(MaildirQuotaTest, CountsFilesWithoutSizeFieldByStat) {
  write_file(dir() / "cur" / "1.other.host:2,S", std::string(300, 'z'));
  write_file(dir() / "new" / "2.other.host,S=40", std::string(10, 'z'));  // S= is trusted
  auto u = maildir_quota_usage(dir(), {1000, 0});
  ASSERT_TRUE(u);
  EXPECT_EQ(u->bytes, 340);
  EXPECT_EQ(u->messages, 2);
}

TEST_F(MaildirQuotaTest, ReportingWritesNothingInTheMaildir) {
  // `apop user show` may run as root on the service user's Maildir.
  ASSERT_TRUE(deliver_text(dir(), std::string(10, 'x'), {}));
  auto u = maildir_quota_usage(dir(), {1000, 5});
  ASSERT_TRUE(u);
  EXPECT_EQ(u->bytes, 10);
  EXPECT_FALSE(fs::exists(size_file()));
  EXPECT_FALSE(fs::exists(dir() / "apop-quota.lock"));
  // A trusted maildirsize is read, not recalculated.
  ASSERT_TRUE(deliver_text(dir(), std::string(10, 'x'), {1000, 5}));
  write_file(size_file(), "1000S,5C\n777 3\n");
  u = maildir_quota_usage(dir(), {1000, 5});
  ASSERT_TRUE(u);
  EXPECT_EQ(u->bytes, 777);
}

TEST_F(MaildirQuotaTest, ConcurrentDeliveriesNeverPassTheLimit) {
  // 8 threads x 10 messages of 100 bytes against room for 25: exactly 25 fit.
  const QuotaLimits q{2500, 0};
  std::atomic<int> ok{0}, full{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        auto r = deliver_text(dir(), std::string(100, 'm'), q);
        if (r) {
          ++ok;
        } else if (r.error().code == Errc::over_quota) {
          ++full;
        } else {
          ++other;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 25);
  EXPECT_EQ(full.load(), 55);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(count("new"), 25u);
  auto p = parse_maildirsize(slurp(size_file()));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->usage.bytes, 2500);
  EXPECT_EQ(p->usage.messages, 25);
}

TEST_F(MaildirQuotaTest, ConcurrentProcessesNeverPassTheLimit) {
  const QuotaLimits q{1000, 0};
  std::vector<pid_t> kids;
  for (int k = 0; k < 4; ++k) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      for (int i = 0; i < 5; ++i) (void)deliver_text(dir(), std::string(100, 'p'), q);
      ::_exit(0);
    }
    kids.push_back(pid);
  }
  for (pid_t pid : kids) ::waitpid(pid, nullptr, 0);
  EXPECT_EQ(count("new"), 10u);
}

TEST_F(MaildirQuotaTest, Pop3DeleteFreesRoom) {
  const QuotaLimits q{0, 2};
  ASSERT_TRUE(deliver_text(dir(), "one\n", q));
  ASSERT_TRUE(deliver_text(dir(), "two\n", q));
  ASSERT_FALSE(deliver_text(dir(), "three\n", q));
  {
    MaildirOpener opener(tmp_.path());
    auto drop = opener.open(pop3::MailboxAddress("Maildir"));
    ASSERT_TRUE(drop) << drop.error().message;
    const std::size_t first = 0;
    ASSERT_TRUE((*drop)->commit(std::span<const std::size_t>(&first, 1)));
  }
  EXPECT_EQ(slurp(size_file()), "2C\n0 0\n4 1\n4 1\n-4 -1\n");
  EXPECT_TRUE(deliver_text(dir(), "three\n", q));
}

// ---- mbox ----

TEST(MboxQuota, BytesAndMessages) {
  TempDir tmp;
  const fs::path box = tmp.path() / "box";
  auto put = [&](const std::string& text, QuotaLimits q) {
    UniqueFd fd(content_fd(text));
    MboxDeliverOptions o;
    o.sender = "a@example.org";
    o.quota = q;
    return mbox_deliver(box, fd.get(), o);
  };
  ASSERT_TRUE(put("Subject: 1\n\nFrom me\n", {0, 2}));
  ASSERT_TRUE(put("Subject: 2\n\nbody\n", {0, 2}));
  auto r = put("Subject: 3\n\nbody\n", {0, 2});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::over_quota);
  const auto size = fs::file_size(box);
  auto usage = mbox_quota_usage(box);
  ASSERT_TRUE(usage);
  EXPECT_EQ(usage->messages, 2);  // the quoted ">From me" is no message
  EXPECT_EQ(usage->bytes, static_cast<std::int64_t>(size));
  EXPECT_FALSE(put("Subject: 3\n\nbody\n", {size + 10, 0}));
  EXPECT_TRUE(put("Subject: 3\n\nbody\n", {size + 1000, 0}));
}

TEST(MboxQuota, CountsFromLinesAcrossReads) {
  TempDir tmp;
  const fs::path box = tmp.path() / "box";
  std::string content;
  for (int i = 0; i < 5000; ++i)
    content += "From x@y Thu Jan  1 00:00:00 1970\nS: " + std::to_string(i) + "\n\n";
  write_file(box, content);
  auto u = mbox_quota_usage(box);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->messages, 5000);
}

}  // namespace
}  // namespace apop::store
