// Board support of the cat-iot mps2-an385 port (board.c).
#ifndef CAT_MPS2_BOARD_H
#define CAT_MPS2_BOARD_H

#include <stddef.h>

// GC heap: `heap=N` on the semihosting command line (bytes, or with a k/m suffix) sets it at
// boot, like the unix port's -X heapsize; without it the board has MPS2_HEAP_DEFAULT.
#define MPS2_HEAP_MAX (2 * 1024 * 1024)
#define MPS2_HEAP_MIN (4 * 1024)
#define MPS2_HEAP_DEFAULT (256 * 1024)
#define MPS2_STACK_LIMIT (32 * 1024)

size_t mps2_heap_size(void);

#endif
