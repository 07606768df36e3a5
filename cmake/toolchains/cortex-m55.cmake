# Cortex-M55 (Armv8.1-M with Helium/MVE and FPU); runs under qemu-system-arm -M mps3-an547.
#   cmake -S examples/firmware -B build/fw-m55 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/cortex-m55.cmake
# The AN547's ITCM at 0x0 (512 KB) keeps the vector table; the program (code, weights, data)
# goes to its 2 MB SRAM at 0x01000000 and the stack to the top of that SRAM, because a model's
# weights do not fit the ITCM.
set(EDGENN_CORTEX_M_CPU_FLAGS "-mcpu=cortex-m55 -mthumb -mfloat-abi=hard")
set(EDGENN_CORTEX_M_MACHINE mps3-an547)
include(${CMAKE_CURRENT_LIST_DIR}/cortex-m-common.cmake)
set(CMAKE_EXE_LINKER_FLAGS_INIT
    "--specs=rdimon.specs -Wl,--gc-sections -Wl,-u,g_vectors -Wl,--section-start=.isr_vector=0x0 -Wl,-Ttext-segment=0x01000000 -Wl,--defsym=__stack_top=0x01200000")
