/*
 * STM32F746G-DISCO: clocks (216 MHz from the HSI through the PLL, voltage scale 1 with
 * over-drive, 7 flash wait states, ART and I-cache on), USART1 on the ST-LINK virtual COM
 * port (PA9 TX, PB7 RX, AF7, 115200 8N1), DWT cycle counter as the cost counter.
 */
#include <stdint.h>

#include "board.h"
#include "platform.h"
#include "protocol.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

#define RCC_BASE 0x40023800u
#define RCC_CR REG(RCC_BASE + 0x00u)
#define RCC_PLLCFGR REG(RCC_BASE + 0x04u)
#define RCC_CFGR REG(RCC_BASE + 0x08u)
#define RCC_AHB1ENR REG(RCC_BASE + 0x30u)
#define RCC_APB1ENR REG(RCC_BASE + 0x40u)
#define RCC_APB2ENR REG(RCC_BASE + 0x44u)

#define PWR_BASE 0x40007000u
#define PWR_CR1 REG(PWR_BASE + 0x00u)
#define PWR_CSR1 REG(PWR_BASE + 0x04u)

#define FLASH_ACR REG(0x40023C00u)

#define GPIOA_BASE 0x40020000u
#define GPIOB_BASE 0x40020400u
#define GPIO_MODER(b) REG((b) + 0x00u)
#define GPIO_OSPEEDR(b) REG((b) + 0x08u)
#define GPIO_PUPDR(b) REG((b) + 0x0Cu)
#define GPIO_AFRL(b) REG((b) + 0x20u)
#define GPIO_AFRH(b) REG((b) + 0x24u)

#define USART1_BASE 0x40011000u
#define USART_CR1 REG(USART1_BASE + 0x00u)
#define USART_BRR REG(USART1_BASE + 0x0Cu)
#define USART_ISR REG(USART1_BASE + 0x1Cu)
#define USART_ICR REG(USART1_BASE + 0x20u)
#define USART_RDR REG(USART1_BASE + 0x24u)
#define USART_TDR REG(USART1_BASE + 0x28u)
#define USART_ISR_ORE (1u << 3)
#define USART_ISR_RXNE (1u << 5)
#define USART_ISR_TXE (1u << 7)
#define USART_ISR_TC (1u << 6)

#define SCB_CCR REG(0xE000ED14u)
#define SCB_ICIALLU REG(0xE000EF50u)
#define SCB_AIRCR REG(0xE000ED0Cu)
#define DEMCR REG(0xE000EDFCu)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#define DWT_LAR REG(0xE0001FB0u)

#define CORE_HZ 216000000u
#define APB2_HZ (CORE_HZ / 2u)
#define BAUD 115200u

static void clock_init(void)
{
    RCC_APB1ENR |= 1u << 28; /* PWREN */
    (void)RCC_APB1ENR;
    PWR_CR1 |= 3u << 14; /* VOS = scale 1 */

    /* PLL from HSI (16 MHz): /M=8 -> 2 MHz, *N=216 -> 432 MHz VCO, /P=2 -> 216 MHz, /Q=9 */
    RCC_PLLCFGR = (RCC_PLLCFGR & 0xF0000000u) | (8u << 0) | (216u << 6) | (0u << 16) | (0u << 22) | (9u << 24);
    RCC_CR |= 1u << 24; /* PLLON */
    while (!(RCC_CR & (1u << 25))) { /* PLLRDY */
    }

    PWR_CR1 |= 1u << 16; /* ODEN: over-drive, needed above 180 MHz */
    while (!(PWR_CSR1 & (1u << 16))) {
    }
    PWR_CR1 |= 1u << 17; /* ODSWEN */
    while (!(PWR_CSR1 & (1u << 17))) {
    }

    FLASH_ACR = 7u | (1u << 8) | (1u << 9); /* 7 wait states, prefetch, ART */
    while ((FLASH_ACR & 0xFu) != 7u) {
    }
    /* AHB /1, APB1 /4 (54 MHz), APB2 /2 (108 MHz), SYSCLK = PLL */
    RCC_CFGR = (RCC_CFGR & ~0xFCF3u) | (5u << 10) | (4u << 13) | 2u;
    while (((RCC_CFGR >> 2) & 3u) != 2u) {
    }
}

