// The auth-userdb socket (ipc/userdb.hpp): the messages, the service's
// answers, and a real socket between a client and serve() -- including what
// the service refuses (malformed packets, a peer not on its list, silence).
#include "ipc/userdb.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <thread>

#include "temp_dir.hpp"

namespace apop::ipc {
namespace {

using namespace std::chrono_literals;

UserInfo directory(std::string_view user) {
  if (user == "alice") return {UserStatus::found, std::nullopt};
  if (user == "bob") return {UserStatus::found, "mbox:/var/mail/bob", 1073741824u, 0u};
  if (user == "broken") return {UserStatus::temporary, "ignored"};
  return {UserStatus::unknown, "ignored"};
}

TEST(IpcUserdb, MessagesRoundTripAndRefuseWhatIsNotCanonical) {
  std::string out;
  ASSERT_TRUE(encode_user_lookup(7, UserLookup{"alice"}, out).ok());
  auto req = decode_user_lookup(out);
  ASSERT_TRUE(req.ok());
  EXPECT_EQ(req->first, 7u);
  EXPECT_EQ(req->second.user, "alice");
  EXPECT_FALSE(decode_user_info(out).ok());          // a lookup is not an info
  EXPECT_FALSE(decode_user_lookup(out + "x").ok());  // trailing bytes
  EXPECT_FALSE(decode_user_lookup(out.substr(0, out.size() - 1)).ok());
  EXPECT_FALSE(decode_request(out).ok());  // not a worker's request either

  ASSERT_TRUE(encode_user_info(9, UserInfo{UserStatus::found, "maildir:/srv/x"}, out).ok());
  auto info = decode_user_info(out);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->first, 9u);
  EXPECT_EQ(info->second.status, UserStatus::found);
  EXPECT_EQ(info->second.mail_location, "maildir:/srv/x");
  EXPECT_FALSE(info->second.quota_bytes.has_value());
  // Quota limits: each absent, 0 or a value, kept apart.
  ASSERT_TRUE(encode_user_info(9, UserInfo{UserStatus::found, std::nullopt, 0u, 50000u}, out).ok());
  info = decode_user_info(out);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->second.quota_bytes, 0u);
  EXPECT_EQ(info->second.quota_messages, 50000u);
  // Limits for an account that is not found are refused.
  ASSERT_TRUE(
      encode_user_info(9, UserInfo{UserStatus::unknown, std::nullopt, 5u, std::nullopt}, out).ok());
  EXPECT_FALSE(decode_user_info(out).ok());
  // A location with any status but found, and an unknown status, are refused.
  ASSERT_TRUE(encode_user_info(9, UserInfo{UserStatus::unknown, "maildir:/srv/x"}, out).ok());
  EXPECT_FALSE(decode_user_info(out).ok());
  ASSERT_TRUE(encode_user_info(9, UserInfo{UserStatus::found, std::nullopt}, out).ok());
  out[8] = 3;
  EXPECT_FALSE(decode_user_info(out).ok());
  // Bounds: a user longer than one command line cannot be sent.
  EXPECT_FALSE(encode_user_lookup(1, UserLookup{std::string(kMaxUser + 1, 'a')}, out).ok());
}

TEST(IpcUserdb, ServiceAnswersFromTheDirectoryAndDropsWhatIsNotALookup) {
  UserdbService svc(directory, {::getuid()});
  std::string req;
  ASSERT_TRUE(encode_user_lookup(3, UserLookup{"bob"}, req).ok());
  auto reply = svc.handle(req);
  ASSERT_TRUE(reply.has_value());
  auto info = decode_user_info(*reply);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->first, 3u);
  EXPECT_EQ(info->second.mail_location, "mbox:/var/mail/bob");
  // Not found: whatever the lookup said about a location is not passed on.
  ASSERT_TRUE(encode_user_lookup(4, UserLookup{"mallory"}, req).ok());
  info = decode_user_info(*svc.handle(req));
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->second.status, UserStatus::unknown);
  EXPECT_FALSE(info->second.mail_location.has_value());
  EXPECT_FALSE(svc.handle("garbage").has_value());
  std::string worker;
  ASSERT_TRUE(encode_request(1, Mechanisms{}, worker).ok());
  EXPECT_FALSE(svc.handle(worker).has_value());
}

class UserdbSocket : public ::testing::Test {
 protected:
  void start(std::vector<uid_t> allowed) {
    auto fd = listen_userdb(path, ::getuid(), ::getgid());
    ASSERT_TRUE(fd.ok()) << fd.error().message;
    listener = std::move(*fd);
    svc = std::make_unique<UserdbService>(directory, std::move(allowed));
    server = std::thread([this] { svc->serve(listener.get(), 300ms); });
  }
  void TearDown() override {
    if (server.joinable()) {
      ::shutdown(listener.get(), SHUT_RDWR);
      server.join();
    }
  }
  test::TempDir dir;
  std::filesystem::path path = dir.path() / std::string(kUserdbSocketName);
  UniqueFd listener;
  std::unique_ptr<UserdbService> svc;
  std::thread server;
};

TEST_F(UserdbSocket, LookupsOverTheSocket) {
  start({::getuid()});
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  auto a = query_userdb(path, "alice", 2s);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->status, UserStatus::found);
  EXPECT_FALSE(a->mail_location.has_value());
  auto b = query_userdb(path, "bob", 2s);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->mail_location, "mbox:/var/mail/bob");
  EXPECT_EQ(b->quota_bytes, 1073741824u);
  EXPECT_EQ(b->quota_messages, 0u);
  auto m = query_userdb(path, "mallory", 2s);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->status, UserStatus::unknown);
  auto t = query_userdb(path, "broken", 2s);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->status, UserStatus::temporary);
}

TEST_F(UserdbSocket, APeerNotOnTheListGetsNoAnswer) {
  start({::getuid() + 12345});
  auto r = query_userdb(path, "alice", 2s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
}

TEST_F(UserdbSocket, ASilentClientDoesNotHoldTheService) {
  start({::getuid()});
  // Connect and send nothing: the service gives up on it after its timeout
  // and answers the next client.
  UniqueFd idle(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  ASSERT_EQ(::connect(idle.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  auto r = query_userdb(path, "alice", 3s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, UserStatus::found);
}

TEST_F(UserdbSocket, NoServerIsNotFoundAndAStaleSocketIsReplaced) {
  auto none = query_userdb(path, "alice", 1s);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, Errc::not_found);
  {
    // A socket left by a run that died: refused connections, not found.
    auto fd = listen_userdb(path, ::getuid(), ::getgid());
    ASSERT_TRUE(fd.ok());
  }
  auto stale = query_userdb(path, "alice", 1s);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, Errc::not_found);
  start({::getuid()});  // replaces the stale socket
  EXPECT_TRUE(query_userdb(path, "alice", 2s).ok());
}

TEST(IpcUserdb, ListeningOverAFileThatIsNotASocketIsRefused) {
  test::TempDir dir;
  const auto path = dir.path() / "auth-userdb";
  std::ofstream(path) << "not a socket";
  auto fd = listen_userdb(path, ::getuid(), ::getgid());
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.error().code, Errc::permanent);
  EXPECT_EQ(test::slurp(path), "not a socket");
}

}  // namespace
}  // namespace apop::ipc
