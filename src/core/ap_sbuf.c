/* ap_sbuf.c -- a growable byte buffer with the text escapes every report writer needs (JSON, XML, varints). */
#include "ap_sbuf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static int sbuf_reserve(ap_sbuf *sb, size_t extra) {
    if (sb->failed)
        return -1;
    if (sb->len + extra <= sb->cap)
        return 0;
    size_t n = sb->cap ? sb->cap : 4096;
    while (n < sb->len + extra) {
        if (n > SIZE_MAX / 2) {
            sb->failed = 1;
            return ap_err_set(AP_ENOMEM, "report: output too large");
        }
        n *= 2;
    }
    char *d = realloc(sb->data, n);
    if (d == NULL) {
        sb->failed = 1;
        return ap_err_set(AP_ENOMEM, "report: out of memory (%zu bytes)", n);
    }
    sb->data = d;
    sb->cap = n;
    return 0;
}

void ap_sbuf_put(ap_sbuf *sb, const void *s, size_t n) {
    if (n == 0 || sbuf_reserve(sb, n) != 0)
        return;
    memcpy(sb->data + sb->len, s, n);
    sb->len += n;
}

void ap_sbuf_puts(ap_sbuf *sb, const char *s) {
    ap_sbuf_put(sb, s, strlen(s));
}

void ap_sbuf_putc(ap_sbuf *sb, char c) {
    if (sbuf_reserve(sb, 1) == 0)
        sb->data[sb->len++] = c;
}

void ap_sbuf_printf(ap_sbuf *sb, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sbuf_reserve(sb, (size_t)n + 1) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

void ap_sbuf_u64(ap_sbuf *sb, uint64_t v) {
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    if (sbuf_reserve(sb, n) != 0)
        return;
    while (n > 0)
        sb->data[sb->len++] = tmp[--n];
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if invalid. */
size_t ap_sbuf_utf8_len(const unsigned char *s) {
    unsigned char c = s[0];
    size_t n;
    uint32_t min;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0) {
        n = 2;
        min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3;
        min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    uint32_t cp = c & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

void ap_sbuf_json_str(ap_sbuf *sb, const char *s) {
    static const char hex[] = "0123456789abcdef";
    ap_sbuf_putc(sb, '"');
    const unsigned char *c = (const unsigned char *)s;
    while (*c) {
        const unsigned char *run = c;
        while (*c >= 0x20 && *c < 0x80 && *c != '"' && *c != '\\' && *c != '<')
            c++;
        ap_sbuf_put(sb, run, (size_t)(c - run));
        if (*c == 0)
            break;
        if (*c == '"' || *c == '\\') {
            char esc[2] = {'\\', (char)*c};
            ap_sbuf_put(sb, esc, 2);
            c++;
        } else if (*c < 0x20 || *c == '<') {
            char esc[6] = {'\\', 'u', '0', '0', hex[*c >> 4], hex[*c & 15]};
            ap_sbuf_put(sb, esc, 6);
            c++;
        } else {
            size_t n = ap_sbuf_utf8_len(c);
            if (n == 0) {
                ap_sbuf_puts(sb, "\\ufffd");
                c++;
            } else {
                ap_sbuf_put(sb, c, n);
                c += n;
            }
        }
    }
    ap_sbuf_putc(sb, '"');
}

void ap_sbuf_xml_str(ap_sbuf *sb, const char *s) {
    for (const unsigned char *c = (const unsigned char *)s; *c;) {
        switch (*c) {
        case '&': ap_sbuf_puts(sb, "&amp;"); break;
        case '<': ap_sbuf_puts(sb, "&lt;"); break;
        case '>': ap_sbuf_puts(sb, "&gt;"); break;
        case '"': ap_sbuf_puts(sb, "&quot;"); break;
        case '\'': ap_sbuf_puts(sb, "&#39;"); break;
        default:
            if (*c < 0x20 && *c != '\t') {
                ap_sbuf_putc(sb, ' ');
            } else if (*c >= 0x80) {
                size_t n = ap_sbuf_utf8_len(c);
                if (n == 0) {
                    ap_sbuf_puts(sb, "\xef\xbf\xbd");
                    c++;
                    continue;
                }
                ap_sbuf_put(sb, c, n);
                c += n;
                continue;
            } else {
                ap_sbuf_putc(sb, (char)*c);
            }
        }
        c++;
    }
}

size_t ap_varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

uint8_t *ap_varint_put(uint8_t *p, uint64_t v) {
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

int ap_varint_get(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        uint8_t b = *(*p)++;
        if (shift == 63 && b > 1)
            return -1;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

void ap_sbuf_varint(ap_sbuf *sb, uint64_t v) {
    uint8_t x[10];
    ap_sbuf_put(sb, x, (size_t)(ap_varint_put(x, v) - x));
}

int ap_sbuf_write(const ap_sbuf *sb, FILE *out) {
    if (sb->failed)
        return -1;
    if ((sb->len && fwrite(sb->data, 1, sb->len, out) != sb->len) || fflush(out) != 0)
        return ap_err_set(AP_EIO, "writing the report: %s", strerror(errno));
    return 0;
}

void ap_sbuf_free(ap_sbuf *sb) {
    free(sb->data);
    memset(sb, 0, sizeof *sb);
}
