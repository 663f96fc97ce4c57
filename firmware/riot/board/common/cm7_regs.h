/*
 * Cortex-M7 core registers the bare-metal start-up and the STM32F746 board layer use (System
 * Control Block, debug, DWT), as plain addresses and bit positions. Same values as ARM's CMSIS
 * core_cm7.h; tests/test_riot.py checks them against it with _Static_assert.
 */
#ifndef NNC_CM7_REGS_H
#define NNC_CM7_REGS_H

#define CM7_SCB_VTOR_ADDR 0xE000ED08u
#define CM7_SCB_AIRCR_ADDR 0xE000ED0Cu
#define CM7_SCB_CCR_ADDR 0xE000ED14u
#define CM7_SCB_CPACR_ADDR 0xE000ED88 /* no suffix: also used in assembly */
#define CM7_SCB_ICIALLU_ADDR 0xE000EF50u
#define CM7_SCB_AIRCR_VECTKEY 0x5FAu
#define CM7_SCB_AIRCR_VECTKEY_POS 16
#define CM7_SCB_AIRCR_SYSRESETREQ_POS 2
#define CM7_SCB_CCR_IC_POS 17      /* instruction cache enable */
#define CM7_SCB_CPACR_CP10_POS 20  /* CP10 and CP11 (the FPU): 2 bits each */

#define CM7_DEMCR_ADDR 0xE000EDFCu
#define CM7_DEMCR_TRCENA_POS 24
#define CM7_DWT_CTRL_ADDR 0xE0001000u
#define CM7_DWT_CYCCNT_ADDR 0xE0001004u
#define CM7_DWT_LAR_ADDR 0xE0001FB0u
#define CM7_DWT_LAR_UNLOCK 0xC5ACCE55u
#define CM7_DWT_CTRL_CYCCNTENA_POS 0

#endif
