/*
 * STM32F746 peripheral registers the bare-metal board layer uses (reset and clock control,
 * power control, flash interface, GPIOA/GPIOB, USART1): base addresses, register offsets and bit
 * positions, as plain numbers. Same values as ST's stm32f746xx.h (cmsis_device_f7);
 * tests/test_riot.py checks every one of them against it with _Static_assert.
 */
#ifndef NNC_F746_REGS_H
#define NNC_F746_REGS_H

/* memory map (linker.ld holds the same numbers; the test checks them too) */
#define F746_FLASH_BASE 0x08000000u
#define F746_SRAM_BASE 0x20000000u

#define F746_RCC_BASE 0x40023800u
#define F746_RCC_CR_OFF 0x00u
#define F746_RCC_PLLCFGR_OFF 0x04u
#define F746_RCC_CFGR_OFF 0x08u
#define F746_RCC_AHB1ENR_OFF 0x30u
#define F746_RCC_APB1ENR_OFF 0x40u
#define F746_RCC_APB2ENR_OFF 0x44u
#define F746_RCC_CR_PLLON_POS 24
#define F746_RCC_CR_PLLRDY_POS 25
#define F746_RCC_PLLCFGR_PLLM_POS 0
#define F746_RCC_PLLCFGR_PLLN_POS 6
#define F746_RCC_PLLCFGR_PLLP_POS 16
#define F746_RCC_PLLCFGR_PLLSRC_POS 22
#define F746_RCC_PLLCFGR_PLLQ_POS 24
#define F746_RCC_PLLCFGR_RESERVED 0xF0000000u   /* bits kept when the PLL is configured */
#define F746_RCC_CFGR_SW_POS 0
#define F746_RCC_CFGR_SW_PLL 2u
#define F746_RCC_CFGR_SWS_POS 2
#define F746_RCC_CFGR_PPRE1_POS 10
#define F746_RCC_CFGR_PPRE1_DIV4 5u
#define F746_RCC_CFGR_PPRE2_POS 13
#define F746_RCC_CFGR_PPRE2_DIV2 4u
#define F746_RCC_CFGR_CLOCK_FIELDS 0xFCF3u        /* SW, HPRE, PPRE1, PPRE2: set as a whole */
#define F746_RCC_AHB1ENR_GPIOAEN_POS 0
#define F746_RCC_AHB1ENR_GPIOBEN_POS 1
#define F746_RCC_APB1ENR_PWREN_POS 28
#define F746_RCC_APB2ENR_USART1EN_POS 4

#define F746_PWR_BASE 0x40007000u
#define F746_PWR_CR1_OFF 0x00u
#define F746_PWR_CSR1_OFF 0x04u
#define F746_PWR_CR1_VOS_POS 14
#define F746_PWR_CR1_ODEN_POS 16
#define F746_PWR_CR1_ODSWEN_POS 17
#define F746_PWR_CSR1_ODRDY_POS 16
#define F746_PWR_CSR1_ODSWRDY_POS 17

#define F746_FLASH_R_BASE 0x40023C00u
#define F746_FLASH_ACR_OFF 0x00u
#define F746_FLASH_ACR_LATENCY_MASK 0xFu
#define F746_FLASH_ACR_PRFTEN_POS 8
#define F746_FLASH_ACR_ARTEN_POS 9

#define F746_GPIOA_BASE 0x40020000u
#define F746_GPIOB_BASE 0x40020400u
#define F746_GPIO_MODER_OFF 0x00u
#define F746_GPIO_OSPEEDR_OFF 0x08u
#define F746_GPIO_PUPDR_OFF 0x0Cu
#define F746_GPIO_AFRL_OFF 0x20u
#define F746_GPIO_AFRH_OFF 0x24u
#define F746_GPIO_AF7_USART1 7u

#define F746_USART1_BASE 0x40011000u
#define F746_USART_CR1_OFF 0x00u
#define F746_USART_BRR_OFF 0x0Cu
#define F746_USART_ISR_OFF 0x1Cu
#define F746_USART_ICR_OFF 0x20u
#define F746_USART_RDR_OFF 0x24u
#define F746_USART_TDR_OFF 0x28u
#define F746_USART_CR1_UE_POS 0
#define F746_USART_CR1_RE_POS 2
#define F746_USART_CR1_TE_POS 3
#define F746_USART_ISR_ORE_POS 3
#define F746_USART_ISR_RXNE_POS 5
#define F746_USART_ISR_TC_POS 6
#define F746_USART_ISR_TXE_POS 7
#define F746_USART_ICR_ORECF_POS 3

#endif
