#pragma once

#define EDGENN_VERSION_MAJOR 0
#define EDGENN_VERSION_MINOR 1
#define EDGENN_VERSION_PATCH 0

namespace edgenn {
inline constexpr const char* version() { return "0.1.0"; }
}  // namespace edgenn
