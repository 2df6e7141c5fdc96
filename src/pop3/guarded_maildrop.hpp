// A Maildrop decorator for openers that hold something of their own for the
// length of a session (a per-user session count, a lock shared between
// servers): it forwards every call to the inner maildrop and, when it is
// destroyed, destroys the inner one first (its own lock released) and then
// calls `release` once.
// Ownership: owns inner and release. Thread-safety: as inner.
#pragma once

#include <memory>
#include <span>
#include <utility>

#include "pop3/interfaces.hpp"

namespace apop::pop3 {

template <typename Release>
class GuardedMaildrop final : public Maildrop {
 public:
  GuardedMaildrop(std::unique_ptr<Maildrop> inner, Release release)
      : inner_(std::move(inner)), release_(std::move(release)) {}
  GuardedMaildrop(const GuardedMaildrop&) = delete;
  GuardedMaildrop& operator=(const GuardedMaildrop&) = delete;
  ~GuardedMaildrop() override {
    inner_.reset();
    release_();
  }
  std::span<const MessageInfo> messages() const override { return inner_->messages(); }
  void load_delivery_times() override { inner_->load_delivery_times(); }
  Result<std::unique_ptr<ByteSource>> open(std::size_t index) override {
    return inner_->open(index);
  }
  Result<void> commit(std::span<const std::size_t> deleted) override {
    return inner_->commit(deleted);
  }

 private:
  std::unique_ptr<Maildrop> inner_;
  Release release_;
};

// Wraps `inner` so that `release()` runs after it is destroyed.
template <typename Release>
std::unique_ptr<Maildrop> guard_maildrop(std::unique_ptr<Maildrop> inner, Release release) {
  return std::make_unique<GuardedMaildrop<Release>>(std::move(inner), std::move(release));
}

}  // namespace apop::pop3
