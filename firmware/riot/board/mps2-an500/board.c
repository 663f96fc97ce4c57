/*
 * ARM MPS2+ AN500 (Cortex-M7) under QEMU: CMSDK APB UART0 for the serial line, CMSDK APB
 * timer0 as the cost counter, semihosting for the exit status.
 *
 * Cost unit: ticks of timer0, clocked at the 25 MHz peripheral clock. QEMU has no timing
 * model; under `-icount shift=S` one instruction takes 2^S ns of virtual time, so one tick
 * is 40 / 2^S instructions (40 with shift=0). The DWT cycle counter reads 0 in QEMU.
 */
#include <stdint.h>

#include "board.h"
#include "platform.h"
#include "protocol.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

#define UART0_BASE 0x40004000u
#define UART_DATA REG(UART0_BASE + 0x00u)
#define UART_STATE REG(UART0_BASE + 0x04u) /* bit0 TX full, bit1 RX full */
#define UART_CTRL REG(UART0_BASE + 0x08u)  /* bit0 TX enable, bit1 RX enable */
#define UART_INTCLEAR REG(UART0_BASE + 0x0Cu) /* bit1 RX interrupt */
#define UART_BAUDDIV REG(UART0_BASE + 0x10u)
#define UART_CTRL_RXINTEN (1u << 3)

#define TIMER0_BASE 0x40000000u
#define TIMER_CTRL REG(TIMER0_BASE + 0x00u) /* bit0 enable */
#define TIMER_VALUE REG(TIMER0_BASE + 0x04u)
#define TIMER_RELOAD REG(TIMER0_BASE + 0x08u)

#define TIMER1_BASE 0x40001000u
#define TIMER1_CTRL REG(TIMER1_BASE + 0x00u) /* bit0 enable, bit3 interrupt enable */
#define TIMER1_VALUE REG(TIMER1_BASE + 0x04u)
#define TIMER1_RELOAD REG(TIMER1_BASE + 0x08u)
#define TIMER1_INT REG(TIMER1_BASE + 0x0Cu) /* read: status, write 1: clear */

#define NVIC_ISER0 REG(0xE000E100u)
#define NVIC_ICPR0 REG(0xE000E280u)
#define IRQ_UART0_RX 0u
#define IRQ_TIMER1 9u

#define TICK_HZ 25000000u

void board_init(void)
{
    /* Interrupts stay masked (PRIMASK): they only end a WFI in plat_getc(). */
    __asm__ volatile("cpsid i" ::: "memory");
    UART_BAUDDIV = 16u;
    UART_CTRL = 3u | UART_CTRL_RXINTEN;
    NVIC_ISER0 = (1u << IRQ_UART0_RX) | (1u << IRQ_TIMER1);
    TIMER_CTRL = 0u;
    TIMER_RELOAD = 0xFFFFFFFFu;
    TIMER_VALUE = 0xFFFFFFFFu;
    TIMER_CTRL = 1u;
}

void plat_init(void)
{
}

static void uart_putc(uint8_t c)
{
    while (UART_STATE & 1u) {
    }
    UART_DATA = c;
}

void plat_write(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len--) {
        uart_putc(*p++);
    }
}

uint32_t plat_ticks(void)
{
    return ~TIMER_VALUE; /* the timer counts down */
}

uint32_t plat_tick_hz(void)
{
    return TICK_HZ;
}

uint8_t plat_cost_unit(void)
{
    return NNC_COST_TICKS;
}

const char *plat_board_name(void)
{
    return "mps2-an500";
}

uint32_t plat_stack_used(void)
{
    return board_stack_used();
}

/*
 * Waits with WFI, woken by the UART0 RX interrupt or by timer1 for the timeout. Busy
 * polling would be very slow under `-icount` (every device read in a translation block
 * forces a re-translation); while the core sleeps, QEMU's virtual clock follows the host.
 */
int plat_getc(uint32_t timeout_ms)
{
    int timed_out = 0;
    if (!(UART_STATE & 2u) && timeout_ms) {
        uint32_t ticks = timeout_ms * (TICK_HZ / 1000u);
        TIMER1_CTRL = 0u;
        TIMER1_INT = 1u;
        TIMER1_RELOAD = ticks;
        TIMER1_VALUE = ticks;
        TIMER1_CTRL = 1u | 8u;
    }
    while (!(UART_STATE & 2u)) {
        if (timeout_ms && (TIMER1_INT & 1u)) {
            timed_out = 1;
            break;
        }
        __asm__ volatile("wfi" ::: "memory");
        UART_INTCLEAR = 2u;
        NVIC_ICPR0 = (1u << IRQ_UART0_RX);
    }
    if (timeout_ms) {
        TIMER1_CTRL = 0u;
        TIMER1_INT = 1u;
        NVIC_ICPR0 = (1u << IRQ_TIMER1);
    }
    UART_INTCLEAR = 2u;
    NVIC_ICPR0 = (1u << IRQ_UART0_RX);
    if (timed_out) {
        return -1;
    }
    return (int)(UART_DATA & 0xFFu);
}

/* Semihosting SYS_EXIT_EXTENDED: QEMU (-semihosting-config enable=on) exits with `code`. */
void board_exit(int code)
{
    volatile uint32_t block[2] = { 0x20026u, (uint32_t)code };
    register uint32_t r0 __asm__("r0") = 0x20u;
    register volatile uint32_t *r1 __asm__("r1") = block;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    for (;;) {
    }
}

void plat_exit(int code)
{
    board_exit(code);
}

void board_fault(const char *what)
{
    static const char prefix[] = "\r\nfatal: ";
    plat_write(prefix, sizeof(prefix) - 1);
    while (*what) {
        uart_putc((uint8_t)*what++);
    }
    uart_putc('\r');
    uart_putc('\n');
    board_exit(3);
}
