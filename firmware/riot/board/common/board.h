/* Interface between common/startup.c and a board's board.c. */
#ifndef NNC_BOARD_H
#define NNC_BOARD_H
#include <stdint.h>

#ifndef BOARD_NUM_IRQS
#error "BOARD_NUM_IRQS must be defined by the build (number of external interrupts)"
#endif

void board_init(void);
void board_exit(int code) __attribute__((noreturn));
void board_fault(const char *what) __attribute__((noreturn));
uint32_t board_stack_used(void);

#endif
