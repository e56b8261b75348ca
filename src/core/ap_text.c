/* ap_text.c -- the function table as aligned text, pstats-style: calls, tottime, cumtime, await, sorted by cumulative time. */
#include <string.h>

#include "ap_err.h"
#include "ap_report.h"

/* Rows printed at most. */
#define TEXT_ROWS 40

int ap_text_write(const ap_report_ctx *rc, ap_sbuf *out) {
    ap_prof *m = ap_report_project(rc->prof, ap_report_vm_field(rc->metric));
    if (m == NULL)
        return -1;
    ap_functab ft;
    if (ap_functab_build(m, NULL, NULL, &ft) != 0) {
        ap_prof_free(m);
        return -1;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < ft.nrows; i++)
        total += ft.rows[i].self_ns;
    ap_sbuf_printf(out, "%s\n%zu functions, total %s ", rc->title, ft.nrows,
                   ap_report_vm_name(rc->metric));
    ap_report_fmt_value(out, rc->metric, total);
    ap_sbuf_printf(out, "\n\n%12s %12s %12s %12s  %s\n", "calls", "self", "total", "await",
                   "function");
    ap_sbuf cell = {0};
    for (size_t i = 0; i < ft.nrows && i < TEXT_ROWS; i++) {
        const ap_func_row *r = &ft.rows[i];
        char calls[48];
        if (r->prim_calls != r->calls)
            snprintf(calls, sizeof calls, "%llu/%llu", (unsigned long long)r->calls,
                     (unsigned long long)r->prim_calls);
        else
            snprintf(calls, sizeof calls, "%llu", (unsigned long long)r->calls);
        ap_sbuf_printf(out, "%12s", calls);
        uint64_t vals[3] = {r->self_ns, r->total_ns, r->await_ns};
        for (int k = 0; k < 3; k++) {
            cell.len = 0;
            ap_report_fmt_value(&cell, k == 2 ? AP_VM_AWAIT : rc->metric, vals[k]);
            ap_sbuf_putc(&cell, '\0');
            ap_sbuf_printf(out, " %12s", cell.failed ? "?" : cell.data);
        }
        ap_sbuf_puts(out, "  ");
        ap_report_frame_label_long(m, r->frame, out);
        ap_sbuf_putc(out, '\n');
    }
    if (ft.nrows > TEXT_ROWS)
        ap_sbuf_printf(out, "... %zu more (--format json has them all)\n", ft.nrows - TEXT_ROWS);
    ap_sbuf_free(&cell);
    ap_functab_free(&ft);
    ap_prof_free(m);
    return out->failed ? -1 : 0;
}
