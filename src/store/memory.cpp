#include "store/memory.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "pop3/crlf.hpp"

namespace apop::store {

namespace {

struct Message {
  std::uint64_t id = 0;
  std::shared_ptr<const std::string> raw;
  std::int64_t delivered = 0;
};

struct Box {
  std::vector<Message> messages;
  std::uint64_t next_id = 1;
  bool locked = false;
};

// A one-shot countdown: fires on the n-th call after arming.
struct Fault {
  int remaining = 0;  // 0: disarmed
  bool fire() {
    if (remaining <= 0) return false;
    return --remaining == 0;
  }
};

}  // namespace

struct MemoryStore::State {
  mutable std::mutex mu;
  std::map<std::string, Box, std::less<>> boxes;
  Fault open_fault, commit_fault, read_fault;

  bool fire(Fault& f) {
    std::lock_guard lock(mu);
    return f.fire();
  }
};

namespace {

class MemorySource final : public pop3::ByteSource {
 public:
  MemorySource(std::shared_ptr<MemoryStore::State> state, std::shared_ptr<const std::string> raw)
      : state_(std::move(state)), raw_(std::move(raw)) {}
  Result<std::size_t> read(std::span<char> buf) override {
    if (state_->fire(state_->read_fault)) {
      return make_error(Errc::temporary, "injected read failure");
    }
    const std::size_t n = std::min(buf.size(), raw_->size() - pos_);
    if (n > 0) std::memcpy(buf.data(), raw_->data() + pos_, n);
    pos_ += n;
    return n;
  }

 private:
  std::shared_ptr<MemoryStore::State> state_;
  std::shared_ptr<const std::string> raw_;
  std::size_t pos_ = 0;
};

class MemoryDrop final : public pop3::Maildrop {
 public:
  MemoryDrop(std::shared_ptr<MemoryStore::State> state, std::string user,
             std::vector<Message> snapshot)
      : state_(std::move(state)), user_(std::move(user)), snapshot_(std::move(snapshot)) {
    infos_.reserve(snapshot_.size());
    for (const auto& m : snapshot_) {
      infos_.push_back({pop3::crlf_size(*m.raw), "m" + std::to_string(m.id), m.delivered});
    }
  }
  MemoryDrop(const MemoryDrop&) = delete;
  MemoryDrop& operator=(const MemoryDrop&) = delete;

  ~MemoryDrop() override {
    std::lock_guard lock(state_->mu);
    auto it = state_->boxes.find(user_);
    if (it != state_->boxes.end()) it->second.locked = false;
  }

  std::span<const pop3::MessageInfo> messages() const override { return infos_; }
  void load_delivery_times() override {}  // given at add_message

  Result<std::unique_ptr<pop3::ByteSource>> open(std::size_t index) override {
    if (index >= snapshot_.size()) return make_error(Errc::invalid, "no such message");
    return std::unique_ptr<pop3::ByteSource>(
        std::make_unique<MemorySource>(state_, snapshot_[index].raw));
  }

  Result<void> commit(std::span<const std::size_t> deleted) override {
    std::lock_guard lock(state_->mu);
    if (state_->commit_fault.fire()) return make_error(Errc::temporary, "injected commit failure");
    for (const std::size_t index : deleted) {
      if (index >= snapshot_.size()) return make_error(Errc::invalid, "no such message");
    }
    auto& box = state_->boxes[user_];
    std::vector<std::uint64_t> ids;
    for (const std::size_t index : deleted) ids.push_back(snapshot_[index].id);
    std::erase_if(box.messages, [&](const Message& m) {
      return std::find(ids.begin(), ids.end(), m.id) != ids.end();
    });
    return {};
  }

 private:
  std::shared_ptr<MemoryStore::State> state_;
  std::string user_;
  std::vector<Message> snapshot_;
  std::vector<pop3::MessageInfo> infos_;
};

}  // namespace

MemoryStore::MemoryStore() : state_(std::make_shared<State>()) {}
MemoryStore::~MemoryStore() = default;

void MemoryStore::add_message(std::string_view user, std::string raw, std::int64_t delivered) {
  std::lock_guard lock(state_->mu);
  auto& box = state_->boxes[std::string(user)];
  box.messages.push_back(
      {box.next_id++, std::make_shared<const std::string>(std::move(raw)), delivered});
}

std::vector<std::string> MemoryStore::messages(std::string_view user) const {
  std::lock_guard lock(state_->mu);
  std::vector<std::string> out;
  auto it = state_->boxes.find(user);
  if (it == state_->boxes.end()) return out;
  for (const auto& m : it->second.messages) out.push_back(*m.raw);
  return out;
}

bool MemoryStore::locked(std::string_view user) const {
  std::lock_guard lock(state_->mu);
  auto it = state_->boxes.find(user);
  return it != state_->boxes.end() && it->second.locked;
}

void MemoryStore::fail_open_after(int n) {
  std::lock_guard lock(state_->mu);
  state_->open_fault.remaining = std::max(n, 0);
}
void MemoryStore::fail_commit_after(int n) {
  std::lock_guard lock(state_->mu);
  state_->commit_fault.remaining = std::max(n, 0);
}
void MemoryStore::fail_read_after(int n) {
  std::lock_guard lock(state_->mu);
  state_->read_fault.remaining = std::max(n, 0);
}

Result<std::unique_ptr<pop3::Maildrop>> MemoryStore::open(const pop3::MailboxAddress& where) {
  const std::string_view user = where.user;
  std::vector<Message> snapshot;
  {
    std::lock_guard lock(state_->mu);
    if (state_->open_fault.fire()) return make_error(Errc::temporary, "injected open failure");
    auto& box = state_->boxes[std::string(user)];
    if (box.locked) return make_error(Errc::in_use, "maildrop is locked");
    box.locked = true;
    snapshot = box.messages;
  }
  return std::unique_ptr<pop3::Maildrop>(
      std::make_unique<MemoryDrop>(state_, std::string(user), std::move(snapshot)));
}

}  // namespace apop::store
