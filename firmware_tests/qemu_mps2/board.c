/*
 * Board support of the cat-iot mps2-an385 port: what MicroPython's stock qemu port lacks for
 * running the edge the way a board does.
 *
 * - Tick source: SysTick at 1 kHz from the 25 MHz system clock (QEMU's mps2 SYSCLK) drives
 *   mp_hal_ticks_ms/us/cpu and mp_hal_delay_ms/us, hence the `time` module. Idle waits
 *   sleep in WFI until the next interrupt.
 * - CMSDK APB UARTs (AN385: UART0..4 at 0x40004000, 0x40005000, 0x40006000, 0x40007000,
 *   0x40009000; receive interrupts 0, 2, 4, 18, 20): receive interrupts fill one ring buffer
 *   per UART. UART0 is the REPL (Ctrl-C raises KeyboardInterrupt in a running program, as on
 *   stm32), UART1..4 are machine.UART (mps2_uart.c). A full ring stops taking bytes, so the
 *   sender is held back instead of losing data.
 * - The GC heap size, read once at boot from the semihosting command line (`heap=N`).
 * - mps2.RAMDisk: a block device (the extended protocol littlefs uses) over the 4 MiB ZBT
 *   SSRAM2/3 bank at 0x20000000, less its top 256 KiB. It lives outside the GC heap, so files
 *   survive a soft reset; QEMU zeroes it at power-on, and _boot.py then formats it.
 * - A ROMFS partition in those top 256 KiB (vfs.rom_ioctl), mounted at /rom at every reset.
 *
 * The stock port's start-up code (ports/qemu/mcu/arm/startup.c) has a 16-entry vector table
 * whose SysTick entry is a fault handler; uart_init (its set-up hook, called before main) copies
 * it into a table in RAM with the SysTick and UART entries added and points VTOR at it, before
 * anything can interrupt.
 */

#include <string.h>

#include "py/runtime.h"
#include "py/mphal.h"
#include "py/ringbuf.h"
#include "py/stream.h"
#include "py/mperrno.h"
#include "py/objarray.h"
#include "extmod/vfs.h"
#include "board.h"

// ---------------------------------------------------------------- CMSIS device description
typedef enum IRQn {
    NonMaskableInt_IRQn = -14,
    HardFault_IRQn = -13,
    MemoryManagement_IRQn = -12,
    BusFault_IRQn = -11,
    UsageFault_IRQn = -10,
    SVCall_IRQn = -5,
    DebugMonitor_IRQn = -4,
    PendSV_IRQn = -2,
    SysTick_IRQn = -1,
} IRQn_Type;

#define __CM3_REV 0x0201
#define __MPU_PRESENT 1
#define __NVIC_PRIO_BITS 3
#define __Vendor_SysTickConfig 0
#include "core_cm3.h"

#define SYSCLK_HZ (25000000)
#define SYSTICK_RELOAD (SYSCLK_HZ / 1000)
#define NUM_IRQ (32)

// ---------------------------------------------------------------- UARTs
typedef struct {
    volatile uint32_t DATA;
    volatile uint32_t STATE;
    volatile uint32_t CTRL;
    volatile uint32_t INTSTATUS;
    volatile uint32_t BAUDDIV;
} cmsdk_uart_t;

#define UART_STATE_TXFULL (1 << 0)
#define UART_STATE_RXFULL (1 << 1)
#define UART_CTRL_TX_EN (1 << 0)
#define UART_CTRL_RX_EN (1 << 1)
#define UART_CTRL_RX_INT_EN (1 << 3)
#define UART_INT_RX (1 << 1)
#define UART_RX_RING (1024)

static cmsdk_uart_t *const uart_regs[MPS2_UART_COUNT] = {
    (cmsdk_uart_t *)0x40004000, (cmsdk_uart_t *)0x40005000, (cmsdk_uart_t *)0x40006000,
    (cmsdk_uart_t *)0x40007000, (cmsdk_uart_t *)0x40009000,
};
static const uint8_t uart_rx_irq[MPS2_UART_COUNT] = {0, 2, 4, 18, 20};
static uint8_t uart_rx_storage[MPS2_UART_COUNT][UART_RX_RING];
static ringbuf_t uart_rx[MPS2_UART_COUNT];

