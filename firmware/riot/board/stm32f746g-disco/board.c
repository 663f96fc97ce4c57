/*
 * STM32F746G-DISCO: clocks (216 MHz from the HSI through the PLL, voltage scale 1 with
 * over-drive, 7 flash wait states, ART and I-cache on), USART1 on the ST-LINK virtual COM
 * port (PA9 TX, PB7 RX, AF7, 115200 8N1), DWT cycle counter as the cost counter.
 */
#include <stdint.h>

#include "board.h"
#include "platform.h"
#include "protocol.h"

#include "cm7_regs.h"
#include "f746_regs.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define BIT(pos) (1u << (pos))

#define RCC_CR REG(F746_RCC_BASE + F746_RCC_CR_OFF)
#define RCC_PLLCFGR REG(F746_RCC_BASE + F746_RCC_PLLCFGR_OFF)
#define RCC_CFGR REG(F746_RCC_BASE + F746_RCC_CFGR_OFF)
#define RCC_AHB1ENR REG(F746_RCC_BASE + F746_RCC_AHB1ENR_OFF)
#define RCC_APB1ENR REG(F746_RCC_BASE + F746_RCC_APB1ENR_OFF)
#define RCC_APB2ENR REG(F746_RCC_BASE + F746_RCC_APB2ENR_OFF)

#define PWR_CR1 REG(F746_PWR_BASE + F746_PWR_CR1_OFF)
#define PWR_CSR1 REG(F746_PWR_BASE + F746_PWR_CSR1_OFF)

#define FLASH_ACR REG(F746_FLASH_R_BASE + F746_FLASH_ACR_OFF)

#define GPIO_MODER(b) REG((b) + F746_GPIO_MODER_OFF)
#define GPIO_OSPEEDR(b) REG((b) + F746_GPIO_OSPEEDR_OFF)
#define GPIO_PUPDR(b) REG((b) + F746_GPIO_PUPDR_OFF)
#define GPIO_AFRL(b) REG((b) + F746_GPIO_AFRL_OFF)
#define GPIO_AFRH(b) REG((b) + F746_GPIO_AFRH_OFF)

#define USART_CR1 REG(F746_USART1_BASE + F746_USART_CR1_OFF)
#define USART_BRR REG(F746_USART1_BASE + F746_USART_BRR_OFF)
#define USART_ISR REG(F746_USART1_BASE + F746_USART_ISR_OFF)
#define USART_ICR REG(F746_USART1_BASE + F746_USART_ICR_OFF)
#define USART_RDR REG(F746_USART1_BASE + F746_USART_RDR_OFF)
#define USART_TDR REG(F746_USART1_BASE + F746_USART_TDR_OFF)
#define USART_ISR_ORE BIT(F746_USART_ISR_ORE_POS)
#define USART_ISR_RXNE BIT(F746_USART_ISR_RXNE_POS)
#define USART_ISR_TXE BIT(F746_USART_ISR_TXE_POS)
#define USART_ISR_TC BIT(F746_USART_ISR_TC_POS)

#define SCB_CCR REG(CM7_SCB_CCR_ADDR)
#define SCB_ICIALLU REG(CM7_SCB_ICIALLU_ADDR)
#define SCB_AIRCR REG(CM7_SCB_AIRCR_ADDR)
#define DEMCR REG(CM7_DEMCR_ADDR)
#define DWT_CTRL REG(CM7_DWT_CTRL_ADDR)
#define DWT_CYCCNT REG(CM7_DWT_CYCCNT_ADDR)
#define DWT_LAR REG(CM7_DWT_LAR_ADDR)

#define CORE_HZ 216000000u
#define APB2_HZ (CORE_HZ / 2u)
#define BAUD 115200u

