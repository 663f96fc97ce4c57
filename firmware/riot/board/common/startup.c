/*
 * Cortex-M7 start-up for the bare-metal board layer: vector table, reset handler (FPU on
 * before any float code, .data copy, .bss clear, stack painting), fault handler.
 * Linker symbols come from common/sections.ld.
 */
#include <stdint.h>

#include "board.h"
#include "cm7_regs.h"

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[];
extern uint32_t _sstack[], _estack[];

int main(void);
void Reset_Handler(void);
void reset_c(void);
void Default_Handler(void);

#define STACK_PAINT 0xA5C3A5C3u
#define SCB_VTOR (*(volatile uint32_t *)CM7_SCB_VTOR_ADDR)
#define STR(x) STR_(x)
#define STR_(x) #x

typedef void (*vector_t)(void);
extern const vector_t vector_table[];

/* Naked: enables the FPU (CPACR CP10/CP11 full access) before any C code could touch it. */
__attribute__((naked, noreturn)) void Reset_Handler(void)
{
    __asm__ volatile(
        "ldr r0, =" STR(CM7_SCB_CPACR_ADDR) "\n"
        "ldr r1, [r0]\n"
        "orr r1, r1, #(0xF << " STR(CM7_SCB_CPACR_CP10_POS) ")\n"
        "str r1, [r0]\n"
        "dsb\n"
        "isb\n"
        "ldr r0, =_estack\n"
        "mov sp, r0\n"
        "b reset_c\n");
}

__attribute__((noreturn, used, optimize("no-tree-loop-distribute-patterns"))) void reset_c(void)
{
    uint32_t *src = _sidata, *dst = _sdata;
    while (dst < _edata) {
        *dst++ = *src++;
    }
    for (dst = _sbss; dst < _ebss; dst++) {
        *dst = 0;
    }
    /* paint the stack reserve below the current frame, for plat_stack_used() */
    uintptr_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (dst = _sstack; (uintptr_t)dst < sp - 64u; dst++) {
        *dst = STACK_PAINT;
    }
    SCB_VTOR = (uint32_t)(uintptr_t)vector_table; /* the F7 may boot through the ITCM alias */
    board_init();
    int rc = main();
    board_exit(rc);
    for (;;) {
    }
}

uint32_t board_stack_used(void)
{
    uint32_t *p = _sstack;
    while (p < _estack && *p == STACK_PAINT) {
        p++;
    }
    return (uint32_t)((uintptr_t)_estack - (uintptr_t)p);
}

void Default_Handler(void)
{
    board_fault("unexpected interrupt or fault");
}

void HardFault_Handler(void)
{
    board_fault("HardFault");
}

void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void DebugMon_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

/* 16 core exceptions plus the board's external interrupts (none used: all default). */
__attribute__((section(".isr_vector"), used)) const vector_t vector_table[16 + BOARD_NUM_IRQS] = {
    [0] = (vector_t)(uintptr_t)_estack,
    [1] = Reset_Handler,
    [2] = NMI_Handler,
    [3] = HardFault_Handler,
    [4] = MemManage_Handler,
    [5] = BusFault_Handler,
    [6] = UsageFault_Handler,
    [11] = SVC_Handler,
    [12] = DebugMon_Handler,
    [14] = PendSV_Handler,
    [15] = SysTick_Handler,
    [16 ... 16 + BOARD_NUM_IRQS - 1] = Default_Handler,
};
