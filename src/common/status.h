// Status helpers shared by every module.
//
// Fallible calls return absl::Status / absl::StatusOr<T>. Debian's abseil
// (20220623) lacks the RETURN_IF_ERROR / ASSIGN_OR_RETURN macros, so these are
// the project's own, with the same meaning. Thread-compatible: plain macros.
#pragma once

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

// Note: Debian's abseil is built with its own absl::string_view, distinct from
// std::string_view; convert with std::string(...) at the boundary.

#define MYCEL_CONCAT_INNER_(a, b) a##b
#define MYCEL_CONCAT_(a, b) MYCEL_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the caller if not OK.
#define MYCEL_RETURN_IF_ERROR(expr)                  \
  do {                                               \
    ::absl::Status mycel_status_ = (expr);           \
    if (!mycel_status_.ok()) return mycel_status_;   \
  } while (0)

// `lhs = value of rexpr` where rexpr is an absl::StatusOr<T>; returns the error otherwise.
#define MYCEL_ASSIGN_OR_RETURN(lhs, rexpr) \
  MYCEL_ASSIGN_OR_RETURN_IMPL_(MYCEL_CONCAT_(mycel_statusor_, __LINE__), lhs, rexpr)
#define MYCEL_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                 \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()

namespace mycel {

// Prefixes a status message with context ("loading checkpoint: ...").
inline absl::Status Annotate(const absl::Status& s, std::string_view context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), std::string(context) + ": " + std::string(s.message()));
}

// errno → absl::Status with the operation and path in the message.
absl::Status ErrnoStatus(int err, std::string_view op, std::string_view path);

}  // namespace mycel