static void clock_init(void)
{
    RCC_APB1ENR |= BIT(F746_RCC_APB1ENR_PWREN_POS);
    (void)RCC_APB1ENR;
    PWR_CR1 |= 3u << F746_PWR_CR1_VOS_POS; /* VOS = scale 1 */

    /* PLL from HSI (16 MHz): /M=8 -> 2 MHz, *N=216 -> 432 MHz VCO, /P=2 -> 216 MHz, /Q=9 */
    RCC_PLLCFGR = (RCC_PLLCFGR & F746_RCC_PLLCFGR_RESERVED) | (8u << F746_RCC_PLLCFGR_PLLM_POS) |
                  (216u << F746_RCC_PLLCFGR_PLLN_POS) | (0u << F746_RCC_PLLCFGR_PLLP_POS) |
                  (0u << F746_RCC_PLLCFGR_PLLSRC_POS) | (9u << F746_RCC_PLLCFGR_PLLQ_POS);
    RCC_CR |= BIT(F746_RCC_CR_PLLON_POS);
    while (!(RCC_CR & BIT(F746_RCC_CR_PLLRDY_POS))) {
    }

    PWR_CR1 |= BIT(F746_PWR_CR1_ODEN_POS); /* over-drive, needed above 180 MHz */
    while (!(PWR_CSR1 & BIT(F746_PWR_CSR1_ODRDY_POS))) {
    }
    PWR_CR1 |= BIT(F746_PWR_CR1_ODSWEN_POS);
    while (!(PWR_CSR1 & BIT(F746_PWR_CSR1_ODSWRDY_POS))) {
    }

    FLASH_ACR = 7u | BIT(F746_FLASH_ACR_PRFTEN_POS) | BIT(F746_FLASH_ACR_ARTEN_POS); /* 7 wait states */
    while ((FLASH_ACR & F746_FLASH_ACR_LATENCY_MASK) != 7u) {
    }
    /* AHB /1, APB1 /4 (54 MHz), APB2 /2 (108 MHz), SYSCLK = PLL */
    RCC_CFGR = (RCC_CFGR & ~F746_RCC_CFGR_CLOCK_FIELDS) | (F746_RCC_CFGR_PPRE1_DIV4 << F746_RCC_CFGR_PPRE1_POS) |
               (F746_RCC_CFGR_PPRE2_DIV2 << F746_RCC_CFGR_PPRE2_POS) | (F746_RCC_CFGR_SW_PLL << F746_RCC_CFGR_SW_POS);
    while (((RCC_CFGR >> F746_RCC_CFGR_SWS_POS) & 3u) != F746_RCC_CFGR_SW_PLL) {
    }
}

static void icache_enable(void)
{
    __asm__ volatile("dsb\n isb" ::: "memory");
    SCB_ICIALLU = 0;
    __asm__ volatile("dsb\n isb" ::: "memory");
    SCB_CCR |= BIT(CM7_SCB_CCR_IC_POS);
    __asm__ volatile("dsb\n isb" ::: "memory");
}

static void usart1_init(void)
{
    RCC_AHB1ENR |= BIT(F746_RCC_AHB1ENR_GPIOAEN_POS) | BIT(F746_RCC_AHB1ENR_GPIOBEN_POS);
    RCC_APB2ENR |= BIT(F746_RCC_APB2ENR_USART1EN_POS);
    (void)RCC_APB2ENR;
    /* PA9: AF7 (USART1_TX) */
    GPIO_MODER(F746_GPIOA_BASE) = (GPIO_MODER(F746_GPIOA_BASE) & ~(3u << 18)) | (2u << 18);
    GPIO_OSPEEDR(F746_GPIOA_BASE) |= 2u << 18;
    GPIO_AFRH(F746_GPIOA_BASE) = (GPIO_AFRH(F746_GPIOA_BASE) & ~(0xFu << 4)) | (F746_GPIO_AF7_USART1 << 4);
    /* PB7: AF7 (USART1_RX), pull-up */
    GPIO_MODER(F746_GPIOB_BASE) = (GPIO_MODER(F746_GPIOB_BASE) & ~(3u << 14)) | (2u << 14);
    GPIO_PUPDR(F746_GPIOB_BASE) = (GPIO_PUPDR(F746_GPIOB_BASE) & ~(3u << 14)) | (1u << 14);
    GPIO_AFRL(F746_GPIOB_BASE) = (GPIO_AFRL(F746_GPIOB_BASE) & ~(0xFu << 28)) | (F746_GPIO_AF7_USART1 << 28);

    USART_CR1 = 0;
    USART_BRR = (APB2_HZ + BAUD / 2u) / BAUD; /* oversampling by 16 */
    USART_CR1 = BIT(F746_USART_CR1_TE_POS) | BIT(F746_USART_CR1_RE_POS) | BIT(F746_USART_CR1_UE_POS);
}

static void dwt_init(void)
{
    DEMCR |= BIT(CM7_DEMCR_TRCENA_POS);
    DWT_LAR = CM7_DWT_LAR_UNLOCK; /* the M7's DWT is locked after reset */
    DWT_CYCCNT = 0;
    DWT_CTRL |= BIT(CM7_DWT_CTRL_CYCCNTENA_POS);
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
            USART_ICR = BIT(F746_USART_ICR_ORECF_POS); /* keep receiving after an overrun */
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
    SCB_AIRCR = (CM7_SCB_AIRCR_VECTKEY << CM7_SCB_AIRCR_VECTKEY_POS) | BIT(CM7_SCB_AIRCR_SYSRESETREQ_POS);
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
