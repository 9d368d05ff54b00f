/*
 * semihost.h: the few ARM semihosting calls the Cortex-M4 firmware needs (startup.c). On
 * M-profile a semihosting call is `bkpt 0xab` with the operation in r0 and its argument (a
 * value or a pointer to a parameter block) in r1, the result back in r0. Under
 * `qemu-system-arm -semihosting-config enable=on,target=native` QEMU serves them itself.
 */
#ifndef TESLA_CROSS_SEMIHOST_H
#define TESLA_CROSS_SEMIHOST_H
#include <stddef.h>

/* bytes to the host's stdout (":tt" opened for writing; SYS_WRITE0 if that fails), buffered
 * until a newline, 256 bytes or sh_flush() */
void sh_write(const char *s, size_t n);
void sh_puts(const char *s); /* no newline added */
void sh_flush(void);
/* ends the program: QEMU exits with `status` (SYS_EXIT_EXTENDED with
 * ADP_Stopped_ApplicationExit; plain SYS_EXIT, exit status 0 or 1, where that is missing) */
void sh_exit(int status) __attribute__((noreturn));

#endif
