/* ap_err.c -- thread-local error code and message for the apiprof core. */
#include "ap_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Per thread, so no locking; zero-initialised means AP_OK and "". */
static _Thread_local ap_errcode err_code;
static _Thread_local char err_msg[AP_ERR_MSG_MAX];

static const char *const err_names[] = {
    [AP_OK] = "OK",
    [AP_ENOMEM] = "ENOMEM",
    [AP_EINVAL] = "EINVAL",
    [AP_ERANGE] = "ERANGE",
    [AP_ECORRUPT] = "ECORRUPT",
    [AP_EIO] = "EIO",
    [AP_ENOTFOUND] = "ENOTFOUND",
    [AP_EFULL] = "EFULL",
};

int ap_err_set(ap_errcode code, const char *fmt, ...) {
    err_code = code;
    if (fmt == NULL) {
        snprintf(err_msg, sizeof err_msg, "%s", ap_err_name(code));
        return -1;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return -1;
}

ap_errcode ap_err_code(void) {
    return err_code;
}

const char *ap_err_msg(void) {
    return err_msg;
}

void ap_err_clear(void) {
    err_code = AP_OK;
    err_msg[0] = '\0';
}

const char *ap_err_name(ap_errcode code) {
    if ((unsigned)code >= sizeof err_names / sizeof err_names[0])
        return "EUNKNOWN";
    return err_names[code];
}
