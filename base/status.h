// Status / StatusOr<T>: the one convention for recoverable errors (leveldb's Status, Abseil's
// StatusOr). A Status is OK or carries a code and a message that names the file, field or value
// at fault; CHECK stays for invariants, and exceptions only at LibTorch's boundary.
#pragma once

#include <glog/logging.h>

#include <optional>
#include <string>
#include <utility>

namespace reid {

class Status {
 public:
  enum class Code {
    kOk = 0,
    kInvalidArgument,  // the user's input is wrong (config, flag, path, data): exit 2
    kNotFound,         // a file or directory the user named does not exist: exit 2
    kDataLoss,         // a file exists but its content is corrupt (size, checksum): exit 2
    kInternal,         // a failure of ours or of the system (I/O error, disk full): exit 1
  };
  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) {
    return Status(Code::kInvalidArgument, std::move(msg));
  }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, std::move(msg)); }
  static Status DataLoss(std::string msg) { return Status(Code::kDataLoss, std::move(msg)); }
  static Status Internal(std::string msg) { return Status(Code::kInternal, std::move(msg)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // True for errors the user can fix (exit status 2); false for ours or the system's (1).
  bool is_user_error() const { return !ok() && code_ != Code::kInternal; }
  // The process exit status for this result: 0, 2 (user error) or 1.
  int exit_code() const { return ok() ? 0 : (is_user_error() ? 2 : 1); }
  // A copy with `context` prepended to the message ("context: message").
  Status Annotate(const std::string& context) const {
    return ok() ? *this : Status(code_, context + ": " + message_);
  }

 private:
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

// A value or the Status saying why there is none.
template <typename T>
class StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}         // NOLINT: implicit like absl::StatusOr
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT
    CHECK(!status_.ok()) << "StatusOr built from an OK status without a value";
  }
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & {
    CHECK(ok()) << status_.message();
    return *value_;
  }
  const T& value() const& {
    CHECK(ok()) << status_.message();
    return *value_;
  }
  T&& value() && {
    CHECK(ok()) << status_.message();
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace reid

// Returns from the calling function when `expr` (a Status) is not OK.
#define REID_RETURN_IF_ERROR(expr)               \
  do {                                           \
    const ::reid::Status reid_status_ = (expr);  \
    if (!reid_status_.ok()) return reid_status_; \
  } while (0)

// `REID_ASSIGN_OR_RETURN(auto x, Foo());` evaluates `expr` (a StatusOr<T>): returns its Status
// from the calling function when it is not OK, else moves the value into `lhs` (a declaration or
// an existing variable). It expands to several statements: use it inside braces, never as the
// lone body of an unbraced if or loop.
#define REID_ASSIGN_OR_RETURN(lhs, expr) \
  REID_ASSIGN_OR_RETURN_IMPL_(REID_STATUS_CONCAT_(reid_statusor_, __LINE__), lhs, expr)
#define REID_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
#define REID_STATUS_CONCAT_(a, b) REID_STATUS_CONCAT_INNER_(a, b)
#define REID_STATUS_CONCAT_INNER_(a, b) a##b