// Move received bytes into the ring; called from the interrupt or with interrupts masked.
static void uart_drain(int id) {
    cmsdk_uart_t *u = uart_regs[id];
    u->INTSTATUS = UART_INT_RX;
    while (u->STATE & UART_STATE_RXFULL) {
        if (ringbuf_free(&uart_rx[id]) == 0) {
            // Full: leave the byte in the UART (QEMU then holds back the sender) until a read.
            u->CTRL &= ~UART_CTRL_RX_INT_EN;
            return;
        }
        int c = u->DATA & 0xff;
        if (id == 0 && c == mp_interrupt_char) {
            mp_sched_keyboard_interrupt();
            continue;
        }
        ringbuf_put(&uart_rx[id], c);
    }
}

static void uart_irq_handler(void) {
    uint32_t irq = (SCB->ICSR & SCB_ICSR_VECTACTIVE_Msk) - 16;
    for (int id = 0; id < MPS2_UART_COUNT; ++id) {
        if (uart_rx_irq[id] == irq) {
            uart_drain(id);
            return;
        }
    }
}

void mps2_uart_init(int id, uint32_t baudrate) {
    cmsdk_uart_t *u = uart_regs[id];
    NVIC_DisableIRQ(uart_rx_irq[id]);
    uart_rx[id].buf = uart_rx_storage[id];
    uart_rx[id].size = UART_RX_RING;
    uart_rx[id].iget = uart_rx[id].iput = 0;
    uint32_t div = SYSCLK_HZ / (baudrate ? baudrate : 115200);
    u->BAUDDIV = div < 16 ? 16 : div; // the CMSDK UART needs BAUDDIV >= 16
    u->CTRL = UART_CTRL_TX_EN | UART_CTRL_RX_EN | UART_CTRL_RX_INT_EN;
    NVIC_EnableIRQ(uart_rx_irq[id]);
    uint32_t primask = __get_PRIMASK();
    __disable_irq();
    uart_drain(id);
    __set_PRIMASK(primask);
}

void mps2_uart_deinit(int id) {
    NVIC_DisableIRQ(uart_rx_irq[id]);
    uart_regs[id]->CTRL = 0;
}

size_t mps2_uart_rx_any(int id) {
    return ringbuf_avail(&uart_rx[id]);
}

int mps2_uart_rx_char(int id) {
    int c = ringbuf_get(&uart_rx[id]);
    cmsdk_uart_t *u = uart_regs[id];
    if ((u->CTRL & UART_CTRL_RX_EN) && !(u->CTRL & UART_CTRL_RX_INT_EN)) {
        // The ring was full: there is room again, take what waits in the UART.
        uint32_t primask = __get_PRIMASK();
        __disable_irq();
        u->CTRL |= UART_CTRL_RX_INT_EN;
        uart_drain(id);
        __set_PRIMASK(primask);
    }
    return c;
}

void mps2_uart_tx_strn(int id, const char *buf, size_t len) {
    cmsdk_uart_t *u = uart_regs[id];
    for (size_t i = 0; i < len; ++i) {
        while (u->STATE & UART_STATE_TXFULL) {
        }
        u->DATA = (uint8_t)buf[i];
    }
}

// ---------------------------------------------------------------- ticks
static volatile uint32_t systick_ms;

static void systick_handler(void) {
    systick_ms++;
}

mp_uint_t mp_hal_ticks_ms(void) {
    return systick_ms;
}

// Milliseconds and SysTick cycles into the current one, read consistently.
static uint32_t ticks_cycles(uint32_t *ms_out) {
    uint32_t primask = __get_PRIMASK();
    __disable_irq();
    uint32_t ms = systick_ms;
    uint32_t val = SysTick->VAL;
    if (SCB->ICSR & SCB_ICSR_PENDSTSET_Msk) {
        // the counter wrapped and its interrupt has not run yet
        val = SysTick->VAL;
        ms++;
    }
    __set_PRIMASK(primask);
    *ms_out = ms;
    return SYSTICK_RELOAD - 1 - val;
}

mp_uint_t mp_hal_ticks_us(void) {
    uint32_t ms;
    uint32_t cycles = ticks_cycles(&ms);
    return ms * 1000 + cycles / (SYSCLK_HZ / 1000000);
}

mp_uint_t mp_hal_ticks_cpu(void) {
    uint32_t ms;
    uint32_t cycles = ticks_cycles(&ms);
    return ms * SYSTICK_RELOAD + cycles;
}

// No real-time clock: nanoseconds since boot (littlefs asks for it when timestamps are on).
uint64_t mp_hal_time_ns(void) {
    uint32_t ms;
    uint32_t cycles = ticks_cycles(&ms);
    return (uint64_t)ms * 1000000 + (uint64_t)cycles * (1000000000 / SYSCLK_HZ);
}

