/* DIANA host core on QEMU: bare-metal RV32IMC board layer for `qemu-system-riscv32 -M virt`.
 * (The real DIANA SoC has a PULP-style RISC-V host; QEMU's virt machine stands in for it:
 * 16550 UART at 0x10000000, the SiFive test device at 0x100000 for the exit status, RAM at
 * 0x80000000.) */
#ifndef DIANA_BOARD_H
#define DIANA_BOARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void board_putc(char c);
void board_puts(const char* s);
/* A small printf: %s %c %d %u %x %ld %lu %lld %llu %%, with '-' and a width. */
void board_printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
/* Instructions retired (minstret/minstreth): exact under `qemu -icount shift=0`. */
uint64_t board_instret(void);
/* Ends the emulation with `code` as QEMU's exit status (0 = pass). */
void board_exit(int code) __attribute__((noreturn));

#ifdef __cplusplus
}
#endif

#endif
