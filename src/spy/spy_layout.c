/* spy_layout.c -- the per-version layout table of apiprof-spy. */
#include "spy_layout.h"

#include <stddef.h>

static const spy_layout layouts[] = {
#include "spy_layout_table.h"
};

const spy_layout *spy_layout_get(unsigned minor) {
    for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++)
        if (layouts[i].minor == minor)
            return &layouts[i];
    return NULL;
}
