// MicroPython configuration of the cat-iot mps2-an385 board port (Cortex-M3 under QEMU).
//
// Starts from MicroPython's ports/qemu settings for this machine (same ROM level, float, long
// ints, emitters) and adds what a board that runs the edge needs: `time` (SysTick ticks),
// machine.UART (CMSDK UART1..4), a littlefs filesystem (MICROPY_VFS_LFS2, set by the
// Makefile) on a RAM disk, and a ROMFS partition (vfs.rom_ioctl). board.c and mps2_uart.c implement them.

#include <stdint.h>

#define MICROPY_CONFIG_ROM_LEVEL    (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)

#define MICROPY_EMIT_THUMB          (1)
#define MICROPY_EMIT_INLINE_THUMB   (1)
#define MICROPY_MAKE_POINTER_CALLABLE(p) ((void *)((mp_uint_t)(p) | 1))

#define MICROPY_MALLOC_USES_ALLOCATED_SIZE (1)
#define MICROPY_PERSISTENT_CODE_LOAD (1)
#define MICROPY_MEM_STATS           (1)
#define MICROPY_READER_VFS          (1)
#define MICROPY_ENABLE_GC           (1)
#define MICROPY_ENABLE_EMERGENCY_EXCEPTION_BUF (1)
#define MICROPY_LONGINT_IMPL        (MICROPY_LONGINT_IMPL_MPZ)
#define MICROPY_FLOAT_IMPL          (MICROPY_FLOAT_IMPL_FLOAT)
#define MICROPY_WARNINGS            (1)
#define MICROPY_PY_SYS_PLATFORM     "qemu"
#define MICROPY_PY_SYS_STDIO_BUFFER (0)
#define MICROPY_PY_SELECT           (0)
#define MICROPY_PY_ASYNCIO          (0)

// time: ticks_ms/us/cpu, sleep, sleep_ms/us from SysTick (no RTC, so no time()/localtime())
#define MICROPY_PY_TIME             (1)
#define MICROPY_PY_TIME_GMTIME_LOCALTIME_MKTIME (0)
#define MICROPY_PY_TIME_TIME_TIME_NS (0)

#define MICROPY_PY_MACHINE          (1)
#define MICROPY_PY_MACHINE_INCLUDEFILE "ports/qemu/modmachine.c"
#define MICROPY_PY_MACHINE_RESET    (1)
#define MICROPY_PY_MACHINE_PIN_BASE (1)
#define MICROPY_PY_MACHINE_UART     (1)
#define MICROPY_PY_MACHINE_UART_INCLUDEFILE "mps2_uart.c"

#define MICROPY_VFS                 (1)
#define MICROPY_VFS_ROM             (1)
#define MICROPY_VFS_ROM_IOCTL       (1)  // a ROMFS partition (board.c)

// Ctrl-C reaches a running program: the UART0 receive interrupt schedules KeyboardInterrupt.
#define MICROPY_KBD_EXCEPTION       (1)

#define MP_SSIZE_MAX (0x7fffffff)

#define UINT_FMT "%lu"
#define INT_FMT "%ld"

typedef int32_t mp_int_t; // must be pointer size
typedef uint32_t mp_uint_t; // must be pointer size
typedef long mp_off_t;

// We need to provide a declaration/definition of alloca()
#include <alloca.h>

// We need an implementation of the log2 function which is not a macro.
#define MP_NEED_LOG2 (1)

#define MP_STATE_PORT MP_STATE_VM

// The board's ring buffers and RAM disk are static (board.c); nothing for the GC to scan.
