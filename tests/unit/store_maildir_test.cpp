// Tests for store/maildir.hpp and store/maildir_name.hpp: delivery, the
// Maildir maildrop (locking, new->cur, sizes, UIDLs, order, commit).
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "store/maildir.hpp"
#include "store/maildir_name.hpp"
#include "temp_dir.hpp"

namespace apop::store {
namespace {

namespace fs = std::filesystem;

using TempDir = ::apop::test::TempDir;

// A readable descriptor holding `content`, positioned at its start.
int content_fd(const std::string& content) {
  const int fd = ::memfd_create("apop-test", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  std::size_t off = 0;
  while (off < content.size()) {
    const ssize_t w = ::write(fd, content.data() + off, content.size() - off);
    if (w <= 0) std::abort();
    off += static_cast<std::size_t>(w);
  }
  ::lseek(fd, 0, SEEK_SET);
  return fd;
}

Result<std::string> deliver_string(const fs::path& dir, const std::string& content,
                                   DeliverOptions opts = {}) {
  if (opts.hostname.empty()) opts.hostname = "host.example";
  const int fd = content_fd(content);
  auto r = deliver(dir, fd, opts);
  ::close(fd);
  return r;
}

std::vector<std::string> list_dir(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& p, const std::string& content) {
  std::ofstream out(p, std::ios::binary);
  out << content;
  ASSERT_TRUE(out.good()) << p;
}

std::string read_all(pop3::ByteSource& src, std::size_t chunk = 7) {
  std::string out;
  std::vector<char> buf(chunk);
  for (;;) {
    auto r = src.read(buf);
    EXPECT_TRUE(r.ok());
    if (!r.ok() || *r == 0) return out;
    out.append(buf.data(), *r);
  }
}

std::string message_text(pop3::Maildrop& drop, std::size_t index) {
  auto src = drop.open(index);
  EXPECT_TRUE(src.ok()) << (src.ok() ? "" : src.error().message);
  if (!src.ok()) return "<error>";
  return read_all(*src.value());
}

std::vector<std::string> uidls(const pop3::Maildrop& drop) {
  std::vector<std::string> out;
  for (const auto& m : drop.messages()) out.push_back(m.uidl);
  return out;
}

class MaildirTest : public ::testing::Test {
 protected:
  fs::path root() const { return tmp_.path() / "mail"; }
  fs::path box() const { return root() / "alice"; }
  void SetUp() override { ASSERT_TRUE(ensure_maildir(box()).ok()); }

  std::unique_ptr<pop3::Maildrop> open_box() {
    MaildirOpener opener(root());
    auto r = opener.open("alice");
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    if (!r.ok()) return nullptr;
    return std::move(r).value();
  }

  TempDir tmp_;
};

// --- names -----------------------------------------------------------------

TEST(MaildirName, BaseNameAndFields) {
  EXPECT_EQ(maildir_base_name("1.M2P3Q4.h,S=10,W=12:2,S"), "1.M2P3Q4.h,S=10,W=12");
  EXPECT_EQ(maildir_base_name("plain"), "plain");
  EXPECT_EQ(maildir_name_field("1.M2P3Q4.h,S=10,W=12", 'S'), 10u);
  EXPECT_EQ(maildir_name_field("1.M2P3Q4.h,S=10,W=12", 'W'), 12u);
  EXPECT_EQ(maildir_name_field("1.M2P3Q4.h,S=10", 'W'), std::nullopt);
  EXPECT_EQ(maildir_name_field("1.M2P3Q4.h,W=", 'W'), std::nullopt);
  EXPECT_EQ(maildir_name_field("1.M2P3Q4.h,W=1x", 'W'), std::nullopt);
  EXPECT_EQ(maildir_name_field("1.M2P3Q4.h,W=99999999999999999999999", 'W'), std::nullopt);
  EXPECT_EQ(maildir_name_field("W=5.host", 'W'), std::nullopt);  // not a field
  EXPECT_EQ(maildir_name_time("1700000000.M1P2Q3.h"), 1700000000u);
  EXPECT_EQ(maildir_name_time("abc"), 0u);
}

TEST(MaildirName, UidlRules) {
  EXPECT_EQ(maildir_uidl("1.M2P3Q4.h,S=10,W=12"), "1.M2P3Q4.h");
  EXPECT_EQ(maildir_uidl("1.M2P3Q4.h,W=12,X=1,S=10"), "1.M2P3Q4.h,X=1");
  const std::string long_base(100, 'a');
  const std::string h = maildir_uidl(long_base);
  EXPECT_EQ(h.size(), 41u);
  EXPECT_EQ(h[0], 'H');
  EXPECT_TRUE(valid_uidl(h));
  EXPECT_EQ(h, maildir_uidl(long_base));
  EXPECT_NE(h, maildir_uidl(std::string(101, 'a')));
  // Spaces and non-ASCII are not allowed in a UIDL: hashed.
  EXPECT_EQ(maildir_uidl("1.with space,S=3")[0], 'H');
  EXPECT_EQ(maildir_uidl("1.caf\xc3\xa9")[0], 'H');
  // SHA-1("abc") = a9993e36...
  EXPECT_EQ(hashed_uidl("abc"), "Ha9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_TRUE(valid_uidl(std::string(70, '!')));
  EXPECT_FALSE(valid_uidl(std::string(71, '!')));
  EXPECT_FALSE(valid_uidl(""));
  EXPECT_FALSE(valid_uidl("a\x7f"));
}

TEST(MaildirName, HostEscape) {
  EXPECT_EQ(escape_maildir_host("a/b:c,d.e"), "a\\057b\\072c\\054d.e");
}

// --- ensure_maildir --------------------------------------------------------

TEST(EnsureMaildir, CreatesDirsWith0700) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "a" / "b";
  ASSERT_TRUE(ensure_maildir(dir).ok());
  for (const char* sub : {"", "cur", "new", "tmp"}) {
    struct stat st {};
    ASSERT_EQ(::stat((dir / sub).c_str(), &st), 0) << sub;
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0700u) << sub;
  }
  EXPECT_TRUE(ensure_maildir(dir).ok());  // idempotent
}

TEST(EnsureMaildir, FileInTheWayIsAnError) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "m";
  ASSERT_TRUE(ensure_maildir(dir).ok());
  fs::remove(dir / "new");
  write_file(dir / "new", "x");
  auto r = ensure_maildir(dir);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
}

// --- deliver ---------------------------------------------------------------

TEST_F(MaildirTest, DeliverLfMessageNameAndSize) {
  const std::string msg = "Subject: hi\n\nline1\nline2\n";
  auto name = deliver_string(box(), msg);
  ASSERT_TRUE(name.ok()) << name.error().message;
  const std::regex re(R"(^\d+\.M\d+P\d+Q\d+\.host\.example,S=(\d+),W=(\d+)$)");
  std::smatch m;
  ASSERT_TRUE(std::regex_match(*name, m, re)) << *name;
  EXPECT_EQ(m[1], std::to_string(msg.size()));
  EXPECT_EQ(m[2], std::to_string(msg.size() + 4));  // four LFs become CRLF
  EXPECT_EQ(list_dir(box() / "new"), std::vector<std::string>{*name});
  EXPECT_TRUE(list_dir(box() / "tmp").empty());
  EXPECT_EQ(read_file(box() / "new" / *name), msg);

  auto drop = open_box();
  ASSERT_TRUE(drop);
  ASSERT_EQ(drop->messages().size(), 1u);
  EXPECT_EQ(drop->messages()[0].size, msg.size() + 4);
  EXPECT_EQ(message_text(*drop, 0), msg);
}

TEST_F(MaildirTest, DeliverCrlfMessageSize) {
  const std::string msg = "Subject: hi\r\n\r\nline1\r\nline2";  // no final newline
  auto name = deliver_string(box(), msg);
  ASSERT_TRUE(name.ok()) << name.error().message;
  const std::string sizes = ",S=" + std::to_string(msg.size()) + ",W=" + std::to_string(msg.size());
  EXPECT_TRUE(name->ends_with(sizes)) << *name;
  auto drop = open_box();
  ASSERT_TRUE(drop);
  ASSERT_EQ(drop->messages().size(), 1u);
  EXPECT_EQ(drop->messages()[0].size, msg.size());
  EXPECT_EQ(message_text(*drop, 0), msg);
}

TEST_F(MaildirTest, DeliverEmptyMessage) {
  auto name = deliver_string(box(), "");
  ASSERT_TRUE(name.ok());
  EXPECT_TRUE(name->ends_with(",S=0,W=0")) << *name;
  auto drop = open_box();
  ASSERT_TRUE(drop);
  ASSERT_EQ(drop->messages().size(), 1u);
  EXPECT_EQ(drop->messages()[0].size, 0u);
  EXPECT_EQ(message_text(*drop, 0), "");
}

TEST_F(MaildirTest, DeliverEscapesHostname) {
  DeliverOptions opts;
  opts.hostname = "odd/host:name";
  auto name = deliver_string(box(), "x\n", opts);
  ASSERT_TRUE(name.ok());
  EXPECT_NE(name->find(".odd\\057host\\072name,S=2,W=3"), std::string::npos) << *name;
  EXPECT_EQ(name->find(':'), std::string::npos);
  EXPECT_EQ(name->find('/'), std::string::npos);
}

TEST_F(MaildirTest, DeliverDefaultHostnameIsLocalHost) {
  const int fd = content_fd("x\n");
  auto name = deliver(box(), fd, DeliverOptions{});
  ::close(fd);
  ASSERT_TRUE(name.ok());
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  EXPECT_NE(name->find("." + escape_maildir_host(host) + ",S="), std::string::npos) << *name;
}

TEST_F(MaildirTest, DeliverNamesAreUnique) {
  std::set<std::string> names;
  for (int i = 0; i < 50; ++i) {
    auto name = deliver_string(box(), "m" + std::to_string(i) + "\n");
    ASSERT_TRUE(name.ok());
    names.insert(*name);
  }
  EXPECT_EQ(names.size(), 50u);
  EXPECT_EQ(list_dir(box() / "new").size(), 50u);
}

// The P field is the delivering process's id, in a forked child too (the
// id is asked once per process).
TEST_F(MaildirTest, DeliverNamesCarryThePidAfterAFork) {
  auto parent = deliver_string(box(), "p\n");
  ASSERT_TRUE(parent.ok());
  EXPECT_NE(parent->find("P" + std::to_string(::getpid()) + "Q"), std::string::npos) << *parent;
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto child = deliver_string(box(), "c\n");
    const bool ok =
        child.ok() && child->find("P" + std::to_string(::getpid()) + "Q") != std::string::npos;
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(MaildirTest, DeliverStripsLeadingFromLine) {
  const std::string body = "Subject: x\n\nFrom here on\n";
  auto name = deliver_string(box(), "From sender@example.org  Mon Jan  1 00:00:00 2024\n" + body);
  ASSERT_TRUE(name.ok());
  EXPECT_EQ(read_file(box() / "new" / *name), body);
  EXPECT_TRUE(name->ends_with(",S=" + std::to_string(body.size()) +
                              ",W=" + std::to_string(body.size() + 3)))
      << *name;
}

TEST_F(MaildirTest, DeliverStripsFromLineLongerThanAChunk) {
  const std::string body = "Subject: y\r\n\r\nbody\r\n";
  auto name = deliver_string(box(), "From " + std::string(200000, 'x') + "\r\n" + body);
  ASSERT_TRUE(name.ok());
  EXPECT_EQ(read_file(box() / "new" / *name), body);
}

TEST_F(MaildirTest, DeliverKeepsNonEnvelopeStarts) {
  for (const std::string msg : {"From: a@b\n\nx\n", "Fro", "From", "Frog\n", "from x\n"}) {
    auto name = deliver_string(box(), msg);
    ASSERT_TRUE(name.ok());
    EXPECT_EQ(read_file(box() / "new" / *name), msg);
  }
  // A bare envelope line and nothing else is an empty message.
  auto name = deliver_string(box(), "From x");
  ASSERT_TRUE(name.ok());
  EXPECT_EQ(read_file(box() / "new" / *name), "");
}

TEST_F(MaildirTest, DeliverTooLargeIsInvalidAndLeavesNothing) {
  DeliverOptions opts;
  opts.max_size = 10;
  auto ok = deliver_string(box(), std::string(10, 'a'), opts);  // exactly the limit
  ASSERT_TRUE(ok.ok());
  fs::remove(box() / "new" / *ok);
  auto r = deliver_string(box(), std::string(11, 'a'), opts);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::invalid);
  opts.max_size = 100;
  auto big = deliver_string(box(), std::string(300000, 'a'), opts);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, Errc::invalid);
  EXPECT_TRUE(list_dir(box() / "tmp").empty());
  EXPECT_TRUE(list_dir(box() / "new").empty());
  EXPECT_TRUE(list_dir(box() / "cur").empty());
}

