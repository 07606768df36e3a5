# Cortex-M4F (single-precision FPU), e.g. STM32F4; runs under qemu-system-arm -M mps2-an386.
#   cmake -S tests/cortex_m -B build/cortex-m4 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/cortex-m4.cmake
set(EDGENN_CORTEX_M_CPU_FLAGS "-mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard")
set(EDGENN_CORTEX_M_MACHINE mps2-an386)
include(${CMAKE_CURRENT_LIST_DIR}/cortex-m-common.cmake)
