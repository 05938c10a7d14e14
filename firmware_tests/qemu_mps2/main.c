/*
 * Main loop of the cat-iot mps2-an385 board port.
 *
 * Derived from MicroPython's ports/qemu/main.c (MIT License, Copyright (c) 2014-2024 Damien P.
 * George). Added, as board ports (stm32, rp2) do: the GC heap sized at boot, the frozen
 * _boot.py (mounts the filesystem) after every reset, and main.py when booting into the
 * friendly REPL (a soft reset from the raw REPL, as mpremote does, skips it).
 */

#include <stdlib.h>

#include "py/compile.h"
#include "py/runtime.h"
#include "py/stackctrl.h"
#include "py/gc.h"
#include "py/mperrno.h"
#include "shared/readline/readline.h"
#include "shared/runtime/gchelper.h"
#include "shared/runtime/pyexec.h"
#include "board.h"

// The largest heap `heap=N` may ask for; the rest of the 4 MiB SSRAM1 holds code and stack.
static uint32_t gc_heap[MPS2_HEAP_MAX / sizeof(uint32_t)];

int main(int argc, char **argv) {
    mp_stack_ctrl_init();
    mp_stack_set_limit(MPS2_STACK_LIMIT);
    size_t heap = mps2_heap_size();
    gc_init(gc_heap, (char *)gc_heap + heap);

    for (;;) {
        mp_init();
        readline_init0();

        int ret = pyexec_frozen_module("_boot.py", false);
        if (ret & PYEXEC_FORCED_EXIT) {
            goto soft_reset_exit;
        }
        if (pyexec_mode_kind == PYEXEC_MODE_FRIENDLY_REPL) {
            ret = pyexec_file_if_exists("main.py");
            if (ret & PYEXEC_FORCED_EXIT) {
                goto soft_reset_exit;
            }
        }

        for (;;) {
            if (pyexec_mode_kind == PYEXEC_MODE_RAW_REPL) {
                if (pyexec_raw_repl() != 0) {
                    break;
                }
            } else {
                if (pyexec_friendly_repl() != 0) {
                    break;
                }
            }
        }

    soft_reset_exit:
        mp_printf(&mp_plat_print, "MPY: soft reboot\n");

        gc_sweep_all();
        mp_deinit();
    }
}

void gc_collect(void) {
    gc_collect_start();
    gc_helper_collect_regs_and_stack();
    gc_collect_end();
}

void nlr_jump_fail(void *val) {
    mp_printf(&mp_plat_print, "uncaught NLR\n");
    exit(1);
}
