// Runs every kernel instantiation of tests/no_exceptions_check.cpp on the emulated Cortex-M.
// The exit status (semihosting) is main's return value: 0 = every kernel returned ok.
// No printf on purpose: the program should pull in nothing but the engine and newlib's startup.
int edgenn_no_exceptions_check();

int main() { return edgenn_no_exceptions_check(); }
