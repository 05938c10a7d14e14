/*
 * machine.UART of the cat-iot mps2-an385 port: UART1..4 of the AN385 image (UART0 is the REPL).
 * Included by extmod/machine_uart.c (MICROPY_PY_MACHINE_UART_INCLUDEFILE); the driver with its
 * receive interrupt and ring buffer is in board.c.
 *
 *     uart = machine.UART(1, 115200)
 *     uart.init(115200, timeout=0)   # read()/readinto() return at once with what has arrived
 *
 * The CMSDK UART is 8N1 only and its pins are fixed, so bits/parity/stop other than 8/None/1
 * and tx=/rx= are refused. Under QEMU the baud rate sets the divider but not the speed.
 */

#include "py/mphal.h"
#include "py/mperrno.h"

#define MICROPY_PY_MACHINE_UART_CLASS_CONSTANTS

struct _machine_uart_obj_t {
    mp_obj_base_t base;
    uint8_t id;
    bool active;
    uint32_t baudrate;
    uint32_t timeout;      // ms to wait for the first byte of a read
    uint32_t timeout_char; // ms to wait for each further byte
};

static machine_uart_obj_t machine_uart_obj[MPS2_UART_COUNT];

static void mp_machine_uart_print(const mp_print_t *print, mp_obj_t self_in, mp_print_kind_t kind) {
    machine_uart_obj_t *self = MP_OBJ_TO_PTR(self_in);
    mp_printf(print, "UART(%u, baudrate=%u, bits=8, parity=None, stop=1, timeout=%u, timeout_char=%u)",
        self->id, (unsigned)self->baudrate, (unsigned)self->timeout, (unsigned)self->timeout_char);
}

static void mp_machine_uart_init_helper(machine_uart_obj_t *self, size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
    enum { ARG_baudrate, ARG_bits, ARG_parity, ARG_stop, ARG_tx, ARG_rx, ARG_timeout, ARG_timeout_char };
    static const mp_arg_t allowed_args[] = {
        { MP_QSTR_baudrate, MP_ARG_INT, {.u_int = -1} },
        { MP_QSTR_bits, MP_ARG_INT, {.u_int = 8} },
        { MP_QSTR_parity, MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_stop, MP_ARG_INT, {.u_int = 1} },
        { MP_QSTR_tx, MP_ARG_KW_ONLY | MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_rx, MP_ARG_KW_ONLY | MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_timeout, MP_ARG_KW_ONLY | MP_ARG_INT, {.u_int = -1} },
        { MP_QSTR_timeout_char, MP_ARG_KW_ONLY | MP_ARG_INT, {.u_int = -1} },
    };
    mp_arg_val_t args[MP_ARRAY_SIZE(allowed_args)];
    mp_arg_parse_all(n_args, pos_args, kw_args, MP_ARRAY_SIZE(allowed_args), allowed_args, args);

    if (args[ARG_bits].u_int != 8 || args[ARG_parity].u_obj != mp_const_none || args[ARG_stop].u_int != 1) {
        mp_raise_ValueError(MP_ERROR_TEXT("UART is 8N1 only"));
    }
    if (args[ARG_tx].u_obj != mp_const_none || args[ARG_rx].u_obj != mp_const_none) {
        mp_raise_ValueError(MP_ERROR_TEXT("UART pins are fixed"));
    }
    if (args[ARG_baudrate].u_int > 0) {
        self->baudrate = args[ARG_baudrate].u_int;
    }
    if (args[ARG_timeout].u_int >= 0) {
        self->timeout = args[ARG_timeout].u_int;
    }
    if (args[ARG_timeout_char].u_int >= 0) {
        self->timeout_char = args[ARG_timeout_char].u_int;
    }
    mps2_uart_init(self->id, self->baudrate);
    self->active = true;
}

static mp_obj_t mp_machine_uart_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 1, MP_OBJ_FUN_ARGS_MAX, true);
    mp_int_t id = mp_obj_get_int(args[0]);
    if (id < 1 || id >= MPS2_UART_COUNT) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("UART(%d) doesn't exist (1..4; UART0 is the REPL)"), (int)id);
    }
    machine_uart_obj_t *self = &machine_uart_obj[id];
    if (self->base.type == NULL) {
        self->base.type = &machine_uart_type;
        self->id = id;
        self->baudrate = 115200;
        self->timeout = 0;
        self->timeout_char = 0;
    }
    if (n_args > 1 || n_kw > 0 || !self->active) {
        mp_map_t kw_args;
        mp_map_init_fixed_table(&kw_args, n_kw, args + n_args);
        mp_machine_uart_init_helper(self, n_args - 1, args + 1, &kw_args);
    }
    return MP_OBJ_FROM_PTR(self);
}

static void mp_machine_uart_deinit(machine_uart_obj_t *self) {
    mps2_uart_deinit(self->id);
    self->active = false;
}

static mp_int_t mp_machine_uart_any(machine_uart_obj_t *self) {
    return mps2_uart_rx_any(self->id);
}

static bool mp_machine_uart_txdone(machine_uart_obj_t *self) {
    return true; // bytes go to QEMU's character device as they are written
}

static mp_uint_t mp_machine_uart_read(mp_obj_t self_in, void *buf_in, mp_uint_t size, int *errcode) {
    machine_uart_obj_t *self = MP_OBJ_TO_PTR(self_in);
    uint8_t *buf = buf_in;
    if (size == 0) {
        return 0;
    }
    mp_uint_t n = 0;
    uint32_t timeout = self->timeout;
    uint32_t start = mp_hal_ticks_ms();
    for (;;) {
        int c = mps2_uart_rx_char(self->id);
        if (c >= 0) {
            buf[n++] = c;
            if (n == size) {
                return n;
            }
            timeout = self->timeout_char;
            start = mp_hal_ticks_ms();
            continue;
        }
        if (mp_hal_ticks_ms() - start >= timeout) {
            if (n == 0) {
                *errcode = MP_EAGAIN;
                return MP_STREAM_ERROR;
            }
            return n;
        }
        mp_event_wait_ms(1);
    }
}

static mp_uint_t mp_machine_uart_write(mp_obj_t self_in, const void *buf_in, mp_uint_t size, int *errcode) {
    machine_uart_obj_t *self = MP_OBJ_TO_PTR(self_in);
    mps2_uart_tx_strn(self->id, buf_in, size);
    return size;
}

static mp_uint_t mp_machine_uart_ioctl(mp_obj_t self_in, mp_uint_t request, uintptr_t arg, int *errcode) {
    machine_uart_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (request == MP_STREAM_POLL) {
        mp_uint_t ret = 0;
        if ((arg & MP_STREAM_POLL_RD) && mps2_uart_rx_any(self->id)) {
            ret |= MP_STREAM_POLL_RD;
        }
        if (arg & MP_STREAM_POLL_WR) {
            ret |= MP_STREAM_POLL_WR;
        }
        return ret;
    }
    if (request == MP_STREAM_FLUSH) {
        return 0;
    }
    *errcode = MP_EINVAL;
    return MP_STREAM_ERROR;
}
