/* ap_err.h -- the single error contract of the apiprof core: codes and a thread-local message. */
#ifndef AP_ERR_H
#define AP_ERR_H

/* Every fallible core function returns 0 / -1 (or a pointer / NULL) and, on
 * failure, records an error code and a message in thread-local storage with
 * ap_err_set().  The record stays until the next ap_err_set() or ap_err_clear()
 * on the same thread: success does NOT clear it, so read it right after the
 * failing call.  Functions documented as "can't fail" never touch it. */

typedef enum {
    AP_OK = 0,     /* no error recorded */
    AP_ENOMEM,     /* an allocation failed */
    AP_EINVAL,     /* an argument is invalid */
    AP_ERANGE,     /* a value or buffer size is out of range */
    AP_ECORRUPT,   /* input data (file, buffer, shared memory) is malformed */
    AP_EIO,        /* an I/O call failed (message holds strerror) */
    AP_ENOTFOUND,  /* the thing looked up does not exist */
    AP_EFULL       /* a fixed-size structure has no room left */
} ap_errcode;

/* Size of the thread-local message buffer, NUL included; longer messages are
 * truncated. */
#define AP_ERR_MSG_MAX 256

#if defined(__GNUC__)
#define AP_PRINTF_LIKE(fmt, first) __attribute__((format(printf, fmt, first)))
#else
#define AP_PRINTF_LIKE(fmt, first)
#endif

/* Record code and a printf-formatted message for this thread.  fmt may be NULL
 * (the message becomes the code's name).  Always returns -1, so that callers
 * can write `return ap_err_set(AP_EINVAL, "...")`.  Can't fail. */
int ap_err_set(ap_errcode code, const char *fmt, ...) AP_PRINTF_LIKE(2, 3);

/* The code last recorded on this thread, AP_OK if none.  Can't fail. */
ap_errcode ap_err_code(void);

/* The message last recorded on this thread, "" if none.  The pointer refers
 * to thread-local storage and stays valid until the next ap_err_set() or
 * ap_err_clear() on this thread.  Never NULL.  Can't fail. */
const char *ap_err_msg(void);

/* Forget the recorded error of this thread (code AP_OK, message "").
 * Can't fail. */
void ap_err_clear(void);

/* The symbolic name of code ("OK", "ENOMEM", ...), a static string; "EUNKNOWN"
 * for values outside the enum.  Can't fail. */
const char *ap_err_name(ap_errcode code);

#endif /* AP_ERR_H */
