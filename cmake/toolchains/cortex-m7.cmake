# Cortex-M7 (double-precision FPU), e.g. STM32F7/H7; runs under qemu-system-arm -M mps2-an500.
#   cmake -S tests/cortex_m -B build/cortex-m7 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/cortex-m7.cmake
set(EDGENN_CORTEX_M_CPU_FLAGS "-mcpu=cortex-m7 -mthumb -mfpu=fpv5-d16 -mfloat-abi=hard")
set(EDGENN_CORTEX_M_MACHINE mps2-an500)
include(${CMAKE_CURRENT_LIST_DIR}/cortex-m-common.cmake)
