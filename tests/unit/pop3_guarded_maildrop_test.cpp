// GuardedMaildrop: forwards to the inner maildrop, releases after it.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "pop3/guarded_maildrop.hpp"

namespace apop::pop3 {
namespace {

class Recording final : public Maildrop {
 public:
  explicit Recording(std::vector<std::string>& log) : log_(log) {}
  ~Recording() override { log_.push_back("inner destroyed"); }
  std::span<const MessageInfo> messages() const override { return list_; }
  void load_delivery_times() override { log_.push_back("load_delivery_times"); }
  Result<std::unique_ptr<ByteSource>> open(std::size_t index) override {
    log_.push_back("open " + std::to_string(index));
    return make_error(Errc::not_found, "no message");
  }
  Result<void> commit(std::span<const std::size_t> deleted) override {
    log_.push_back("commit " + std::to_string(deleted.size()));
    return {};
  }

 private:
  std::vector<std::string>& log_;
  std::vector<MessageInfo> list_{MessageInfo{10, "a", 0}, MessageInfo{20, "b", 0}};
};

TEST(GuardedMaildrop, ForwardsEveryCallAndReleasesAfterTheInnerMaildrop) {
  std::vector<std::string> log;
  {
    auto md =
        guard_maildrop(std::make_unique<Recording>(log), [&log] { log.push_back("release"); });
    EXPECT_EQ(md->messages().size(), 2u);
    EXPECT_EQ(md->messages()[1].uidl, "b");
    md->load_delivery_times();
    EXPECT_FALSE(md->open(1));
    const std::size_t deleted[] = {0, 1};
    EXPECT_TRUE(md->commit(deleted));
    EXPECT_EQ(log.size(), 3u);  // nothing released while the session holds it
  }
  const std::vector<std::string> want = {"load_delivery_times", "open 1", "commit 2",
                                         "inner destroyed", "release"};
  EXPECT_EQ(log, want);
}

}  // namespace
}  // namespace apop::pop3
