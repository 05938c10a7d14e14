// HAL of the cat-iot mps2-an385 board port: the tick and delay functions py/mphal.h declares
// are defined in board.c (SysTick), stdio goes through the UART0 ring buffer there.

#include <stddef.h>
#include <stdint.h>
#include "shared/runtime/interrupt_char.h"

// CMSDK APB UARTs of the AN385 FPGA image (QEMU hw/arm/mps2.c): UART0 is the REPL.
#define MPS2_UART_COUNT (5)

void mps2_uart_init(int id, uint32_t baudrate);
void mps2_uart_deinit(int id);
size_t mps2_uart_rx_any(int id);
int mps2_uart_rx_char(int id);
void mps2_uart_tx_strn(int id, const char *buf, size_t len);

// Idle waits (time.sleep, the REPL waiting for input) sleep until the next interrupt: the
// 1 kHz SysTick or a received byte.
#define MICROPY_INTERNAL_WFE(TIMEOUT_MS) __asm volatile ("wfi" ::: "memory")
