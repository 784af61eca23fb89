// MemoryBudget: one cap on the bytes of rule state, shared by every rule
// and every evaluation thread (config `state.max_bytes`).
//
// A key table charges the budget for what it allocates -- its slot arrays
// and the heap its states own -- before it allocates it (an array) or right
// after (a state's heap, which grows by at most a few hundred bytes per
// event). A new key that would need memory the budget does not have is an
// overflow: the rule's on_overflow policy applies exactly as at max_keys
// (evict_oldest evicts one of the rule's own keys, reject_new skips the
// event for the rule), and the refusal is counted. Existing keys are always
// evaluated. So the resident state stays under the budget (plus one step of
// heap growth per table) whatever the input, and every key not tracked is
// counted as evicted or rejected.
//
// Tables charge in chunks (kChunk) so that the shared counter is touched
// only when a table grows or shrinks by that much, not per event.
//
// Thread-safety: all members are safe to call from any thread.
#ifndef INVARIANTD_RULES_MEMORY_BUDGET_H_
#define INVARIANTD_RULES_MEMORY_BUDGET_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace invariantd {

class MemoryBudget {
 public:
  static constexpr size_t kChunk = size_t{16} << 10;

  explicit MemoryBudget(size_t limit) : limit_(limit) {}
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // Adds `bytes` if the total stays within the limit.
  bool TryCharge(size_t bytes) {
    size_t used = used_.load(std::memory_order_relaxed);
    do {
      if (bytes > limit_ || used > limit_ - bytes) return false;
    } while (!used_.compare_exchange_weak(used, used + bytes,
                                          std::memory_order_relaxed));
    return true;
  }
  // Adds `bytes` unconditionally (memory already allocated).
  void Charge(size_t bytes) {
    used_.fetch_add(bytes, std::memory_order_relaxed);
  }
  void Release(size_t bytes) {
    used_.fetch_sub(bytes, std::memory_order_relaxed);
  }
  void NoteRefusal() { refusals_.fetch_add(1, std::memory_order_relaxed); }

  size_t limit() const { return limit_; }
  size_t used() const { return used_.load(std::memory_order_relaxed); }
  // New keys refused for lack of budget, by every rule.
  uint64_t refusals() const {
    return refusals_.load(std::memory_order_relaxed);
  }

 private:
  const size_t limit_;
  std::atomic<size_t> used_{0};
  std::atomic<uint64_t> refusals_{0};
};

// What one table has charged to a budget; released when it is destroyed.
// Moving transfers the charge.
class BudgetCharge {
 public:
  BudgetCharge() = default;
  ~BudgetCharge() { Set(nullptr); }
  BudgetCharge(BudgetCharge&& o) noexcept
      : budget_(std::exchange(o.budget_, nullptr)),
        charged_(std::exchange(o.charged_, 0)) {}
  BudgetCharge& operator=(BudgetCharge&& o) noexcept {
    if (this != &o) {
      Set(nullptr);
      budget_ = std::exchange(o.budget_, nullptr);
      charged_ = std::exchange(o.charged_, 0);
    }
    return *this;
  }
  BudgetCharge(const BudgetCharge&) = delete;
  BudgetCharge& operator=(const BudgetCharge&) = delete;

  // Attaches to `budget` (null: none) and charges `bytes` to it at once,
  // releasing the charge on the previous budget.
  void Set(MemoryBudget* budget, size_t bytes = 0) {
    if (budget_ != nullptr && charged_ != 0) budget_->Release(charged_);
    budget_ = budget;
    charged_ = 0;
    if (budget_ != nullptr && bytes != 0) {
      charged_ = Round(bytes);
      budget_->Charge(charged_);
    }
  }
  MemoryBudget* budget() const { return budget_; }
  size_t charged() const { return charged_; }

  // Makes the charge cover `bytes` if the budget allows; true when it does
  // (always without a budget).
  bool Reserve(size_t bytes) {
    if (budget_ == nullptr || bytes <= charged_) return true;
    const size_t want = Round(bytes);
    if (!budget_->TryCharge(want - charged_)) return false;
    charged_ = want;
    return true;
  }
  // Follows `bytes` in use whatever the budget says (memory that exists):
  // grows the charge when it is short, and gives back what is more than
  // two chunks above `bytes`.
  void Track(size_t bytes) {
    if (budget_ == nullptr) return;
    if (bytes > charged_) {
      const size_t want = Round(bytes);
      budget_->Charge(want - charged_);
      charged_ = want;
    } else if (charged_ - bytes > 2 * MemoryBudget::kChunk) {
      const size_t want = Round(bytes);
      budget_->Release(charged_ - want);
      charged_ = want;
    }
  }

 private:
  static size_t Round(size_t bytes) {
    return (bytes + MemoryBudget::kChunk - 1) / MemoryBudget::kChunk *
           MemoryBudget::kChunk;
  }
  MemoryBudget* budget_ = nullptr;
  size_t charged_ = 0;
};

}  // namespace invariantd

#endif  // INVARIANTD_RULES_MEMORY_BUDGET_H_
