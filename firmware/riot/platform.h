/* What the application needs from a board: the bare-metal layers in board/ and the RIOT
 * glue in platform_riot.c implement it. */
#ifndef NNC_PLATFORM_H
#define NNC_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

void plat_init(void);
/* Next byte from the serial line, or -1 when none arrived within timeout_ms
 * (timeout_ms == 0: wait forever). */
int plat_getc(uint32_t timeout_ms);
void plat_write(const void *buf, size_t len);
/* Free-running 32-bit up counter used for costs and timeouts. */
uint32_t plat_ticks(void);
uint32_t plat_tick_hz(void);
uint8_t plat_cost_unit(void); /* NNC_COST_CYCLES or NNC_COST_TICKS */
const char *plat_board_name(void);
/* Deepest stack use seen so far in bytes, 0 if unknown. */
uint32_t plat_stack_used(void);
/* Emulator: terminate with `code`. Board: reset. */
void plat_exit(int code);

#endif
