/*
 * RIOT glue for the application (platform.h): stdio for the serial line (the board's stdio
 * UART: USART1 on the ST-LINK virtual COM port for the STM32F746G-DISCO), ztimer for
 * timeouts, the DWT cycle counter for costs where the core has one.
 */
#include <stdint.h>
#include <stdio.h>
#ifdef CPU_NATIVE
#include <time.h>
#endif

#include "clk.h"
#include "cpu.h"
#include "periph/pm.h"
#include "stdio_base.h"
#include "ztimer.h"

#include "platform.h"
#include "protocol.h"

#if defined(CPU_CORE_CORTEX_M7) || defined(CPU_CORE_CORTEX_M4F) || defined(CPU_CORE_CORTEX_M4) || \
    defined(CPU_CORE_CORTEX_M3) || defined(CPU_CORE_CORTEX_M33)
#define HAVE_DWT 1
#else
#define HAVE_DWT 0
#endif

void plat_init(void)
{
#if HAVE_DWT
    CoreDebug->DEMCR |= CoreDebug_DEMCR_TRCENA_Msk;
#if defined(CPU_CORE_CORTEX_M7)
    DWT->LAR = 0xC5ACCE55u; /* the M7's DWT is locked after reset */
#endif
    DWT->CYCCNT = 0;
    DWT->CTRL |= DWT_CTRL_CYCCNTENA_Msk;
#endif
}

/* Wait for input for about a millisecond. */
static void wait_a_little(void)
{
#ifdef CPU_NATIVE
    /* RIOT native's idle thread sleeps in pause() and loses a signal that arrives just before
     * it (the signal handler defers it and pause() then waits for the next one): a blocked
     * reader would sleep for ever with a whole request unread. The host's nanosleep() has no
     * such window (a signal before it is handled at once, one during it ends it), so on native
     * the application never blocks through RIOT while it waits for input. */
    nanosleep(&(const struct timespec){ .tv_sec = 0, .tv_nsec = 1000000 }, NULL);
#else
    ztimer_sleep(ZTIMER_MSEC, 1); /* the stdin buffer holds several ms of input */
#endif
}

int plat_getc(uint32_t timeout_ms)
{
    uint8_t c;
#ifdef CPU_NATIVE
    while (!timeout_ms && stdio_available() <= 0) {
        wait_a_little();
    }
#endif
    if (timeout_ms) {
        uint32_t start = ztimer_now(ZTIMER_MSEC);
        while (stdio_available() <= 0) {
            if (ztimer_now(ZTIMER_MSEC) - start >= timeout_ms) {
                return -1;
            }
            wait_a_little();
        }
    }
    while (stdio_read(&c, 1) != 1) {
    }
    return c;
}

void plat_write(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = stdio_write(p, len);
        if (n <= 0) {
            continue;
        }
        p += n;
        len -= (size_t)n;
    }
}

uint32_t plat_ticks(void)
{
#if HAVE_DWT
    return DWT->CYCCNT;
#else
    return ztimer_now(ZTIMER_USEC);
#endif
}

uint32_t plat_tick_hz(void)
{
#if HAVE_DWT
    return coreclk();
#else
    return 1000000u;
#endif
}

uint8_t plat_cost_unit(void)
{
    return HAVE_DWT ? NNC_COST_CYCLES : NNC_COST_TICKS;
}

const char *plat_board_name(void)
{
    return RIOT_BOARD;
}

uint32_t plat_stack_used(void)
{
    return 0; /* RIOT measures thread stacks itself (DEVELHELP, `ps` in the shell) */
}

#ifdef CPU_NATIVE
extern unsigned _native_retval; /* RIOT native's process exit status (cpu/native) */
#endif

void plat_exit(int code)
{
#ifdef CPU_NATIVE
    /* a Linux process, like the emulator: leave with the requested status */
    _native_retval = (unsigned)code;
    pm_off();
#else
    (void)code;
#endif
#ifdef MODULE_PERIPH_PM
    pm_reboot();
#endif
    for (;;) {
    }
}
