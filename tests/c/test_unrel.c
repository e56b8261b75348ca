/* test_unrel.c -- unreleased objects in the model: records summed by key, saved in the native file, copied by merges, exported as JSON by type with top sites. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ap_err.h"
#include "ap_prof.h"
#include "ap_sbuf.h"
#include "ap_test.h"
#include "ap_unrel.h"

static ap_str_id str(ap_prof *p, const char *s) {
    return ap_prof_intern(p, s, strlen(s));
}

/* Orders made at two lines (one in a route), and one small type. */
static ap_prof *unreleased(void) {
    ap_prof *p = ap_prof_new();
    if (p == NULL)
        return NULL;
    ap_frame f = {str(p, "make"), str(p, "make"), str(p, "/app/<x>.py"), 10, 12, AP_FRAME_PYTHON};
    ap_frame_id l12 = ap_prof_frame_intern(p, &f);
    f.lineno = 14;
    ap_frame_id l14 = ap_prof_frame_intern(p, &f);
    ap_str_id order = str(p, "app.Order"), i = str(p, "int"), route = str(p, "POST /o");
    ap_unrel recs[] = {{order, l12, 0, 600, 33600}, {order, l14, route, 400, 22400},
                       {order, l12, 0, 100, 5600},   /* summed into the first */
                       {i, l14, route, 3, 96}};
    for (size_t k = 0; k < 4; k++)
        if (ap_prof_unrel_add(p, &recs[k]) != 0) {
            ap_prof_free(p);
            return NULL;
        }
    return p;
}

AP_TEST(unrel_model_file_and_json) {
    ap_prof *p = unreleased();
    if (!AP_CHECK(p != NULL))
        return;
    AP_CHECK_EQ_U64(ap_prof_nunrel(p), 3);
    AP_CHECK_EQ_U64(ap_prof_unrel_at(p, 0)->count, 700);
    AP_CHECK_EQ_U64(ap_prof_unrel_at(p, 0)->bytes, 39200);
    char path[] = "/tmp/ap_test_unrel_XXXXXX";
    int fd = mkstemp(path);
    if (!AP_CHECK(fd >= 0))
        return;
    close(fd);
    AP_CHECK(ap_prof_write(p, path) == 0);
    ap_prof *q = ap_prof_read(path, NULL);
    unlink(path);
    ap_prof *m = ap_prof_merge(p, NULL, NULL);
    ap_sbuf a = {0}, b = {0}, c = {0};
    if (AP_CHECK(q != NULL && m != NULL)) {
        AP_CHECK(ap_unrel_json(p, &a) == 0 && ap_unrel_json(q, &b) == 0 &&
                 ap_unrel_json(m, &c) == 0);
        ap_sbuf_putc(&a, '\0');
        ap_sbuf_putc(&b, '\0');
        ap_sbuf_putc(&c, '\0');
        AP_CHECK(!a.failed && !b.failed && !c.failed && strcmp(a.data, b.data) == 0 &&
                 strcmp(a.data, c.data) == 0);
        /* by type, most bytes first; sites by bytes; names escaped */
        const char *want =
            "[\n  {\"type\": \"app.Order\", \"count\": 1100, \"bytes\": 61600, \"sites\": ["
            "{\"function\": \"make\", \"file\": \"/app/\\u003cx>.py\", \"line\": 12, \"route\": null, "
            "\"count\": 700, \"bytes\": 39200}, {\"function\": \"make\", \"file\": "
            "\"/app/\\u003cx>.py\", \"line\": 14, \"route\": \"POST /o\", \"count\": 400, \"bytes\": "
            "22400}]},\n  {\"type\": \"int\", \"count\": 3, \"bytes\": 96, \"sites\": [";
        AP_CHECK_MSG(strncmp(a.data, want, strlen(want)) == 0, "got %s", a.data);
    }
    /* a damaged payload is refused wherever it is cut */
    ap_sbuf enc = {0};
    ap_unrel_encode(p, &enc);
    for (size_t cut = 0; cut < enc.len && !enc.failed; cut++) {
        ap_prof *r = unreleased();
        if (r == NULL)
            break;
        AP_CHECK_MSG(ap_unrel_decode(r, (const uint8_t *)enc.data,
                                     (const uint8_t *)enc.data + cut) == -1,
                     "a payload cut at %zu bytes was accepted", cut);
        ap_prof_free(r);
    }
    ap_sbuf_free(&enc);
    ap_sbuf_free(&a);
    ap_sbuf_free(&b);
    ap_sbuf_free(&c);
    ap_prof_free(q);
    ap_prof_free(m);
    ap_prof_free(p);
}

/* What requests made, start-up apart: only the records with a route. */
AP_TEST(unrel_json_of_requests) {
    ap_prof *p = unreleased();
    if (!AP_CHECK(p != NULL))
        return;
    ap_sbuf a = {0};
    AP_CHECK(ap_unrel_json_of(p, 1, &a) == 0);
    ap_sbuf_putc(&a, '\0');
    if (AP_CHECK(!a.failed)) {
        /* Orders: 400 made at line 14 in POST /o (the 700 at line 12 outside requests are
         * left out), then the 3 ints. */
        AP_CHECK(strstr(a.data, "\"type\": \"app.Order\", \"count\": 400, \"bytes\": 22400") !=
                 NULL);
        AP_CHECK(strstr(a.data, "\"line\": 12") == NULL);
        AP_CHECK(strstr(a.data, "\"type\": \"int\", \"count\": 3") != NULL);
        AP_CHECK(strstr(a.data, "\"app.Order\"") < strstr(a.data, "\"int\""));
    }
    ap_sbuf_free(&a);
    ap_prof_free(p);
}
