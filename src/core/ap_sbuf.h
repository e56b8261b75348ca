/* ap_sbuf.h -- a growable byte buffer with the text escapes every report writer needs (JSON, XML, varints). */
#ifndef AP_SBUF_H
#define AP_SBUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ap_err.h"

/* Writers append freely and check once at the end: the first failed
 * allocation sets `failed` (with AP_ENOMEM recorded) and later appends do
 * nothing.  A zeroed struct is an empty buffer; release with ap_sbuf_free(). */
typedef struct ap_sbuf {
    char *data;
    size_t len, cap;
    int failed;
} ap_sbuf;

/* Append n bytes at s.  Can't fail (a failure is recorded in sb->failed). */
void ap_sbuf_put(ap_sbuf *sb, const void *s, size_t n);

/* Append a NUL-terminated string / one byte / printf output.  Can't fail
 * (as above). */
void ap_sbuf_puts(ap_sbuf *sb, const char *s);
void ap_sbuf_putc(ap_sbuf *sb, char c);
void ap_sbuf_printf(ap_sbuf *sb, const char *fmt, ...) AP_PRINTF_LIKE(2, 3);

/* Append an unsigned decimal number (faster than printf).  Can't fail. */
void ap_sbuf_u64(ap_sbuf *sb, uint64_t v);

/* Append s as a JSON string literal, quotes included: '"' '\\' and control
 * characters escaped, and '<' as \u003c so that the text can sit inside an
 * HTML <script> element.  Invalid UTF-8 bytes become U+FFFD.  Can't fail. */
void ap_sbuf_json_str(ap_sbuf *sb, const char *s);

/* Append s with & < > " ' escaped for XML / HTML text and attributes;
 * control characters other than tab become spaces.  Can't fail. */
void ap_sbuf_xml_str(ap_sbuf *sb, const char *s);

/* The length (1-4) of the valid UTF-8 character at s, or 0 when the bytes at s are
 * not one (stray continuation, overlong form, surrogate, beyond U+10FFFF; a NUL
 * inside a sequence ends it).  Can't fail. */
size_t ap_sbuf_utf8_len(const unsigned char *s);

/* Append v as a protobuf base-128 varint.  Can't fail. */
void ap_sbuf_varint(ap_sbuf *sb, uint64_t v);

/* The one varint codec of the core (native profile, histogram and route
 * encodings, pprof): little-endian base-128, at most 10 bytes.
 * ap_varint_size: the bytes v takes.  ap_varint_put: write v at p (room for
 * ap_varint_size(v) bytes), return the end.  Neither can fail.
 * ap_varint_get: read one from [*p, end) into *out and advance *p; 0, or -1
 * (nothing recorded) on truncation or a value beyond 64 bits. */
size_t ap_varint_size(uint64_t v);
uint8_t *ap_varint_put(uint8_t *p, uint64_t v);
int ap_varint_get(const uint8_t **p, const uint8_t *end, uint64_t *out);

/* Write the whole buffer to out.  Returns 0; -1 with AP_ENOMEM if an append
 * had failed, or AP_EIO (strerror) if writing failed. */
int ap_sbuf_write(const ap_sbuf *sb, FILE *out);

/* Release the buffer; sb is left empty.  Can't fail. */
void ap_sbuf_free(ap_sbuf *sb);

#endif /* AP_SBUF_H */
