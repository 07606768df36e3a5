/* Minimal Cortex-M startup for newlib + semihosting (--specs=rdimon.specs) on qemu's MPS2
 * boards: a 16-entry vector table at 0x0 (keep it with -Wl,-u,g_vectors and place it with
 * -Wl,--section-start=.isr_vector=0x0; __stack_top comes from -Wl,--defsym), and a reset
 * handler that enables the FPU before any hard-float code runs, then enters newlib's _start
 * (rdimon-crt0: zeroes .bss, sets up heap/stack and stdio through semihosting, runs static
 * constructors, calls main, then exit(main's return value)).
 * cmake/toolchains/cortex-m*.cmake pass exactly those link flags. */
#include <stdint.h>

extern void _start(void);    /* newlib rdimon-crt0 */
extern uint32_t __stack_top; /* --defsym on the link line */

void Reset_Handler(void) {
#if defined(__ARM_FP)
  *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20); /* CPACR: full access to CP10/CP11 */
  __asm volatile("dsb\n isb");
#endif
  _start();
}

void Default_Handler(void) {
  for (;;) {
  }
}

__attribute__((section(".isr_vector"), used)) void (*const g_vectors[16])(void) = {
    (void (*)(void))&__stack_top, /* initial stack pointer */
    Reset_Handler,
    Default_Handler, /* NMI */
    Default_Handler, /* HardFault */
    Default_Handler, /* MemManage */
    Default_Handler, /* BusFault */
    Default_Handler, /* UsageFault */
    0, 0, 0, 0,      /* reserved */
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMonitor */
    0,               /* reserved */
    Default_Handler, /* PendSV */
    Default_Handler, /* SysTick */
};
