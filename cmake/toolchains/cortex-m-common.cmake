# Shared part of the Cortex-M toolchain files (cortex-m4.cmake, cortex-m7.cmake): bare-metal
# arm-none-eabi-gcc with newlib and semihosting (rdimon), programs run under
# qemu-system-arm's MPS2 boards. Set EDGENN_CORTEX_M_CPU_FLAGS and EDGENN_CORTEX_M_MACHINE
# before including this file.
#
# Debian: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-dev
#         apt-get install --no-install-recommends qemu-system-arm
# (libstdc++-arm-none-eabi-newlib, 1.5 GB, is only needed for code that uses the compiled parts
#  of libstdc++/libsupc++: operator new, __cxa_pure_virtual, iostreams, ...; see below.)
#
# A program linked with these flags needs a vector table in section .isr_vector (symbol
# g_vectors) whose reset handler enables the FPU and calls newlib's _start:
# tests/cortex_m/startup.c is one. The memory layout (image at 0x0, stack top at 4 MiB) fits
# qemu's mps2-an386/an500, whose memory at 0x0 is RAM; real boards need their own linker
# script (rdimon-crt0 does not copy .data from flash).
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_CXX_COMPILER arm-none-eabi-g++)
set(CMAKE_ASM_COMPILER arm-none-eabi-gcc)
# try_compile cannot link a bare-metal program without startup code.
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)

set(CMAKE_C_FLAGS_INIT "${EDGENN_CORTEX_M_CPU_FLAGS} -ffunction-sections -fdata-sections")
set(CMAKE_CXX_FLAGS_INIT "${EDGENN_CORTEX_M_CPU_FLAGS} -ffunction-sections -fdata-sections -fno-exceptions -fno-rtti")
set(CMAKE_ASM_FLAGS_INIT "${EDGENN_CORTEX_M_CPU_FLAGS}")
set(CMAKE_EXE_LINKER_FLAGS_INIT
    "--specs=rdimon.specs -Wl,--gc-sections -Wl,-u,g_vectors -Wl,--section-start=.isr_vector=0x0 -Wl,--defsym=__stack_top=0x00400000")

# arm-none-eabi-g++ links -lstdc++. Without the (large) compiled libstdc++ for this multilib,
# link C++ programs through the C driver plus -lm: enough for code that needs no libstdc++
# runtime, such as edgenn built with -fno-exceptions -fno-rtti.
separate_arguments(_edgenn_cm_flags UNIX_COMMAND "${EDGENN_CORTEX_M_CPU_FLAGS}")
execute_process(COMMAND ${CMAKE_CXX_COMPILER} ${_edgenn_cm_flags} -print-file-name=libstdc++.a
                OUTPUT_VARIABLE _edgenn_cm_libstdcxx OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT IS_ABSOLUTE "${_edgenn_cm_libstdcxx}")
  set(CMAKE_CXX_LINK_EXECUTABLE
      "${CMAKE_C_COMPILER} <FLAGS> <CMAKE_CXX_LINK_FLAGS> <LINK_FLAGS> <OBJECTS> -o <TARGET> <LINK_LIBRARIES> -lm")
endif()

# ctest / add_test run programs on the emulated board; main's return value is the exit status.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-system-arm -M ${EDGENN_CORTEX_M_MACHINE} -nographic
    -semihosting-config enable=on,target=native -kernel)

# Nothing from the host: arm-none-eabi has its own headers and libraries (never add
# -I/usr/include; header-only host packages need a directory of symlinks).
set(CMAKE_FIND_ROOT_PATH /usr/lib/arm-none-eabi)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