TEST_F(MaildirTest, DeliverFromLineDoesNotCountTowardsLimit) {
  DeliverOptions opts;
  opts.max_size = 4;
  auto r = deliver_string(box(), "From someone-with-a-long-address@example.org\nabcd", opts);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(read_file(box() / "new" / *r), "abcd");
}

TEST_F(MaildirTest, DeliverIntoMissingDirFails) {
  auto r = deliver_string(tmp_.path() / "nope", "x\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_FALSE(fs::exists(tmp_.path() / "nope"));
}

TEST_F(MaildirTest, DeliverWithoutNewDirRemovesTmpFile) {
  // tmp/ exists but the link into new/ cannot happen.
  fs::remove(box() / "new");
  write_file(box() / "new", "not a dir");
  auto r = deliver_string(box(), "x\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_TRUE(list_dir(box() / "tmp").empty());
  EXPECT_TRUE(list_dir(box() / "cur").empty());
}

TEST_F(MaildirTest, DeliverReadErrorRemovesTmpFile) {
  // read() on a directory fails with EISDIR after the tmp file exists.
  const int fd = ::open(box().c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(fd, 0);
  auto r = deliver(box(), fd, DeliverOptions{.max_size = 1000, .hostname = "h", .quota = {}});
  ::close(fd);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_TRUE(list_dir(box() / "tmp").empty());
  EXPECT_TRUE(list_dir(box() / "new").empty());
}

// --- deliver_parts ---------------------------------------------------------

Result<std::string> deliver_split(const fs::path& dir, const std::vector<std::string>& parts,
                                  DeliverOptions opts = {}) {
  if (opts.hostname.empty()) opts.hostname = "host.example";
  const std::vector<std::string_view> views(parts.begin(), parts.end());
  return deliver_parts(dir, views, opts);
}

// The name's fields after the unique base: ",S=...,W=...".
std::string size_fields(const std::string& name) {
  const auto at = name.find(",S=");
  return at == std::string::npos ? "<none in " + name + ">" : name.substr(at);
}

TEST_F(MaildirTest, DeliverPartsMatchesDeliverFromAnFd) {
  const std::vector<std::string> messages = {
      "Subject: lf\n\nline1\nline2\n",
      "Subject: crlf\r\n\r\nline1\r\nline2\r\n",
      "Subject: empty last line\n\nbody\n\n",
      "Subject: no final newline\r\n\r\nbody",
      "Subject: mixed\r\n\nbare\rcr\r\r\n\n",
      "\r\n",
      "x",
  };
  for (const std::string& msg : messages) {
    SCOPED_TRACE(msg);
    auto from_fd = deliver_string(box(), msg);
    ASSERT_TRUE(from_fd.ok()) << from_fd.error().message;
    // Every two-part split (including "...\r" | "\n..." and an empty part
    // either side), and one part per byte.
    std::vector<std::vector<std::string>> splits;
    for (std::size_t cut = 0; cut <= msg.size(); ++cut) {
      splits.push_back({msg.substr(0, cut), msg.substr(cut)});
    }
    std::vector<std::string> bytes;
    for (char c : msg) bytes.emplace_back(1, c);
    splits.push_back(bytes);
    for (const auto& parts : splits) {
      auto name = deliver_split(box(), parts);
      ASSERT_TRUE(name.ok()) << name.error().message;
      EXPECT_EQ(size_fields(*name), size_fields(*from_fd)) << parts.size() << " parts";
      EXPECT_EQ(read_file(box() / "new" / *name), msg);
      EXPECT_TRUE(name->ends_with(".host.example" + size_fields(*from_fd))) << *name;
    }
  }
  EXPECT_TRUE(list_dir(box() / "tmp").empty());
}

TEST_F(MaildirTest, DeliverPartsStoresALeadingFromLineAsGiven) {
  const std::string msg = "From sender@example.org  Mon Jan  1 00:00:00 2024\nSubject: x\n\nb\n";
  auto name = deliver_split(box(), {"From sender@example.org", msg.substr(23)});
  ASSERT_TRUE(name.ok()) << name.error().message;
  EXPECT_EQ(read_file(box() / "new" / *name), msg);
  EXPECT_EQ(size_fields(*name),
            ",S=" + std::to_string(msg.size()) + ",W=" + std::to_string(msg.size() + 4));
}

TEST_F(MaildirTest, DeliverPartsManyAndLargeParts) {
  // More parts than one writev(2) takes, empty ones among them, and parts
  // larger than a pipe or a chunk.
  std::vector<std::string> parts;
  std::string all;
  for (int i = 0; i < 100; ++i) {
    parts.push_back(i % 3 == 0 ? "" : "line " + std::to_string(i) + "\n");
    if (i % 10 == 0) parts.push_back(std::string(70000 + i, static_cast<char>('a' + i % 26)));
  }
  parts.push_back("");
  for (const auto& p : parts) all += p;
  auto name = deliver_split(box(), parts);
  ASSERT_TRUE(name.ok()) << name.error().message;
  EXPECT_EQ(read_file(box() / "new" / *name), all);
  auto from_fd = deliver_string(box(), all);
  ASSERT_TRUE(from_fd.ok());
  EXPECT_EQ(size_fields(*name), size_fields(*from_fd));
  EXPECT_TRUE(deliver_split(box(), {}).ok());  // no parts: an empty message
}

TEST_F(MaildirTest, DeliverPartsWriteErrorAfterAShortWriteRemovesTmpFile) {
  // RLIMIT_FSIZE cuts a writev(2) short inside a part, then fails the next
  // one with EFBIG: in a child, which the limit and SIGXFSZ must not outlive.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    const rlimit lim{100, 100};
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(2);
    auto r = deliver_split(box(), {std::string(80, 'a'), std::string(80, 'b'), "c\n"});
    const bool ok = !r.ok() && r.error().code == Errc::temporary &&
                    list_dir(box() / "tmp").empty() && list_dir(box() / "new").empty();
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(MaildirTest, DeliverPartsTooLargeIsRefusedUpFront) {
  DeliverOptions opts;
  opts.max_size = 10;
  EXPECT_TRUE(deliver_split(box(), {"abcd", "efghij"}, opts).ok());  // exactly the limit
  auto r = deliver_split(box(), {"abcde", "fghijk"}, opts);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::invalid);
  EXPECT_EQ(list_dir(box() / "new").size(), 1u);
  EXPECT_TRUE(list_dir(box() / "tmp").empty());
  // Before the Maildir is touched: a missing one is not made.
  opts.create = true;
  auto missing = deliver_split(tmp_.path() / "other", {std::string(11, 'x')}, opts);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, Errc::invalid);
  EXPECT_FALSE(fs::exists(tmp_.path() / "other"));
}

TEST_F(MaildirTest, DeliverCreatesAMissingMaildirOnlyWhenAsked) {
  const fs::path dir = tmp_.path() / "a" / "b" / "Maildir";
  auto refused = deliver_split(dir, {"x\n"});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::temporary);
  EXPECT_FALSE(fs::exists(tmp_.path() / "a"));

  DeliverOptions opts;
  opts.create = true;
  auto name = deliver_split(dir, {"Subject: ", "first\n"}, opts);
  ASSERT_TRUE(name.ok()) << name.error().message;
  EXPECT_EQ(read_file(dir / "new" / *name), "Subject: first\n");
  for (const char* sub : {"cur", "new", "tmp"}) {
    EXPECT_EQ(fs::status(dir / sub).permissions() & fs::perms::all, fs::perms::owner_all) << sub;
  }
  // The descriptor variant too (apop deliver).
  const fs::path other = tmp_.path() / "c" / "Maildir";
  const int fd = content_fd("y\n");
  auto r = deliver(other, fd, opts);
  ::close(fd);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(read_file(other / "new" / *r), "y\n");
}

TEST_F(MaildirTest, DeliverRepairsAMissingSubdirectoryWhenAsked) {
  DeliverOptions opts;
  opts.create = true;
  for (const char* sub : {"tmp", "new"}) {
    SCOPED_TRACE(sub);
    fs::remove_all(box() / sub);
    EXPECT_FALSE(deliver_split(box(), {"x\n"}).ok());  // not without create
    auto name = deliver_split(box(), {"x\n"}, opts);
    ASSERT_TRUE(name.ok()) << name.error().message;
    EXPECT_TRUE(fs::is_directory(box() / sub));
    EXPECT_EQ(read_file(box() / "new" / *name), "x\n");
    EXPECT_TRUE(list_dir(box() / "tmp").empty());
  }
}

TEST_F(MaildirTest, DeliverCreateStillRefusesAFileInTheWay) {
  DeliverOptions opts;
  opts.create = true;
  fs::remove(box() / "new");
  write_file(box() / "new", "not a dir");
  auto r = deliver_split(box(), {"x\n"}, opts);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_NE(r.error().message.find("not a directory"), std::string::npos) << r.error().message;
  EXPECT_EQ(read_file(box() / "new"), "not a dir");
  EXPECT_TRUE(list_dir(box() / "tmp").empty());
}

// Drops the capabilities that let root ignore file permissions, for this
// thread only, and restores them on destruction.
class DropDacOverride {
 public:
  DropDacOverride() {
    header_.version = _LINUX_CAPABILITY_VERSION_3;
    header_.pid = 0;
    if (::syscall(SYS_capget, &header_, saved_) != 0) return;
    __user_cap_data_struct reduced[2] = {saved_[0], saved_[1]};
    const unsigned mask =
        (1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH) | (1u << CAP_FOWNER);
    reduced[0].effective &= ~mask;
    active_ = ::syscall(SYS_capset, &header_, reduced) == 0;
  }
  ~DropDacOverride() {
    if (active_) ::syscall(SYS_capset, &header_, saved_);
  }
  DropDacOverride(const DropDacOverride&) = delete;
  DropDacOverride& operator=(const DropDacOverride&) = delete;

 private:
  __user_cap_header_struct header_{};
  __user_cap_data_struct saved_[2]{};
  bool active_ = false;
};

TEST_F(MaildirTest, DeliverIntoReadOnlyMaildirFails) {
  for (const char* ro : {"tmp", "new"}) {
    SCOPED_TRACE(ro);
    ASSERT_EQ(::chmod((box() / ro).c_str(), 0500), 0);
    Result<std::string> r = make_error(Errc::ok, "");
    {
      DropDacOverride guard;
      // The test is only meaningful if the directory really is read-only now.
      const fs::path probe = box() / ro / "probe";
      const int pfd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
      if (pfd >= 0) {
        ::close(pfd);
        ::unlink(probe.c_str());
        ::chmod((box() / ro).c_str(), 0700);
        // Legitimate skip: a file system that ignores the mode (DropDacOverride
        // already took root's override away), where the case cannot be set up.
        GTEST_SKIP() << "cannot make a directory read-only here";
      }
      r = deliver_string(box(), "x\n");
    }
    ASSERT_EQ(::chmod((box() / ro).c_str(), 0700), 0);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::temporary);
    EXPECT_TRUE(list_dir(box() / "tmp").empty());
    EXPECT_TRUE(list_dir(box() / "new").empty());
  }
}

