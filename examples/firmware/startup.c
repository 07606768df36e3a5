/* Minimal Cortex-M startup for the firmware example, without the C library's start-up code
 * (linked with -nostartfiles): a vector table, and a reset handler that enables the FPU,
 * zeroes .bss, runs static constructors, calls main and reports main's return value as the
 * exit status (semihosting).
 *
 * The memory layout is the toolchain's default linker script, which qemu's MPS2 boards load
 * as is (code and data in RAM at 0x0). On a real board use the vendor's linker script and
 * also copy .data from its load address in flash (see docs/firmware.md). */
#include <stdint.h>

#include "semihost.h"

extern uint32_t __stack_top;                    /* top of the stack: --defsym on the link line */
extern uint32_t __bss_start__[], __bss_end__[]; /* default linker script */
extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);
int main(void);

void Reset_Handler(void) {
#if defined(__ARM_FP)
  /* CPACR: full access to CP10/CP11 (the FPU) before the first floating-point instruction;
   * without it the first VFP instruction faults. */
  *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
  __asm volatile("dsb\n isb");
#endif
  for (volatile uint32_t *p = __bss_start__; p < __bss_end__; ++p) *p = 0;
  for (void (**f)(void) = __init_array_start; f < __init_array_end; ++f) (*f)();
  semihost_exit(main());
}

void Default_Handler(void) {
  for (;;) {
  }
}

/* Handlers the application may define (weak: default to the endless loop). */
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

/* The first 16 entries (core exceptions) are all a Cortex-M needs to boot; device interrupts
 * follow them on a real part. */
__attribute__((section(".isr_vector"), used)) void (*const g_vectors[16])(void) = {
    (void (*)(void)) & __stack_top, /* initial stack pointer */
    Reset_Handler,
    Default_Handler, /* NMI */
    Default_Handler, /* HardFault */
    Default_Handler, /* MemManage */
    Default_Handler, /* BusFault */
    Default_Handler, /* UsageFault */
    0,
    0,
    0,
    0,               /* reserved */
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMonitor */
    0,               /* reserved */
    Default_Handler, /* PendSV */
    SysTick_Handler, /* SysTick (main.cpp counts its wraps for timing) */
};