static void icache_enable(void)
{
    __asm__ volatile("dsb\n isb" ::: "memory");
    SCB_ICIALLU = 0;
    __asm__ volatile("dsb\n isb" ::: "memory");
    SCB_CCR |= 1u << 17;
    __asm__ volatile("dsb\n isb" ::: "memory");
}

static void usart1_init(void)
{
    RCC_AHB1ENR |= (1u << 0) | (1u << 1); /* GPIOA, GPIOB */
    RCC_APB2ENR |= 1u << 4;               /* USART1 */
    (void)RCC_APB2ENR;
    /* PA9: AF7 (USART1_TX) */
    GPIO_MODER(GPIOA_BASE) = (GPIO_MODER(GPIOA_BASE) & ~(3u << 18)) | (2u << 18);
    GPIO_OSPEEDR(GPIOA_BASE) |= 2u << 18;
    GPIO_AFRH(GPIOA_BASE) = (GPIO_AFRH(GPIOA_BASE) & ~(0xFu << 4)) | (7u << 4);
    /* PB7: AF7 (USART1_RX), pull-up */
    GPIO_MODER(GPIOB_BASE) = (GPIO_MODER(GPIOB_BASE) & ~(3u << 14)) | (2u << 14);
    GPIO_PUPDR(GPIOB_BASE) = (GPIO_PUPDR(GPIOB_BASE) & ~(3u << 14)) | (1u << 14);
    GPIO_AFRL(GPIOB_BASE) = (GPIO_AFRL(GPIOB_BASE) & ~(0xFu << 28)) | (7u << 28);

    USART_CR1 = 0;
    USART_BRR = (APB2_HZ + BAUD / 2u) / BAUD; /* oversampling by 16 */
    USART_CR1 = (1u << 3) | (1u << 2) | (1u << 0); /* TE, RE, UE */
}

static void dwt_init(void)
{
    DEMCR |= 1u << 24; /* TRCENA */
    DWT_LAR = 0xC5ACCE55u;
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u; /* CYCCNTENA */
}

void board_init(void)
{
    clock_init();
    icache_enable();
    usart1_init();
    dwt_init();
}

void plat_init(void)
{
}

static void uart_putc(uint8_t c)
{
    while (!(USART_ISR & USART_ISR_TXE)) {
    }
    USART_TDR = c;
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
    return DWT_CYCCNT;
}

uint32_t plat_tick_hz(void)
{
    return CORE_HZ;
}

uint8_t plat_cost_unit(void)
{
    return NNC_COST_CYCLES;
}

const char *plat_board_name(void)
{
    return "stm32f746g-disco";
}

uint32_t plat_stack_used(void)
{
    return board_stack_used();
}

int plat_getc(uint32_t timeout_ms)
{
    uint32_t start = plat_ticks();
    uint32_t limit = timeout_ms * (CORE_HZ / 1000u); /* < 19.8 s: CYCCNT wraps */
    for (;;) {
        uint32_t isr = USART_ISR;
        if (isr & USART_ISR_ORE) {
            USART_ICR = USART_ISR_ORE; /* ORECF: keep receiving after an overrun */
        }
        if (isr & USART_ISR_RXNE) {
            return (int)(USART_RDR & 0xFFu);
        }
        if (timeout_ms && plat_ticks() - start >= limit) {
            return -1;
        }
    }
}

/* No host to report to on the board: wait for the last byte to leave, then reset. */
void board_exit(int code)
{
    (void)code;
    while (!(USART_ISR & USART_ISR_TC)) {
    }
    SCB_AIRCR = (0x5FAu << 16) | (1u << 2); /* SYSRESETREQ */
    __asm__ volatile("dsb" ::: "memory");
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
    for (;;) {
    }
}
