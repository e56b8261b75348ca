/* fuzz_report.c -- libFuzzer target: any bytes through the native reader, then every report writer (build and run with `make fuzz`). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ap_err.h"
#include "ap_prof.h"
#include "ap_report.h"

static const char *const formats[] = {"html", "svg", "dot", "speedscope", "pprof", "collapsed",
                                      "callgrind", "chrome", "json", "pstats"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static FILE *sink;
    if (sink == NULL && (sink = fopen("/dev/null", "w")) == NULL)
        abort();
    ap_prof *p = ap_prof_read_mem(data, size, NULL);
    if (p == NULL) {
        if (ap_err_code() != AP_ECORRUPT && ap_err_code() != AP_ENOMEM)
            abort();   /* the reader's contract: corrupt input is ECORRUPT */
        return 0;
    }
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        if (ap_report_write(p, formats[i], NULL, sink) != 0 && ap_err_code() != AP_EINVAL &&
            ap_err_code() != AP_ENOTFOUND && ap_err_code() != AP_ENOMEM)
            abort();
    }
    ap_prof_free(p);
    return 0;
}