// --- open: lock ------------------------------------------------------------

TEST_F(MaildirTest, SecondOpenIsInUseUntilFirstIsDestroyed) {
  MaildirOpener opener(root());
  auto first = opener.open("alice");
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(fs::exists(box() / "apop-pop3.lock"));
  auto second = opener.open("alice");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, Errc::in_use);
  // A different opener object (same process) conflicts too.
  auto third = MaildirOpener(root()).open("alice");
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.error().code, Errc::in_use);
  // Another user is independent.
  EXPECT_TRUE(opener.open("bob").ok());
  first.value().reset();
  auto again = opener.open("alice");
  EXPECT_TRUE(again.ok());
}

TEST_F(MaildirTest, LockConflictsAcrossProcesses) {
  auto drop = open_box();
  ASSERT_TRUE(drop);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto r = MaildirOpener(root()).open("alice");
    ::_exit(!r.ok() && r.error().code == Errc::in_use ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(MaildirTest, ConcurrentOpensOnlyOneWins) {
  MaildirOpener opener(root());
  std::atomic<int> ok{0}, busy{0};
  std::vector<std::unique_ptr<pop3::Maildrop>> held(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      auto r = opener.open("alice");
      if (r.ok()) {
        ++ok;
        held[static_cast<std::size_t>(i)] = std::move(r).value();
      } else if (r.error().code == Errc::in_use) {
        ++busy;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 1);
  EXPECT_EQ(busy.load(), 7);
}

TEST_F(MaildirTest, CreatesMaildirOnFirstOpenAndRejectsBadNames) {
  MaildirOpener opener(root());
  auto r = opener.open("newbie");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r.value()->messages().empty());
  for (const char* sub : {"cur", "new", "tmp"})
    EXPECT_TRUE(fs::is_directory(root() / "newbie" / sub));
  for (const std::string& bad :
       std::vector<std::string>{"", ".", "..", "a/b", "../alice", std::string("a\0b", 3)}) {
    auto b = opener.open(bad);
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_EQ(b.error().code, Errc::invalid);
  }
}

TEST_F(MaildirTest, OpenRecreatesAMissingSubdirectory) {
  // The fast path checks cur/, new/ and tmp/; any one missing is created.
  for (const char* sub : {"tmp", "new", "cur"}) {
    ASSERT_TRUE(ensure_maildir(box()).ok());
    fs::remove_all(box() / sub);
    {
      auto r = MaildirOpener(root()).open("alice");
      ASSERT_TRUE(r.ok()) << sub << ": " << r.error().message;
    }
    EXPECT_TRUE(fs::is_directory(box() / sub)) << sub;
  }
}

TEST_F(MaildirTest, ManyMessagesKeepOrderSizesAndNames) {
  // The scan sorts small keys, not entries: check that every message keeps
  // its own name, size and content after the sort (reverse-created order,
  // equal times, names that only differ in digits).
  std::vector<std::string> expect;
  for (int i = 299; i >= 0; --i) {
    const std::string body(static_cast<std::size_t>(i % 17), 'x');
    const std::string name = "1700000000.M" + std::to_string(i) +
                             "P1.host,S=" + std::to_string(body.size() + 1) +
                             ",W=" + std::to_string(body.size() + 2) + ":2,";
    write_file(box() / "cur" / name, body + "\n");
  }
  auto drop = open_box();
  ASSERT_TRUE(drop);
  ASSERT_EQ(drop->messages().size(), 300u);
  for (std::size_t i = 0; i < 300; ++i) {
    const std::string body(i % 17, 'x');
    EXPECT_EQ(drop->messages()[i].uidl, "1700000000.M" + std::to_string(i) + "P1.host");
    EXPECT_EQ(drop->messages()[i].size, body.size() + 2);
    EXPECT_EQ(message_text(*drop, i), body + "\n");
  }
}

// --- open: listing ---------------------------------------------------------

TEST_F(MaildirTest, OpenMovesNewToCur) {
  auto a = deliver_string(box(), "a\n");
  auto b = deliver_string(box(), "b\n");
  ASSERT_TRUE(a.ok() && b.ok());
  auto drop = open_box();
  ASSERT_TRUE(drop);
  EXPECT_TRUE(list_dir(box() / "new").empty());
  std::vector<std::string> want{*a + ":2,", *b + ":2,"};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(list_dir(box() / "cur"), want);
  ASSERT_EQ(drop->messages().size(), 2u);
}

TEST_F(MaildirTest, ForeignFilesWithoutSizesAreCounted) {
  // As written by another MDA: no S=/W=, LF, CRLF, mixed, no final newline.
  write_file(box() / "cur" / "1700000001.foreign1.mx:2,S", "a\nb\r\nc");
  write_file(box() / "new" / "1700000002.foreign2.mx", "line\n\n");
  // S= is not trusted for the wire size, and a wrong one does not matter.
  write_file(box() / "new" / "1700000003.foreign3.mx,S=999", "x\ny\n");
  write_file(box() / "cur" / "1700000004.empty.mx:2,", "");
  write_file(box() / "cur" / "1700000005.bare-cr.mx:2,", "a\rb\r");
  auto drop = open_box();
  ASSERT_TRUE(drop);
  ASSERT_EQ(drop->messages().size(), 5u);
  EXPECT_EQ(drop->messages()[0].size, 7u);
  EXPECT_EQ(drop->messages()[1].size, 8u);
  EXPECT_EQ(drop->messages()[2].size, 6u);
  EXPECT_EQ(drop->messages()[3].size, 0u);
  EXPECT_EQ(drop->messages()[4].size, 4u);
  EXPECT_EQ(message_text(*drop, 0), "a\nb\r\nc");
  EXPECT_EQ(message_text(*drop, 3), "");
  EXPECT_EQ(drop->messages()[1].uidl, "1700000002.foreign2.mx");
  EXPECT_EQ(drop->messages()[2].uidl, "1700000003.foreign3.mx");
}

TEST_F(MaildirTest, WFieldIsTrustedForSize) {
  // Dovecot computes W= itself; it is used without reading the file.
  write_file(box() / "cur" / "1700000000.M1P2Q3.mx,S=4,W=42:2,S", "abc\n");
  auto drop = open_box();
  ASSERT_TRUE(drop);
  ASSERT_EQ(drop->messages().size(), 1u);
  EXPECT_EQ(drop->messages()[0].size, 42u);
}

TEST_F(MaildirTest, SkipsDotfilesAndNonRegularFiles) {
  write_file(box() / "cur" / ".hidden:2,", "x\n");
  write_file(box() / "new" / ".hidden-new", "x\n");
  fs::create_directory(box() / "cur" / "1700000000.subdir");
  fs::create_symlink("/etc/passwd", box() / "cur" / "1700000000.link:2,");
  write_file(box() / "cur" / "1700000000.real:2,", "ok\n");
  auto drop = open_box();
  ASSERT_TRUE(drop);
  ASSERT_EQ(drop->messages().size(), 1u);
  EXPECT_EQ(message_text(*drop, 0), "ok\n");
  EXPECT_TRUE(fs::exists(box() / "new" / ".hidden-new"));
}

TEST_F(MaildirTest, OrderIsByNumericTimeThenName) {
  write_file(box() / "cur" / "100.b:2,", "t100\n");
  write_file(box() / "cur" / "9.z:2,S", "t9\n");
  write_file(box() / "new" / "10.b", "t10b\n");
  write_file(box() / "cur" / "10.a:2,", "t10a\n");
  write_file(box() / "cur" / "noprefix:2,", "none\n");
  auto drop = open_box();
  ASSERT_TRUE(drop);
  ASSERT_EQ(drop->messages().size(), 5u);
  EXPECT_EQ(uidls(*drop), (std::vector<std::string>{"noprefix", "9.z", "10.a", "10.b", "100.b"}));
  EXPECT_EQ(message_text(*drop, 1), "t9\n");
  EXPECT_EQ(message_text(*drop, 4), "t100\n");
}

// --- UIDL ------------------------------------------------------------------

TEST_F(MaildirTest, UidlStableAcrossOpensAndFlagRenames) {
  auto a = deliver_string(box(), "first\n");
  auto b = deliver_string(box(), "second\n");
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<std::string> before;
  {
    auto drop = open_box();
    ASSERT_TRUE(drop);
    before = uidls(*drop);
    ASSERT_EQ(before.size(), 2u);
    EXPECT_EQ(before[0], std::string(maildir_base_name(*a)).substr(0, a->find(",S=")));
    for (const auto& u : before) EXPECT_TRUE(valid_uidl(u)) << u;
  }
  {
    auto drop = open_box();
    ASSERT_TRUE(drop);
    EXPECT_EQ(uidls(*drop), before);
  }
  // Another client (e.g. Dovecot IMAP) marks both seen/answered.
  fs::rename(box() / "cur" / (*a + ":2,"), box() / "cur" / (*a + ":2,S"));
  fs::rename(box() / "cur" / (*b + ":2,"), box() / "cur" / (*b + ":2,RS"));
  auto drop = open_box();
  ASSERT_TRUE(drop);
  EXPECT_EQ(uidls(*drop), before);
  EXPECT_EQ(message_text(*drop, 0), "first\n");
  EXPECT_EQ(message_text(*drop, 1), "second\n");
}

TEST_F(MaildirTest, DovecotStyleNameUidl) {
  const std::string base = "1700000000.M123456P4242V0000000000000803I00000000000af1b2_0.mx1";
  ASSERT_LE(base.size(), 70u);
  write_file(box() / "cur" / (base + ",S=5,W=6:2,S"), "abcd\n");
  auto drop = open_box();
  ASSERT_TRUE(drop);
  ASSERT_EQ(drop->messages().size(), 1u);
  EXPECT_EQ(drop->messages()[0].uidl, base);
  EXPECT_EQ(drop->messages()[0].size, 6u);
}

TEST_F(MaildirTest, LongNameUidlIsHashedAndValid) {
  const std::string base =
      "1700000000.M123456P4242V0000000000000803I00000000000af1b2_0.a-rather-long-host-name."
      "example.org";
  ASSERT_GT(base.size(), 70u);
  write_file(box() / "new" / (base + ",S=5,W=6"), "abcd\n");
  std::string first;
  {
    auto drop = open_box();
    ASSERT_TRUE(drop);
    ASSERT_EQ(drop->messages().size(), 1u);
    first = drop->messages()[0].uidl;
    EXPECT_TRUE(valid_uidl(first)) << first;
    EXPECT_EQ(first, hashed_uidl(base + ",S=5,W=6"));
  }
  fs::rename(box() / "cur" / (base + ",S=5,W=6:2,"), box() / "cur" / (base + ",S=5,W=6:2,ST"));
  auto drop = open_box();
  ASSERT_TRUE(drop);
  EXPECT_EQ(drop->messages()[0].uidl, first);
}

TEST_F(MaildirTest, DuplicateUidlsAreDisambiguatedDeterministically) {
  // Same base name twice (different flags), and names differing only in S=/W=.
  write_file(box() / "cur" / "1700000000.dup:2,", "one\n");
  write_file(box() / "cur" / "1700000000.dup:2,S", "two\n");
  write_file(box() / "cur" / "1700000001.x,S=1:2,", "three\n");
  write_file(box() / "cur" / "1700000001.x,S=2:2,", "four\n");
  std::vector<std::string> first;
  {
    auto drop = open_box();
    ASSERT_TRUE(drop);
    first = uidls(*drop);
    ASSERT_EQ(first.size(), 4u);
    EXPECT_EQ(std::set<std::string>(first.begin(), first.end()).size(), 4u);
    EXPECT_EQ(first[0], "1700000000.dup");
    EXPECT_EQ(first[2], "1700000001.x");
    for (const auto& u : first) EXPECT_TRUE(valid_uidl(u)) << u;
  }
  auto drop = open_box();
  ASSERT_TRUE(drop);
  EXPECT_EQ(uidls(*drop), first);
}

// --- open(i), commit -------------------------------------------------------

TEST_F(MaildirTest, OpenFindsRenamedFileAndReportsVanished) {
  auto a = deliver_string(box(), "alpha\n");
  auto b = deliver_string(box(), "beta\n");
  ASSERT_TRUE(a.ok() && b.ok());
  auto drop = open_box();
  ASSERT_TRUE(drop);
  fs::rename(box() / "cur" / (*a + ":2,"), box() / "cur" / (*a + ":2,S"));
  EXPECT_EQ(message_text(*drop, 0), "alpha\n");
  fs::remove(box() / "cur" / (*b + ":2,"));
  auto gone = drop->open(1);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, Errc::not_found);
  auto out = drop->open(2);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.error().code, Errc::invalid);
}

