// The enums that cross the JS boundary, each with the one table of its names.
// Values travel by name in both directions; enumTables() exports the names so a
// test can hold them equal to the TS options schema. Standard C++ only:
// included on both sides of the boundary.
#pragma once

#include <cstddef>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace perceptual {

// Mirrors the `code` of the JS PerceptualLossError.
enum class ErrorCode { Options, Shape, Dtype, Device, Disposed, ForeignObject, NonFinite, OutOfMemory, File, Libtorch };

struct Error : std::runtime_error {
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code(code) {}
  ErrorCode code;
};

// An internal invariant that native code checks for memory safety (the TS schema validated the
// user's values before): ERR_LIBTORCH with the message, on either op layer.
template <typename... Parts>
[[noreturn]] void failedCheck(const Parts&... parts) {
  std::ostringstream message;
  message << "native check failed: ";
  (message << ... << parts);
  throw Error(ErrorCode::Libtorch, message.str());
}

#define PL_CHECK(condition, ...)                              \
  do {                                                        \
    if (!(condition)) ::perceptual::failedCheck(__VA_ARGS__); \
  } while (false)

enum class Criterion { L1, L2, SmoothL1 };
enum class Reduction { Mean, Sum, None };
enum class PoolKind { Max, Avg };
enum class InitKind { KaimingNormal, KaimingUniform, XavierNormal, XavierUniform, Normal };
enum class Layout { NCHW, NHWC };

template <typename E>
struct Named {
  const char* name;
  E value;
};

// One code a line, in the order of ERROR_CODES in lib/errors.ts.
// clang-format off
inline constexpr Named<ErrorCode> kErrorCodes[] = {
    {"ERR_OPTIONS", ErrorCode::Options},
    {"ERR_SHAPE", ErrorCode::Shape},
    {"ERR_DTYPE", ErrorCode::Dtype},
    {"ERR_DEVICE", ErrorCode::Device},
    {"ERR_DISPOSED", ErrorCode::Disposed},
    {"ERR_FOREIGN_OBJECT", ErrorCode::ForeignObject},
    {"ERR_NONFINITE", ErrorCode::NonFinite},
    {"ERR_OUT_OF_MEMORY", ErrorCode::OutOfMemory},
    {"ERR_FILE", ErrorCode::File},
    {"ERR_LIBTORCH", ErrorCode::Libtorch},
};
// clang-format on

inline constexpr Named<Criterion> kCriteria[] = {
    {"l1", Criterion::L1},
    {"l2", Criterion::L2},
    {"smooth_l1", Criterion::SmoothL1},
};

inline constexpr Named<Reduction> kReductions[] = {
    {"mean", Reduction::Mean},
    {"sum", Reduction::Sum},
    {"none", Reduction::None},
};

inline constexpr Named<PoolKind> kPools[] = {
    {"max", PoolKind::Max},
    {"avg", PoolKind::Avg},
};

// 'normal' is the schema's { normal: std }, its std passed apart.
inline constexpr Named<InitKind> kInits[] = {
    {"kaiming_normal", InitKind::KaimingNormal},
    {"kaiming_uniform", InitKind::KaimingUniform},
    {"xavier_normal", InitKind::XavierNormal},
    {"xavier_uniform", InitKind::XavierUniform},
    {"normal", InitKind::Normal},
};

// Channels first or last: a volume's names map onto the image's, its rank tells them apart.
inline constexpr Named<Layout> kLayouts[] = {
    {"nchw", Layout::NCHW},
    {"nhwc", Layout::NHWC},
    {"ncdhw", Layout::NCHW},
    {"ndhwc", Layout::NHWC},
};

// `what` names the enum in the error: the TS schema validates first, so this
// means the two sides disagree.
template <typename E, size_t N>
E fromName(const Named<E> (&table)[N], const std::string& name, const char* what) {
  for (const Named<E>& entry : table) {
    if (name == entry.name) return entry.value;
  }
  throw Error(ErrorCode::Libtorch, std::string("unknown ") + what + " \"" + name + "\"");
}

template <typename E, size_t N>
const char* nameOf(const Named<E> (&table)[N], E value) {
  for (const Named<E>& entry : table) {
    if (entry.value == value) return entry.name;
  }
  return "unknown";
}

template <typename E, size_t N>
std::vector<std::string> namesOf(const Named<E> (&table)[N]) {
  std::vector<std::string> names;
  for (const Named<E>& entry : table) names.emplace_back(entry.name);
  return names;
}

inline const char* errorCodeName(ErrorCode code) { return nameOf(kErrorCodes, code); }

}  // namespace perceptual