// At least `ms` milliseconds, measured in microseconds (counting whole ticks could return up to
// a tick early), sleeping in WFI between interrupts.
void mp_hal_delay_ms(mp_uint_t ms) {
    while (ms > 0) {
        uint32_t chunk = ms > 1000000 ? 1000000 : ms; // keep chunk * 1000 below 2^32
        uint32_t start = mp_hal_ticks_us();
        uint32_t us = chunk * 1000;
        uint32_t waited;
        while ((waited = mp_hal_ticks_us() - start) < us) {
            mp_event_wait_ms((us - waited) / 1000);
        }
        ms -= chunk;
    }
}

void mp_hal_delay_us(mp_uint_t us) {
    uint32_t start = mp_hal_ticks_us();
    while (mp_hal_ticks_us() - start < us) {
    }
}

// ---------------------------------------------------------------- stdio on UART0
uintptr_t mp_hal_stdio_poll(uintptr_t poll_flags) {
    uintptr_t ret = 0;
    if ((poll_flags & MP_STREAM_POLL_RD) && mps2_uart_rx_any(0)) {
        ret |= MP_STREAM_POLL_RD;
    }
    if (poll_flags & MP_STREAM_POLL_WR) {
        ret |= MP_STREAM_POLL_WR;
    }
    return ret;
}

int mp_hal_stdin_rx_chr(void) {
    for (;;) {
        int c = mps2_uart_rx_char(0);
        if (c >= 0) {
            return c;
        }
        mp_event_wait_indefinite();
    }
}

mp_uint_t mp_hal_stdout_tx_strn(const char *str, size_t len) {
    mps2_uart_tx_strn(0, str, len);
    return len;
}

// ---------------------------------------------------------------- start-up
extern const uint32_t isr_vector[16];
extern void Default_Handler(void);

static uint32_t ram_vectors[16 + NUM_IRQ] __attribute__((aligned(256)));

// Called by ports/qemu/mcu/arm/startup.c before main (the stock port's UART set-up hook).
void uart_init(void) {
    for (int i = 0; i < 16 + NUM_IRQ; ++i) {
        ram_vectors[i] = i < 16 ? isr_vector[i] : (uint32_t)&Default_Handler;
    }
    ram_vectors[16 + SysTick_IRQn] = (uint32_t)&systick_handler;
    for (int id = 0; id < MPS2_UART_COUNT; ++id) {
        ram_vectors[16 + uart_rx_irq[id]] = (uint32_t)&uart_irq_handler;
    }
    SCB->VTOR = (uint32_t)ram_vectors;
    __DSB();
    SysTick_Config(SYSTICK_RELOAD);
    mps2_uart_init(0, 115200);
}

// ---------------------------------------------------------------- heap size
#define SYS_GET_CMDLINE (0x15)

static size_t heap_from_cmdline(void);

static uint32_t semihosting_call(uint32_t num, void *arg) {
    register uint32_t num_reg __asm__ ("r0") = num;
    register void *args_reg __asm__ ("r1") = arg;
    __asm__ __volatile__ ("bkpt 0xAB\n" : "+r" (num_reg) : "r" (args_reg) : "memory");
    return num_reg;
}

static size_t heap_bytes;

size_t mps2_heap_size(void) {
    if (heap_bytes == 0) {
        heap_bytes = heap_from_cmdline();
    }
    return heap_bytes;
}

static size_t heap_from_cmdline(void) {
    static char cmdline[256];
    struct {
        char *buf;
        uint32_t len;
    } args = {cmdline, sizeof(cmdline) - 1};
    if (semihosting_call(SYS_GET_CMDLINE, &args) != 0) {
        return MPS2_HEAP_DEFAULT;
    }
    cmdline[args.len < sizeof(cmdline) ? args.len : sizeof(cmdline) - 1] = 0;
    const char *p = strstr(cmdline, "heap=");
    if (p == NULL) {
        return MPS2_HEAP_DEFAULT;
    }
    p += 5;
    size_t n = 0;
    while (*p >= '0' && *p <= '9') {
        n = n * 10 + (size_t)(*p++ - '0');
    }
    if (*p == 'k' || *p == 'K') {
        n *= 1024;
    } else if (*p == 'm' || *p == 'M') {
        n *= 1024 * 1024;
    }
    if (n < MPS2_HEAP_MIN || n > MPS2_HEAP_MAX) {
        mp_printf(&mp_plat_print, "heap=%u out of range [%u, %u]: using %u\n", (unsigned)n,
            (unsigned)MPS2_HEAP_MIN, (unsigned)MPS2_HEAP_MAX, (unsigned)MPS2_HEAP_DEFAULT);
        return MPS2_HEAP_DEFAULT;
    }
    return n & ~(size_t)3;
}