TEST_F(MaildirTest, CommitDeletesOnlyChosenMessages) {
  std::vector<std::string> names;
  for (const char* body : {"m0\n", "m1\n", "m2\n", "m3\n"}) {
    auto n = deliver_string(box(), body);
    ASSERT_TRUE(n.ok());
    names.push_back(*n);
  }
  std::vector<std::string> before;
  {
    auto drop = open_box();
    ASSERT_TRUE(drop);
    ASSERT_EQ(drop->messages().size(), 4u);
    before = uidls(*drop);
    ASSERT_EQ(message_text(*drop, 0), "m0\n");
    const std::size_t del[] = {0, 2};
    ASSERT_TRUE(drop->commit(del).ok());
  }
  EXPECT_EQ(list_dir(box() / "cur"),
            (std::vector<std::string>{names[1] + ":2,", names[3] + ":2,"}));
  auto drop = open_box();
  ASSERT_TRUE(drop);
  EXPECT_EQ(uidls(*drop), (std::vector<std::string>{before[1], before[3]}));
  EXPECT_EQ(message_text(*drop, 0), "m1\n");
  EXPECT_EQ(message_text(*drop, 1), "m3\n");
}

TEST_F(MaildirTest, CommitFollowsRenamesAndIgnoresVanished) {
  auto a = deliver_string(box(), "a\n");
  auto b = deliver_string(box(), "b\n");
  auto c = deliver_string(box(), "c\n");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  auto drop = open_box();
  ASSERT_TRUE(drop);
  fs::rename(box() / "cur" / (*a + ":2,"), box() / "cur" / (*a + ":2,S"));
  fs::remove(box() / "cur" / (*b + ":2,"));
  const std::size_t del[] = {0, 1};
  ASSERT_TRUE(drop->commit(del).ok());
  EXPECT_EQ(list_dir(box() / "cur"), std::vector<std::string>{*c + ":2,"});
}

