/* Board layer of the DIANA firmware under QEMU (see board.h). */
#include "board.h"

#include <stdarg.h>

#define UART_BASE 0x10000000u
#define UART_THR (*(volatile uint8_t*)(UART_BASE + 0u))
#define UART_LSR (*(volatile uint8_t*)(UART_BASE + 5u))
#define UART_LSR_THR_EMPTY 0x20u
#define TEST_DEVICE (*(volatile uint32_t*)0x00100000u)

void board_putc(char c)
{
    if (c == '\n') board_putc('\r');
    while ((UART_LSR & UART_LSR_THR_EMPTY) == 0) {
    }
    UART_THR = (uint8_t)c;
}

void board_puts(const char* s)
{
    while (*s) board_putc(*s++);
}

uint64_t board_instret(void)
{
    uint32_t hi, lo, hi2;
    do {
        __asm__ volatile("csrr %0, minstreth" : "=r"(hi));
        __asm__ volatile("csrr %0, minstret" : "=r"(lo));
        __asm__ volatile("csrr %0, minstreth" : "=r"(hi2));
    } while (hi != hi2);
    return ((uint64_t)hi << 32) | lo;
}

void board_exit(int code)
{
    /* SiFive test device: 0x5555 = pass, (code << 16) | 0x3333 = fail with a status */
    TEST_DEVICE = code == 0 ? 0x5555u : (((uint32_t)code & 0xffffu) << 16) | 0x3333u;
    for (;;) {
    }
}

/* Called from start.S on any trap: nothing here should trap. */
void board_trap(uint32_t mcause, uint32_t mepc, uint32_t mtval)
{
    board_printf("\nTRAP: mcause=%x mepc=%x mtval=%x\n", (unsigned)mcause, (unsigned)mepc,
                 (unsigned)mtval);
    board_exit(3);
}

static void put_padded(const char* s, int len, int width, int left)
{
    for (int i = len; !left && i < width; ++i) board_putc(' ');
    for (int i = 0; i < len; ++i) board_putc(s[i]);
    for (int i = len; left && i < width; ++i) board_putc(' ');
}

static int format_unsigned(char* buf, uint64_t v, unsigned base)
{
    char tmp[24];
    int n = 0, len = 0;
    do {
        const unsigned d = (unsigned)(v % base);
        tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v != 0);
    while (n > 0) buf[len++] = tmp[--n];
    return len;
}

void board_printf(const char* fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    for (; *fmt; ++fmt) {
        if (*fmt != '%') {
            board_putc(*fmt);
            continue;
        }
        ++fmt;
        int left = 0, width = 0, longs = 0;
        if (*fmt == '-') {
            left = 1;
            ++fmt;
        }
        while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') {
            ++longs;
            ++fmt;
        }
        char buf[24];
        int len = 0;
        switch (*fmt) {
        case 's': {
            const char* s = va_arg(ap, const char*);
            int n = 0;
            while (s[n]) ++n;
            put_padded(s, n, width, left);
            continue;
        }
        case 'c':
            buf[0] = (char)va_arg(ap, int);
            put_padded(buf, 1, width, left);
            continue;
        case 'd': {
            int64_t v = longs >= 2 ? va_arg(ap, long long) : longs ? va_arg(ap, long) : va_arg(ap, int);
            if (v < 0) {
                buf[len++] = '-';
                v = -v;
            }
            len += format_unsigned(buf + len, (uint64_t)v, 10);
            break;
        }
        case 'u':
        case 'x': {
            uint64_t v = longs >= 2 ? va_arg(ap, unsigned long long)
                         : longs ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
            len = format_unsigned(buf, v, *fmt == 'x' ? 16u : 10u);
            break;
        }
        case '%':
            buf[len++] = '%';
            break;
        default:
            buf[len++] = '?';
            break;
        }
        put_padded(buf, len, width, left);
    }
    va_end(ap);
}
