/* Semihosting (Arm's debug-host calls, `bkpt 0xAB` on Cortex-M): text out and exit status,
 * the only two services the firmware example needs. A debugger (OpenOCD, pyOCD, J-Link) or
 * qemu's `-semihosting-config enable=on` answers them; without a debugger attached a bkpt
 * halts the core, so a real product replaces these two functions (UART, reset). */
#ifndef EDGENN_EXAMPLE_SEMIHOST_H
#define EDGENN_EXAMPLE_SEMIHOST_H

#ifdef __cplusplus
extern "C" {
#endif

static inline int semihost_call(int op, const void *arg) {
  register int r0 __asm("r0") = op;
  register const void *r1 __asm("r1") = arg;
  __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

/* A NUL-terminated string to the host's standard output: SYS_OPEN(":tt", "w") once, then
 * SYS_WRITE to that handle (what C libraries do for stdout; qemu maps it to its stdout). */
static inline void semihost_write(const char *s) {
  static int handle = -1;
  if (handle < 0) {
    const void *open_args[3] = {":tt", (const void *)4 /* mode "w" */, (const void *)3 /* strlen(":tt") */};
    handle = semihost_call(0x01, open_args);
  }
  unsigned len = 0;
  while (s[len]) ++len;
  const void *write_args[3] = {(const void *)(long)handle, s, (const void *)(unsigned long)len};
  (void)semihost_call(0x05, write_args);
}

/* SYS_EXIT_EXTENDED: stop, with `status` as the exit status of the emulator / debug session. */
static inline void semihost_exit(int status) {
  const int block[2] = {0x20026 /* ADP_Stopped_ApplicationExit */, status};
  (void)semihost_call(0x20, block);
  for (;;) {
  }
}

#ifdef __cplusplus
}
#endif
#endif
