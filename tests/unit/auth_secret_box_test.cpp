#include "auth/secret_box.hpp"
#include "temp_dir.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace apop::auth {
namespace {

namespace fs = std::filesystem;

using TempDir = ::apop::test::TempDir;

std::array<unsigned char, 32> key_of(unsigned char fill) {
  std::array<unsigned char, 32> k{};
  k.fill(fill);
  return k;
}

void write_file(const fs::path& p, const std::string& bytes, mode_t mode) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
  ASSERT_EQ(::chmod(p.c_str(), mode), 0);
}

mode_t mode_of(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return static_cast<mode_t>(-1);
  return st.st_mode & 07777;
}

TEST(AuthSecretBox, RoundTripAndFormat) {
  auto k = key_of(7);
  SecretBox box = SecretBox::from_key(k);
  for (std::string_view pt : {std::string_view(""), std::string_view("tanstaaf"),
                              std::string_view("a much longer secret with spaces ~!@#")}) {
    auto sealed = box.seal(pt, "alice");
    ASSERT_TRUE(sealed.ok());
    EXPECT_EQ(sealed->size(), 1 + 12 + pt.size() + 16);
    EXPECT_EQ(static_cast<unsigned char>((*sealed)[0]), 0x01);
    if (!pt.empty()) {
      EXPECT_EQ(sealed->find(pt), std::string::npos);
    }
    auto opened = box.open(*sealed, "alice");
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    EXPECT_EQ(*opened, pt);
  }
}

TEST(AuthSecretBox, FreshNonceEachTime) {
  auto k = key_of(1);
  SecretBox box = SecretBox::from_key(k);
  auto a = box.seal("same", "u");
  auto b = box.seal("same", "u");
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  EXPECT_NE(*a, *b);
}

TEST(AuthSecretBox, TamperDetected) {
  auto k = key_of(2);
  SecretBox box = SecretBox::from_key(k);
  auto sealed = box.seal("tanstaaf", "alice");
  ASSERT_TRUE(sealed.ok());
  for (std::size_t i = 0; i < sealed->size(); ++i) {
    std::string t = *sealed;
    t[i] = static_cast<char>(t[i] ^ 0x01);
    auto r = box.open(t, "alice");
    ASSERT_FALSE(r.ok()) << "byte " << i;
    EXPECT_EQ(r.error().code, Errc::permanent);
  }
  // Truncated and extended.
  EXPECT_FALSE(box.open(sealed->substr(0, sealed->size() - 1), "alice").ok());
  EXPECT_FALSE(box.open(*sealed + "x", "alice").ok());
  EXPECT_FALSE(box.open(sealed->substr(0, 28), "alice").ok());
  EXPECT_FALSE(box.open("", "alice").ok());
}

TEST(AuthSecretBox, WrongAadAndWrongKey) {
  auto k1 = key_of(3);
  auto k2 = key_of(4);
  SecretBox a = SecretBox::from_key(k1);
  SecretBox b = SecretBox::from_key(k2);
  auto sealed = a.seal("tanstaaf", "alice");
  ASSERT_TRUE(sealed.ok());
  auto r = a.open(*sealed, "bob");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::permanent);
  EXPECT_EQ(r.error().message.find("tanstaaf"), std::string::npos);
  r = b.open(*sealed, "alice");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::permanent);
  EXPECT_TRUE(a.open(*sealed, "alice").ok());
}

TEST(AuthSecretBox, MovedFromBoxFailsCleanly) {
  auto k = key_of(5);
  SecretBox a = SecretBox::from_key(k);
  auto sealed = a.seal("x", "u");
  ASSERT_TRUE(sealed.ok());
  SecretBox b = std::move(a);
  EXPECT_TRUE(b.open(*sealed, "u").ok());
  EXPECT_FALSE(a.seal("x", "u").ok());  // NOLINT(bugprone-use-after-move): documented behaviour
  EXPECT_FALSE(a.open(*sealed, "u").ok());
}