// ---------------------------------------------------------------- RAM disk
#define RAMDISK_BASE ((uint8_t *)0x20000000)
#define RAMDISK_SIZE (4 * 1024 * 1024 - ROMFS_SIZE)  // SSRAM2/3 (4 MiB) less the ROMFS partition
#define RAMDISK_BLOCK (512)
#define ROMFS_SIZE (256 * 1024)

typedef struct {
    mp_obj_base_t base;
} mps2_ramdisk_obj_t;

static const mp_obj_type_t mps2_ramdisk_type;
static const mps2_ramdisk_obj_t mps2_ramdisk_obj = {{&mps2_ramdisk_type}};

static mp_obj_t mps2_ramdisk_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 0, 0, false);
    return MP_OBJ_FROM_PTR(&mps2_ramdisk_obj);
}

// The RAM address of (block, offset) for len bytes, or NULL when outside the disk.
static uint8_t *ramdisk_addr(size_t n_args, const mp_obj_t *args, size_t len) {
    mp_int_t block = mp_obj_get_int(args[1]);
    mp_int_t off = n_args == 4 ? mp_obj_get_int(args[3]) : 0;
    if (block < 0 || off < 0) {
        return NULL;
    }
    size_t start = (size_t)block * RAMDISK_BLOCK + (size_t)off;
    if (start > RAMDISK_SIZE || len > RAMDISK_SIZE - start) {
        return NULL;
    }
    return RAMDISK_BASE + start;
}

// readblocks(block, buf[, offset]) / writeblocks(block, buf[, offset]): copy between buf and
// the disk; a negative errno for a range outside it (the protocol littlefs uses).
static mp_obj_t ramdisk_transfer(size_t n_args, const mp_obj_t *args, bool write) {
    mp_buffer_info_t bufinfo;
    mp_get_buffer_raise(args[2], &bufinfo, write ? MP_BUFFER_READ : MP_BUFFER_WRITE);
    uint8_t *disk = ramdisk_addr(n_args, args, bufinfo.len);
    if (disk == NULL) {
        return MP_OBJ_NEW_SMALL_INT(-MP_EIO);
    }
    if (write) {
        memcpy(disk, bufinfo.buf, bufinfo.len);
    } else {
        memcpy(bufinfo.buf, disk, bufinfo.len);
    }
    return MP_OBJ_NEW_SMALL_INT(0);
}