TEST_F(MaildirTest, CommitWithBadIndexStillDeletesTheRest) {
  auto a = deliver_string(box(), "a\n");
  auto b = deliver_string(box(), "b\n");
  ASSERT_TRUE(a.ok() && b.ok());
  auto drop = open_box();
  ASSERT_TRUE(drop);
  const std::size_t del[] = {0, 7};
  auto r = drop->commit(del);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::invalid);
  EXPECT_EQ(list_dir(box() / "cur"), std::vector<std::string>{*b + ":2,"});
}

TEST_F(MaildirTest, DeliveredDuringSessionAppearsInNextSession) {
  ASSERT_TRUE(deliver_string(box(), "old\n").ok());
  std::string late_uidl;
  {
    auto drop = open_box();
    ASSERT_TRUE(drop);
    ASSERT_EQ(drop->messages().size(), 1u);
    auto late = deliver_string(box(), "late\n");
    ASSERT_TRUE(late.ok());
    late_uidl = late->substr(0, late->find(",S="));
    EXPECT_EQ(drop->messages().size(), 1u);
    const std::size_t del[] = {0};
    ASSERT_TRUE(drop->commit(del).ok());
    EXPECT_EQ(list_dir(box() / "new").size(), 1u);  // untouched by commit
  }
  auto drop = open_box();
  ASSERT_TRUE(drop);
  ASSERT_EQ(drop->messages().size(), 1u);
  EXPECT_EQ(drop->messages()[0].uidl, late_uidl);
  EXPECT_EQ(message_text(*drop, 0), "late\n");
}

