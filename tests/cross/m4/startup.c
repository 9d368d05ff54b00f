/*
 * startup.c: bare-metal start-up for the Cortex-M4 firmware on QEMU's mps2-an386, with the
 * semihosting calls of semihost.h. No newlib start files (link with -nostartfiles and
 * mps2_an386.ld).
 *
 * Reset_Handler first grants full access to the FPU (CPACR CP10 and CP11, bits 20..23; they
 * reset to "no access", and any floating-point instruction before this line is a UsageFault
 * (NOCP) on a real M4 and on QEMU): it is naked assembly so that the compiler cannot put a
 * VFP instruction ahead of the write. Then, in C, it copies .data's initial values from the
 * code SSRAM to RAM, zeroes .bss, runs .init_array, calls main() and ends the program through
 * semihosting with main's return value as QEMU's exit status. Every fault and interrupt goes
 * to one handler that prints the exception number, the stacked PC and the fault status
 * registers and exits with status 3, so a crash ends the run instead of hanging it.
 */
#include <stdint.h>
#include <string.h>

#include "semihost.h"

extern uint32_t __data_start__[], __data_end__[], __data_load__[];
extern uint32_t __bss_start__[], __bss_end__[];
extern uint32_t __stack_top__[];
extern char __heap_start__[], __heap_end__[];
extern void (*__init_array_start[])(void), (*__init_array_end[])(void);
extern int main(void);

void Reset_Handler(void);
void Fault_Handler(void);
void c_start(void) __attribute__((noreturn, used));
void fault_report(const uint32_t *frame, uint32_t ipsr) __attribute__((noreturn, used));

/* ---- semihosting -------------------------------------------------------------------- */

enum {
  SYS_OPEN = 0x01,
  SYS_WRITE0 = 0x04,
  SYS_WRITE = 0x05,
  SYS_EXIT = 0x18,
  SYS_EXIT_EXTENDED = 0x20,
  ADP_Stopped_RunTimeErrorUnknown = 0x20023,
  ADP_Stopped_ApplicationExit = 0x20026
};

static int sh_call(int op, const void *arg) {
  register int r0 __asm__("r0") = op;
  register const void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

static int sh_stdout = -2; /* -2 not opened yet, -1 unavailable */
static char sh_buf[257];
static size_t sh_len;

void sh_flush(void) {
  if (!sh_len) return;
  if (sh_stdout == -2) {
    static const char tt[] = ":tt";
    uint32_t blk[3] = {(uint32_t)(uintptr_t)tt, 4 /* "w" */, 3};
    sh_stdout = sh_call(SYS_OPEN, blk);
    if (sh_stdout < 0) sh_stdout = -1;
  }
  if (sh_stdout >= 0) {
    uint32_t blk[3] = {(uint32_t)sh_stdout, (uint32_t)(uintptr_t)sh_buf, (uint32_t)sh_len};
    sh_call(SYS_WRITE, blk);
  } else {
    sh_buf[sh_len] = 0;
    sh_call(SYS_WRITE0, sh_buf);
  }
  sh_len = 0;
}

void sh_write(const char *s, size_t n) {
  while (n--) {
    char c = *s++;
    sh_buf[sh_len++] = c;
    if (c == '\n' || sh_len == sizeof sh_buf - 1) sh_flush();
  }
}

void sh_puts(const char *s) { sh_write(s, strlen(s)); }

void sh_exit(int status) {
  sh_flush();
  if (status == 0) {
    /* A32/T32 SYS_EXIT: r1 is the reason itself, not a block; ApplicationExit = status 0 */
    sh_call(SYS_EXIT, (const void *)(uintptr_t)ADP_Stopped_ApplicationExit);
  } else {
    uint32_t blk[2] = {ADP_Stopped_ApplicationExit, (uint32_t)status};
    sh_call(SYS_EXIT_EXTENDED, blk);
    sh_call(SYS_EXIT, (const void *)(uintptr_t)ADP_Stopped_RunTimeErrorUnknown); /* status 1 */
  }
  for (;;) __asm__ volatile("wfi");
}

/* newlib's hooks, should anything pull in exit() or malloc() */
void _exit(int status) { sh_exit(status); }

void *_sbrk(ptrdiff_t incr) {
  static char *brk = __heap_start__;
  char *old = brk;
  if (incr > __heap_end__ - brk || incr < __heap_start__ - brk) return (void *)-1;
  brk += incr;
  return old;
}

/* ---- reset and faults --------------------------------------------------------------- */

__attribute__((naked)) void Reset_Handler(void) {
  __asm__ volatile(
      "ldr   r0, =0xE000ED88      \n" /* SCB->CPACR */
      "ldr   r1, [r0]             \n"
      "orr   r1, r1, #(0xF << 20) \n" /* CP10, CP11: full access */
      "str   r1, [r0]             \n"
      "dsb                        \n"
      "isb                        \n" /* the FPU is usable from the next instruction */
      "ldr   r0, =__stack_top__   \n"
      "mov   sp, r0               \n"
      "b     c_start              \n"
      ".ltorg                     \n");
}

void c_start(void) {
  uint32_t *src = __data_load__, *dst = __data_start__;
  void (**f)(void);
  while (dst < __data_end__) *dst++ = *src++;
  for (dst = __bss_start__; dst < __bss_end__;) *dst++ = 0;
  for (f = __init_array_start; f < __init_array_end; f++) (*f)();
  sh_exit(main());
}

__attribute__((naked)) void Fault_Handler(void) {
  __asm__ volatile(
      "tst   lr, #4     \n" /* EXC_RETURN bit 2: which stack holds the frame */
      "ite   eq         \n"
      "mrseq r0, msp    \n"
      "mrsne r0, psp    \n"
      "mrs   r1, ipsr   \n"
      "b     fault_report\n");
}

static void put_hex(uint32_t v) {
  char b[9];
  int i;
  for (i = 7; i >= 0; i--, v >>= 4) b[i] = "0123456789abcdef"[v & 15];
  b[8] = 0;
  sh_puts(b);
}

void fault_report(const uint32_t *frame, uint32_t ipsr) {
  volatile uint32_t *scb = (volatile uint32_t *)0xE000ED00;
  sh_puts("\nfw: exception ");
  put_hex(ipsr & 0x1ff);
  sh_puts(" pc ");
  put_hex(frame[6]);
  sh_puts(" lr ");
  put_hex(frame[5]);
  sh_puts(" CFSR ");
  put_hex(scb[0x28 / 4]);
  sh_puts(" HFSR ");
  put_hex(scb[0x2c / 4]);
  sh_puts(" MMFAR ");
  put_hex(scb[0x34 / 4]);
  sh_puts(" BFAR ");
  put_hex(scb[0x38 / 4]);
  sh_puts("\n");
  sh_exit(3);
}

/* 16 system exceptions and AN386's 32 interrupts; only the reset entry does anything */
typedef void (*Vector)(void);
__attribute__((section(".isr_vector"), used)) const Vector vector_table[16 + 32] = {
    __extension__(Vector) __stack_top__, /* initial SP (GNU C: a data address as a pointer) */
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault (NOCP: the FPU used before CPACR) */
    0, 0, 0, 0,
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor */
    0,
    Fault_Handler, /* PendSV */
    Fault_Handler, /* SysTick */
    Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler};
