/* fuzz_spy.c -- libFuzzer target: any bytes as a code object's location table through apiprof-spy's line lookup, at every code unit (build and run with `make fuzz`). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spy_py.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The first 4 bytes are the first line; the rest is the table, copied to a block
     * of its own size so that ASan sees a read past its end. */
    if (size < 4)
        return 0;
    uint32_t first;
    memcpy(&first, data, 4);
    first &= 0xffffff;
    size -= 4;
    uint8_t *table = malloc(size ? size : 1);
    if (table == NULL)
        abort();
    memcpy(table, data + 4, size);
    /* A table of n bytes covers at most 8 units per byte. */
    for (int64_t off = -2; off <= (int64_t)size * 16 + 2; off++) {
        int line = spy_line_of(table, size, first, off);
        if (off < 0 ? line != (int)first : line == 0 || line < -1)
            abort();
    }
    free(table);
    return 0;
}
