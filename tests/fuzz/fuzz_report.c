/* fuzz_report.c -- libFuzzer target: any bytes through the native reader and every report writer, the route statistics decoder and the JSON/XML escapers (build and run with `make fuzz`). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_prof.h"
#include "ap_report.h"
#include "ap_routes.h"
#include "ap_sbuf.h"

static const char *const formats[] = {"html", "svg", "dot", "speedscope", "pprof", "collapsed",
                                      "callgrind", "chrome", "json", "pstats"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static FILE *sink;
    if (sink == NULL && (sink = fopen("/dev/null", "w")) == NULL)
        abort();
    /* The statistics reader: corrupt input is ECORRUPT and changes nothing. */
    ap_routes *t = ap_routes_new(64);
    if (t == NULL)
        abort();
    if (ap_routes_merge_encoded(t, data, size) != 0 &&
        ((ap_err_code() != AP_ECORRUPT && ap_err_code() != AP_ENOMEM) ||
         (ap_err_code() == AP_ECORRUPT && ap_routes_size(t) != 0)))
        abort();
    ap_routes_free(t);
    /* The escapers on the bytes as a string: no raw '<' or control byte in the JSON
     * literal, none of < > " ' in the XML text. */
    char *str = malloc(size + 1);
    if (str == NULL)
        abort();
    memcpy(str, data, size);
    str[size] = 0;
    ap_sbuf j = {0}, x = {0};
    ap_sbuf_json_str(&j, str);
    ap_sbuf_xml_str(&x, str);
    for (size_t i = 0; i < j.len; i++)
        if ((unsigned char)j.data[i] < 0x20 || j.data[i] == '<')
            abort();
    for (size_t i = 0; i < x.len; i++)
        if (strchr("<>\"'", x.data[i]) != NULL && x.data[i] != 0)
            abort();
    ap_sbuf_free(&j);
    ap_sbuf_free(&x);
    free(str);
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