TEST_F(MaildirTest, ByteSourceReadsLargeMessagesInChunks) {
  std::string big;
  for (int i = 0; i < 20000; ++i) big += "line " + std::to_string(i) + "\n";
  ASSERT_TRUE(deliver_string(box(), big).ok());
  auto drop = open_box();
  ASSERT_TRUE(drop);
  ASSERT_EQ(drop->messages().size(), 1u);
  EXPECT_EQ(drop->messages()[0].size, big.size() + 20000);
  auto src = drop->open(0);
  ASSERT_TRUE(src.ok());
  EXPECT_EQ(read_all(*src.value(), 65536), big);
}

}  // namespace
}  // namespace apop::store

namespace apop::store {
namespace {
// Regression: within one second, "M98765" must sort before "M153961" (the
// microseconds have no leading zeros), or messages are numbered out of
// delivery order.
TEST(MaildirNameOrder, DigitRunsCompareNumerically) {
  EXPECT_TRUE(maildir_name_less("1700000000.M98765P10Q1.h", "1700000000.M153961P10Q1.h"));
  EXPECT_FALSE(maildir_name_less("1700000000.M153961P10Q1.h", "1700000000.M98765P10Q1.h"));
  EXPECT_TRUE(maildir_name_less("1700000000.M5P10Q2.h", "1700000000.M5P10Q10.h"));
  EXPECT_TRUE(maildir_name_less("a", "b"));
  EXPECT_TRUE(maildir_name_less("x1", "x1y"));
  EXPECT_FALSE(maildir_name_less("same", "same"));
  EXPECT_FALSE(maildir_name_less("x007", "x7"));
  EXPECT_FALSE(maildir_name_less("x7", "x007"));
}
}  // namespace
}  // namespace apop::store