static mp_obj_t mps2_ramdisk_readblocks(size_t n_args, const mp_obj_t *args) {
    return ramdisk_transfer(n_args, args, false);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(mps2_ramdisk_readblocks_obj, 3, 4, mps2_ramdisk_readblocks);

static mp_obj_t mps2_ramdisk_writeblocks(size_t n_args, const mp_obj_t *args) {
    return ramdisk_transfer(n_args, args, true);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(mps2_ramdisk_writeblocks_obj, 3, 4, mps2_ramdisk_writeblocks);

static mp_obj_t mps2_ramdisk_ioctl(mp_obj_t self_in, mp_obj_t op_in, mp_obj_t arg_in) {
    switch (mp_obj_get_int(op_in)) {
        case MP_BLOCKDEV_IOCTL_INIT:
        case MP_BLOCKDEV_IOCTL_DEINIT:
        case MP_BLOCKDEV_IOCTL_SYNC:
        case MP_BLOCKDEV_IOCTL_BLOCK_ERASE: // RAM: nothing to erase
            return MP_OBJ_NEW_SMALL_INT(0);
        case MP_BLOCKDEV_IOCTL_BLOCK_COUNT:
            return MP_OBJ_NEW_SMALL_INT(RAMDISK_SIZE / RAMDISK_BLOCK);
        case MP_BLOCKDEV_IOCTL_BLOCK_SIZE:
            return MP_OBJ_NEW_SMALL_INT(RAMDISK_BLOCK);
        default:
            return mp_const_none;
    }
}
static MP_DEFINE_CONST_FUN_OBJ_3(mps2_ramdisk_ioctl_obj, mps2_ramdisk_ioctl);

static const mp_rom_map_elem_t mps2_ramdisk_locals_dict_table[] = {
    { MP_ROM_QSTR(MP_QSTR_readblocks), MP_ROM_PTR(&mps2_ramdisk_readblocks_obj) },
    { MP_ROM_QSTR(MP_QSTR_writeblocks), MP_ROM_PTR(&mps2_ramdisk_writeblocks_obj) },
    { MP_ROM_QSTR(MP_QSTR_ioctl), MP_ROM_PTR(&mps2_ramdisk_ioctl_obj) },
};
static MP_DEFINE_CONST_DICT(mps2_ramdisk_locals_dict, mps2_ramdisk_locals_dict_table);

static MP_DEFINE_CONST_OBJ_TYPE(
    mps2_ramdisk_type,
    MP_QSTR_RAMDisk,
    MP_TYPE_FLAG_NONE,
    make_new, mps2_ramdisk_make_new,
    locals_dict, &mps2_ramdisk_locals_dict
    );

// ---------------------------------------------------------------- ROMFS partition
// The top 256 KiB of SSRAM2/3, above the RAM disk: the board's ROMFS partition (MicroPython
// 1.25's read-only filesystem, whose .mpy files run in place). mp_init mounts it at /rom and
// puts /rom and /rom/lib on sys.path when it holds a valid image (extmod/vfs.c,
// mp_vfs_mount_romfs_protected); `mpremote romfs deploy` writes it through vfs.rom_ioctl, the
// protocol of extmod/vfs.h (MP_VFS_ROM_IOCTL_*), as on the ports with a flash partition
// (ports/alif/vfs_rom_ioctl.c). It is RAM: blank after power-on, as the RAM disk is; a soft
// reset keeps it.
#define ROMFS_BASE (RAMDISK_BASE + RAMDISK_SIZE)

static MP_DEFINE_MEMORYVIEW_OBJ(mps2_romfs_obj, 'B', 0, ROMFS_SIZE, ROMFS_BASE);

mp_obj_t mp_vfs_rom_ioctl(size_t n_args, const mp_obj_t *args) {
    mp_int_t cmd = mp_obj_get_int(args[0]);
    if (cmd == MP_VFS_ROM_IOCTL_GET_NUMBER_OF_SEGMENTS) {
        return MP_OBJ_NEW_SMALL_INT(1);
    }
    if (n_args < 2 || mp_obj_get_int(args[1]) != 0) {
        return MP_OBJ_NEW_SMALL_INT(-MP_EINVAL);
    }
    switch (cmd) {
        case MP_VFS_ROM_IOCTL_GET_SEGMENT:
            return MP_OBJ_FROM_PTR(&mps2_romfs_obj);
        case MP_VFS_ROM_IOCTL_WRITE_PREPARE: {
            // rom_ioctl(3, 0, len): erase the first len bytes (erased flash reads 0xff)
            mp_int_t len = n_args == 3 ? mp_obj_get_int(args[2]) : -1;
            if (len < 0 || len > ROMFS_SIZE) {
                return MP_OBJ_NEW_SMALL_INT(-MP_EINVAL);
            }
            memset(ROMFS_BASE, 0xff, (size_t)len);
            return MP_OBJ_NEW_SMALL_INT(4); // the smallest write, in bytes
        }
        case MP_VFS_ROM_IOCTL_WRITE: {
            // rom_ioctl(4, 0, offset, buf)
            if (n_args < 4) {
                return MP_OBJ_NEW_SMALL_INT(-MP_EINVAL);
            }
            mp_int_t off = mp_obj_get_int(args[2]);
            mp_buffer_info_t bufinfo;
            mp_get_buffer_raise(args[3], &bufinfo, MP_BUFFER_READ);
            if (off < 0 || (size_t)off > ROMFS_SIZE || bufinfo.len > ROMFS_SIZE - (size_t)off) {
                return MP_OBJ_NEW_SMALL_INT(-MP_EINVAL);
            }
            memcpy(ROMFS_BASE + off, bufinfo.buf, bufinfo.len);
            return MP_OBJ_NEW_SMALL_INT(0);
        }
        case MP_VFS_ROM_IOCTL_WRITE_COMPLETE:
            return MP_OBJ_NEW_SMALL_INT(0);
        default:
            return MP_OBJ_NEW_SMALL_INT(-MP_EINVAL);
    }
}

// ---------------------------------------------------------------- the mps2 module
static mp_obj_t mps2_heap_size_obj_fn(void) {
    return mp_obj_new_int_from_uint(mps2_heap_size());
}
static MP_DEFINE_CONST_FUN_OBJ_0(mps2_heap_size_obj, mps2_heap_size_obj_fn);

static const mp_rom_map_elem_t mps2_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_mps2) },
    { MP_ROM_QSTR(MP_QSTR_RAMDisk), MP_ROM_PTR(&mps2_ramdisk_type) },
    { MP_ROM_QSTR(MP_QSTR_heap_size), MP_ROM_PTR(&mps2_heap_size_obj) },
};
static MP_DEFINE_CONST_DICT(mps2_module_globals, mps2_module_globals_table);

const mp_obj_module_t mps2_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&mps2_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR_mps2, mps2_module);