TEST(AuthSecretBox, KeyFileCreated0600AndReloaded) {
  TempDir dir;
  fs::path key = dir.path() / "secret.key";
  auto first = SecretBox::open_or_create(key);
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(mode_of(key), 0600u);
  EXPECT_EQ(fs::file_size(key), 32u);
  // No temporary files left behind.
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 1u);

  auto sealed = first->seal("tanstaaf", "alice");
  ASSERT_TRUE(sealed.ok());
  auto again = SecretBox::open_or_create(key);
  ASSERT_TRUE(again.ok()) << again.error().message;
  auto opened = again->open(*sealed, "alice");
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(*opened, "tanstaaf");
  EXPECT_EQ(fs::file_size(key), 32u);  // not rewritten
}

TEST(AuthSecretBox, ExistingKeyFileLoaded) {
  TempDir dir;
  fs::path key = dir.path() / "secret.key";
  write_file(key, std::string(32, '\x42'), 0600);
  auto loaded = SecretBox::open_or_create(key);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  auto k = key_of(0x42);
  SecretBox same = SecretBox::from_key(k);
  auto sealed = same.seal("s3cret", "bob");
  ASSERT_TRUE(sealed.ok());
  EXPECT_TRUE(loaded->open(*sealed, "bob").ok());
}

TEST(AuthSecretBox, BadModeRefused) {
  TempDir dir;
  for (mode_t m : {0640, 0604, 0644, 0660, 0601, 0610}) {
    fs::path key = dir.path() / ("k" + std::to_string(m));
    write_file(key, std::string(32, 'k'), m);
    auto r = SecretBox::open_or_create(key);
    ASSERT_FALSE(r.ok()) << std::oct << m;
    EXPECT_EQ(r.error().code, Errc::permanent);
    EXPECT_NE(r.error().message.find("mode"), std::string::npos) << r.error().message;
  }
  fs::path ok = dir.path() / "k400";
  write_file(ok, std::string(32, 'k'), 0400);
  EXPECT_TRUE(SecretBox::open_or_create(ok).ok());
}

TEST(AuthSecretBox, WrongSizeRefused) {
  TempDir dir;
  for (std::size_t n : {0, 1, 31, 33, 64}) {
    fs::path key = dir.path() / ("k" + std::to_string(n));
    write_file(key, std::string(n, 'k'), 0600);
    auto r = SecretBox::open_or_create(key);
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.error().code, Errc::permanent);
    EXPECT_EQ(fs::file_size(key), n);  // left alone
  }
}

TEST(AuthSecretBox, SymlinkAndDirectoryRefused) {
  TempDir dir;
  fs::path real = dir.path() / "real.key";
  write_file(real, std::string(32, 'k'), 0600);
  fs::path link = dir.path() / "link.key";
  fs::create_symlink(real, link);
  auto r = SecretBox::open_or_create(link);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::permanent);

  fs::path sub = dir.path() / "sub";
  fs::create_directory(sub, dir.path());
  ::chmod(sub.c_str(), 0700);
  EXPECT_FALSE(SecretBox::open_or_create(sub).ok());
  // Missing parent directory is an error, not a crash.
  EXPECT_FALSE(SecretBox::open_or_create(dir.path() / "missing" / "secret.key").ok());
}

TEST(AuthSecretBox, ConcurrentCreationAgreesOnOneKey) {
  TempDir dir;
  fs::path key = dir.path() / "secret.key";
  // Several processes race to create the key; all must end up with the same one.
  constexpr int kProcs = 8;
  std::vector<pid_t> kids;
  fs::path out = dir.path() / "out";
  fs::create_directory(out);
  for (int i = 0; i < kProcs; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto box = SecretBox::open_or_create(key);
      if (!box.ok()) ::_exit(1);
      auto s = box->seal("x", "u");
      if (!s.ok()) ::_exit(2);
      std::ofstream(out / std::to_string(i), std::ios::binary) << *s;
      ::_exit(0);
    }
    kids.push_back(pid);
  }
  for (pid_t pid : kids) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
  auto box = SecretBox::open_or_create(key);
  ASSERT_TRUE(box.ok());
  for (int i = 0; i < kProcs; ++i) {
    std::ifstream in(out / std::to_string(i), std::ios::binary);
    std::string sealed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_TRUE(box->open(sealed, "u").ok()) << "process " << i << " used another key";
  }
}

}  // namespace
}  // namespace apop::auth
