/* ap_prof_file.c -- the profile model's files: the chunked native format (writer, reader), the JSON and pstats writers. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "ap_err.h"
#include "ap_findings.h"
#include "ap_prof.h"
#include "ap_prof_int.h"
#include "ap_wait.h"
#include "ap_report.h"
#include "ap_sbuf.h"
#include "ap_memtl.h"
#include "ap_unrel.h"
#include "ap_stall.h"

#define GROW(arr, cap, need) ap_prof_grow((void **)&(arr), &(cap), (need), sizeof *(arr))

/* ---- byte helpers ------------------------------------------------------------ */

typedef ap_sbuf buf;

static void buf_u8(buf *b, uint8_t v) {
    ap_sbuf_putc(b, (char)v);
}

static void buf_u32le(buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    ap_sbuf_put(b, x, 4);
}

static void buf_bytes(buf *b, const char *s, size_t n) {
    ap_sbuf_varint(b, n);
    ap_sbuf_put(b, s, n);
}

/* zlib's CRC-32 of n bytes (chunks are below 4 GiB). */
static uint32_t crc32_of(const void *p, size_t n) {
    return (uint32_t)crc32(0L, (const Bytef *)p, (uInt)n);
}

/* ---- native writer ----------------------------------------------------------------- */

#define TAG(a, b, c, d) ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
#define TAG_META TAG('M', 'E', 'T', 'A')
#define TAG_STRS TAG('S', 'T', 'R', 'S')
#define TAG_FRMS TAG('F', 'R', 'M', 'S')
#define TAG_TREE TAG('T', 'R', 'E', 'E')
#define TAG_EVNT TAG('E', 'V', 'N', 'T')
#define TAG_RLAT TAG('R', 'L', 'A', 'T')
#define TAG_QRYS TAG('Q', 'R', 'Y', 'S')
#define TAG_STLS TAG('S', 'T', 'L', 'S')
#define TAG_STLC TAG('S', 'T', 'L', 'C')
#define TAG_MEMT TAG('M', 'E', 'M', 'T')
#define TAG_UNRL TAG('U', 'N', 'R', 'L')
#define TAG_END TAG('E', 'N', 'D', ' ')

/* The largest event ring a reader recreates (events beyond the stored ones
 * only matter to a producer that goes on recording). */
#define EVENT_RING_MAX ((size_t)1 << 24)

/* Write one chunk (tag, u32 length, payload, u32 CRC of the payload) and
 * flush it.  0 / -1 with AP_EIO or AP_ENOMEM. */
static int write_chunk(FILE *f, const char *path, uint32_t tag, buf *payload) {
    if (payload->failed)
        return -1;
    if (payload->len > UINT32_MAX)
        return ap_err_set(AP_ERANGE, "%s: a chunk of %zu bytes is too large", path, payload->len);
    buf head = {0};
    buf_u32le(&head, tag);
    buf_u32le(&head, (uint32_t)payload->len);
    buf crc = {0};
    buf_u32le(&crc, crc32_of(payload->data, payload->len));
    int rc = 0;
    if (head.failed || crc.failed)
        rc = -1;
    else if (fwrite(head.data, 1, head.len, f) != head.len ||
             (payload->len && fwrite(payload->data, 1, payload->len, f) != payload->len) ||
             fwrite(crc.data, 1, crc.len, f) != crc.len || fflush(f) != 0)
        rc = ap_err_set(AP_EIO, "%s: %s", path, strerror(errno));
    ap_sbuf_free(&head);
    ap_sbuf_free(&crc);
    payload->len = 0;
    return rc;
}

static void encode_tree(buf *b, const ap_tree *t) {
    ap_sbuf_varint(b, t->nlabels);
    for (size_t i = 0; i < t->nlabels; i++) {
        ap_sbuf_varint(b, t->labels[i].key);
        ap_sbuf_varint(b, t->labels[i].val);
    }
    uint64_t mask = 0;
    for (size_t i = 0; i < t->nnodes; i++)
        for (unsigned k = 0; k < AP_M_COUNT; k++)
            if (t->nodes[i]->m[k] != 0)
                mask |= (uint64_t)1 << k;
    ap_sbuf_varint(b, mask);
    ap_sbuf_varint(b, t->nnodes);
    for (size_t i = 0; i < t->nnodes; i++) {
        const ap_node *n = t->nodes[i];
        if (i != 0) {
            ap_sbuf_varint(b, i - n->parent);
            ap_sbuf_varint(b, n->frame);
        }
        for (unsigned k = 0; k < AP_M_COUNT; k++)
            if (mask & ((uint64_t)1 << k))
                ap_sbuf_varint(b, n->m[k]);
    }
}

/* The RLAT payload: varint count, then per route its string id and its
 * histogram's encoding (ap_hist.h) as a varint length and the bytes.  0 / -1
 * with AP_ENOMEM. */
static int encode_latency(buf *b, const ap_prof *p) {
    ap_sbuf_varint(b, p->nlat);
    for (size_t i = 0; i < p->nlat; i++) {
        size_t n = ap_hist_encoded_size(p->lat[i]);
        ap_sbuf_varint(b, p->lat_route[i]);
        ap_sbuf_varint(b, n);
        uint8_t *enc = malloc(n);
        if (enc == NULL)
            return ap_err_set(AP_ENOMEM, "profile: out of memory");
        ap_hist_encode(p->lat[i], enc, n);
        ap_sbuf_put(b, enc, n);
        free(enc);
    }
    return b->failed ? -1 : 0;
}

int ap_prof_write(const ap_prof *p, const char *path) {
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return ap_err_set(AP_EIO, "cannot write %s: %s", path, strerror(errno));
    buf b = {0};
    int rc = -1;
    ap_sbuf_put(&b, AP_PROF_MAGIC, 8);
    buf_u32le(&b, AP_PROF_VERSION);
    buf_u32le(&b, 0);
    if (b.failed)
        goto out;
    if (fwrite(b.data, 1, b.len, f) != b.len) {
        ap_err_set(AP_EIO, "%s: %s", path, strerror(errno));
        goto out;
    }
    b.len = 0;
    ap_sbuf_varint(&b, p->nmeta);
    for (size_t i = 0; i < p->nmeta; i++) {
        buf_bytes(&b, p->meta[i].key, strlen(p->meta[i].key));
        buf_bytes(&b, p->meta[i].val, strlen(p->meta[i].val));
    }
    if (write_chunk(f, path, TAG_META, &b) != 0)
        goto out;
    ap_sbuf_varint(&b, 0);
    ap_sbuf_varint(&b, p->nstrs);
    for (size_t i = 0; i < p->nstrs; i++)
        buf_bytes(&b, p->strs[i], p->str_len[i]);
    if (write_chunk(f, path, TAG_STRS, &b) != 0)
        goto out;
    ap_sbuf_varint(&b, 0);
    ap_sbuf_varint(&b, p->nframes);
    for (size_t i = 0; i < p->nframes; i++) {
        const ap_frame *fr = &p->frames[i];
        ap_sbuf_varint(&b, fr->name);
        ap_sbuf_varint(&b, fr->qualname);
        ap_sbuf_varint(&b, fr->file);
        ap_sbuf_varint(&b, fr->line);
        ap_sbuf_varint(&b, fr->lineno);
        ap_sbuf_varint(&b, fr->kind);
    }
    if (write_chunk(f, path, TAG_FRMS, &b) != 0)
        goto out;
    for (size_t i = 0; i < p->ntrees; i++) {
        encode_tree(&b, p->trees[i]);
        if (write_chunk(f, path, TAG_TREE, &b) != 0)
            goto out;
    }
    if (p->nlat != 0) {
        if (encode_latency(&b, p) != 0 || write_chunk(f, path, TAG_RLAT, &b) != 0)
            goto out;
    }
    if (p->nqueries != 0) {
        ap_sbuf_varint(&b, p->nqueries);
        for (size_t i = 0; i < p->nqueries; i++) {
            const ap_query *q = &p->queries[i];
            ap_sbuf_varint(&b, q->statement);
            ap_sbuf_varint(&b, q->route);
            ap_sbuf_varint(&b, q->site);
            ap_sbuf_varint(&b, q->line);
            ap_sbuf_varint(&b, q->count);
            ap_sbuf_varint(&b, q->total_ns);
            ap_sbuf_varint(&b, q->rows);
            ap_sbuf_varint(&b, q->requests);
            ap_sbuf_varint(&b, q->max_per_request);
        }
        /* kinds after the records, only when one is not a statement: older
         * readers stop after the records */
        size_t other = 0;
        for (size_t i = 0; i < p->nqueries; i++)
            other += p->queries[i].kind != AP_QUERY_STATEMENT;
        for (size_t i = 0; other != 0 && i < p->nqueries; i++)
            ap_sbuf_varint(&b, p->queries[i].kind);
        if (write_chunk(f, path, TAG_QRYS, &b) != 0)
            goto out;
    }
    if (p->ev_cap != 0) {
        ap_sbuf_varint(&b, p->ev_cap);
        ap_sbuf_varint(&b, p->ev_dropped);
        ap_sbuf_varint(&b, p->ev_len);
        uint64_t prev = 0;
        for (size_t i = 0; i < p->ev_len; i++) {
            const ap_event *e = ap_prof_event_at(p, i);
            int64_t d = (int64_t)(e->start_ns - prev);   /* zigzag: starts are not sorted */
            ap_sbuf_varint(&b, ((uint64_t)d << 1) ^ (uint64_t)(d >> 63));
            ap_sbuf_varint(&b, e->dur_ns);
            ap_sbuf_varint(&b, e->frame);
            ap_sbuf_varint(&b, e->tree);
            prev = e->start_ns;
        }
        if (write_chunk(f, path, TAG_EVNT, &b) != 0)
            goto out;
    }
    if (ap_prof_nstalls(p) > 0 || ap_prof_stalls_dropped(p) > 0) {
        ap_stall_encode(p, &b);
        if (write_chunk(f, path, TAG_STLS, &b) != 0)
            goto out;
        ap_stall_cpu_encode(p, &b);
        if (b.len > 0 && write_chunk(f, path, TAG_STLC, &b) != 0)
            goto out;
    }
    if (ap_prof_nmem(p) > 0 || ap_prof_mem_dropped(p) > 0) {
        ap_memtl_encode(p, &b);
        if (write_chunk(f, path, TAG_MEMT, &b) != 0)
            goto out;
    }
    if (ap_prof_nunrel(p) > 0) {
        ap_unrel_encode(p, &b);
        if (write_chunk(f, path, TAG_UNRL, &b) != 0)
            goto out;
    }
    if (write_chunk(f, path, TAG_END, &b) != 0)
        goto out;
    rc = 0;
out:
    if (b.failed)
        rc = -1;
    ap_sbuf_free(&b);
    if (fclose(f) != 0 && rc == 0)
        rc = ap_err_set(AP_EIO, "%s: %s", path, strerror(errno));
    return rc;
}

/* ---- native reader --------------------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p, *end;
    int bad;
} rd;

static uint64_t rd_varint(rd *r) {
    uint64_t v = 0;
    if (ap_varint_get(&r->p, r->end, &v) != 0) {
        r->bad = 1;
        return 0;
    }
    return v;
}

static const uint8_t *rd_bytes(rd *r, size_t *len) {
    uint64_t n = rd_varint(r);
    if (r->bad || n > (uint64_t)(r->end - r->p)) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *s = r->p;
    r->p += n;
    *len = (size_t)n;
    return s;
}

static uint32_t rd_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Parse one chunk payload into p.  0, or -1 when the payload is malformed
 * (AP_ECORRUPT) or memory ran out (AP_ENOMEM). */
static int read_chunk(ap_prof *p, uint32_t tag, rd *r) {
    if (tag == TAG_META) {
        uint64_t n = rd_varint(r);
        for (uint64_t i = 0; i < n && !r->bad; i++) {
            size_t kl = 0, vl = 0;
            const uint8_t *k = rd_bytes(r, &kl), *v = rd_bytes(r, &vl);
            if (r->bad)
                break;
            char *ks = ap_arena_strdup(&p->arena, (const char *)k, kl);
            char *vs = ap_arena_strdup(&p->arena, (const char *)v, vl);
            if (ks == NULL || vs == NULL || ap_prof_meta_set(p, ks, vs) != 0)
                return -1;
        }
    } else if (tag == TAG_STRS) {
        uint64_t first = rd_varint(r), n = rd_varint(r);
        if (r->bad || first > p->nstrs)
            return ap_err_set(AP_ECORRUPT, "string chunk out of order");
        for (uint64_t i = 0; i < n && !r->bad; i++) {
            size_t len = 0;
            const uint8_t *s = rd_bytes(r, &len);
            if (r->bad)
                break;
            uint64_t id = first + i;
            if (id < p->nstrs) {
                if (p->str_len[id] != len || memcmp(p->strs[id], s, len) != 0)
                    return ap_err_set(AP_ECORRUPT, "string %llu redefined", (unsigned long long)id);
                continue;
            }
            ap_str_id got = ap_prof_intern(p, (const char *)s, len);
            if (got == AP_NONE)
                return -1;
            if (got != id)
                return ap_err_set(AP_ECORRUPT, "duplicate string %llu", (unsigned long long)id);
        }
    } else if (tag == TAG_FRMS) {
        uint64_t first = rd_varint(r), n = rd_varint(r);
        if (r->bad || first > p->nframes)
            return ap_err_set(AP_ECORRUPT, "frame chunk out of order");
        for (uint64_t i = 0; i < n && !r->bad; i++) {
            uint64_t v[6];
            for (int k = 0; k < 6; k++)
                v[k] = rd_varint(r);
            if (r->bad)
                break;
            if (v[0] >= p->nstrs || v[1] >= p->nstrs || v[2] >= p->nstrs || v[3] > UINT32_MAX ||
                v[4] > UINT32_MAX || v[5] > AP_FRAME_OTHER)
                return ap_err_set(AP_ECORRUPT, "frame %llu is invalid",
                                  (unsigned long long)(first + i));
            ap_frame f = {(uint32_t)v[0], (uint32_t)v[1], (uint32_t)v[2],
                          (uint32_t)v[3], (uint32_t)v[4], (uint32_t)v[5]};
            uint64_t id = first + i;
            if (id < p->nframes) {
                if (memcmp(&p->frames[id], &f, sizeof f) != 0)
                    return ap_err_set(AP_ECORRUPT, "frame %llu redefined", (unsigned long long)id);
                continue;
            }
            if (ap_prof_frame_intern(p, &f) != id)
                return ap_err_code() == AP_ENOMEM ? -1
                       : ap_err_set(AP_ECORRUPT, "duplicate frame %llu", (unsigned long long)id);
        }
    } else if (tag == TAG_TREE) {
        uint64_t nl = rd_varint(r);
        if (r->bad || nl > (uint64_t)(r->end - r->p))
            return ap_err_set(AP_ECORRUPT, "tree labels are invalid");
        ap_tree *t = ap_prof_tree_new(p, NULL, 0);
        if (t == NULL)
            return -1;
        for (uint64_t i = 0; i < nl && !r->bad; i++) {
            uint64_t k = rd_varint(r), v = rd_varint(r);
            if (r->bad || k >= p->nstrs || v >= p->nstrs)
                return ap_err_set(AP_ECORRUPT, "tree label is invalid");
            if (ap_tree_label_set(t, (ap_str_id)k, (ap_str_id)v) != 0)
                return -1;
        }
        uint64_t mask = rd_varint(r), nn = rd_varint(r);
        if (r->bad || nn == 0 || nn > (uint64_t)(r->end - r->p) + 1)
            return ap_err_set(AP_ECORRUPT, "tree node count is invalid");
        ap_node **map = malloc((size_t)nn * sizeof *map);
        if (map == NULL)
            return ap_err_set(AP_ENOMEM, "profile: out of memory");
        map[0] = ap_tree_root(t);
        for (uint64_t i = 0; i < nn && !r->bad; i++) {
            ap_node *n = map[0];
            if (i != 0) {
                uint64_t delta = rd_varint(r), frame = rd_varint(r);
                if (r->bad || delta == 0 || delta > i || frame >= p->nframes || frame == 0) {
                    free(map);
                    return ap_err_set(AP_ECORRUPT, "tree node %llu is invalid",
                                      (unsigned long long)i);
                }
                n = ap_tree_child(t, map[i - delta], (ap_frame_id)frame);
                if (n == NULL) {
                    free(map);
                    return -1;
                }
                map[i] = n;
            }
            for (unsigned k = 0; k < 64; k++) {
                if (!(mask & ((uint64_t)1 << k)))
                    continue;
                uint64_t v = rd_varint(r);
                if (k < AP_M_COUNT)
                    n->m[k] += v;   /* later metrics of a newer writer are skipped */
            }
        }
        free(map);
    } else if (tag == TAG_QRYS) {
        uint64_t n = rd_varint(r);
        if (r->bad || n > (uint64_t)(r->end - r->p) / 9)
            return ap_err_set(AP_ECORRUPT, "query chunk header is invalid");
        ap_query *recs = calloc(n ? (size_t)n : 1, sizeof *recs);
        if (recs == NULL)
            return ap_err_set(AP_ENOMEM, "out of memory reading queries");
        for (uint64_t i = 0; i < n; i++) {
            uint64_t v[9];
            for (int k = 0; k < 9; k++)
                v[k] = rd_varint(r);
            if (r->bad || v[0] >= p->nstrs || v[1] >= p->nstrs || v[2] >= p->nframes ||
                v[3] > UINT32_MAX) {
                free(recs);
                return ap_err_set(AP_ECORRUPT, "query %llu is invalid", (unsigned long long)i);
            }
            ap_query q = {(ap_str_id)v[0], (ap_str_id)v[1], (ap_frame_id)v[2], (uint32_t)v[3],
                          v[4], v[5], v[6], v[7], v[8], 0, 0, AP_QUERY_STATEMENT};
            recs[i] = q;
        }
        for (uint64_t i = 0; r->p < r->end && i < n; i++) { /* the kinds, when written */
            uint64_t k = rd_varint(r);
            if (r->bad || k >= AP_QUERY_KINDS) {
                free(recs);
                return ap_err_set(AP_ECORRUPT, "query %llu has an unknown kind",
                                  (unsigned long long)i);
            }
            recs[i].kind = (uint32_t)k;
        }
        for (uint64_t i = 0; i < n; i++)
            if (ap_prof_query_put(p, &recs[i]) != 0) {
                free(recs);
                return -1;
            }
        free(recs);
    } else if (tag == TAG_EVNT) {
        uint64_t cap = rd_varint(r), dropped = rd_varint(r), n = rd_varint(r);
        if (r->bad || n > (uint64_t)(r->end - r->p) / 4 || n > EVENT_RING_MAX || cap == 0)
            return ap_err_set(AP_ECORRUPT, "event ring header is invalid");
        if (cap > EVENT_RING_MAX)
            cap = EVENT_RING_MAX;
        if (ap_prof_events_enable(p, cap < n ? (size_t)n : (size_t)cap) != 0)
            return -1;
        uint64_t prev = 0;
        for (uint64_t i = 0; i < n && !r->bad; i++) {
            uint64_t z = rd_varint(r), dur = rd_varint(r), frame = rd_varint(r), tree = rd_varint(r);
            if (r->bad)
                break;
            if (frame >= p->nframes || tree >= p->ntrees)
                return ap_err_set(AP_ECORRUPT, "event %llu is invalid", (unsigned long long)i);
            uint64_t d = (z >> 1) ^ (0 - (z & 1));
            ap_event e = {prev + d, dur, (ap_frame_id)frame, (uint32_t)tree};
            prev = e.start_ns;
            ap_prof_event_add(p, &e);
        }
        p->ev_dropped = dropped;
    } else if (tag == TAG_RLAT) {
        uint64_t n = rd_varint(r);
        if (r->bad || n > (uint64_t)(r->end - r->p) / 2 || n > AP_PROF_LATENCY_MAX)
            return ap_err_set(AP_ECORRUPT, "route latency count is invalid");
        ap_hist *h = n ? ap_hist_new() : NULL;
        if (n && h == NULL)
            return -1;
        for (uint64_t i = 0; i < n && !r->bad; i++) {
            uint64_t route = rd_varint(r);
            size_t len = 0;
            const uint8_t *enc = rd_bytes(r, &len);
            if (r->bad)
                break;
            ap_hist *dst;
            if (route >= p->nstrs || ap_hist_decode(h, enc, len) != 0) {
                ap_hist_free(h);
                return ap_err_set(AP_ECORRUPT, "route latency %llu is invalid",
                                  (unsigned long long)i);
            }
            if ((dst = ap_prof_latency(p, (ap_str_id)route)) == NULL) {
                ap_hist_free(h);
                return -1;
            }
            ap_hist_merge(dst, h);
        }
        ap_hist_free(h);
    } else if (tag == TAG_STLS) {
        return ap_stall_decode(p, r->p, r->end);
    } else if (tag == TAG_STLC) {
        return ap_stall_cpu_decode(p, r->p, r->end);
    } else if (tag == TAG_MEMT) {
        return ap_memtl_decode(p, r->p, r->end);
    } else if (tag == TAG_UNRL) {
        return ap_unrel_decode(p, r->p, r->end);
    }
    /* Unknown tags are skipped: a newer writer may add chunk kinds. */
    if (r->bad)
        return ap_err_set(AP_ECORRUPT, "chunk payload is malformed");
    return 0;
}

ap_prof *ap_prof_read_mem(const uint8_t *data, size_t len, int *truncated) {
    int dummy;
    if (truncated == NULL)
        truncated = &dummy;
    *truncated = 0;
    if ((len < 8 || memcmp(data, AP_PROF_MAGIC, 8) != 0) && ap_json_is_export(data, len))
        return ap_json_read(data, len);
    if (len < 16 || memcmp(data, AP_PROF_MAGIC, 8) != 0) {
        ap_err_set(AP_ECORRUPT, "not an apiprof profile");
        return NULL;
    }
    uint32_t version = rd_u32le(data + 8);
    if (version == 0 || version > AP_PROF_VERSION) {
        ap_err_set(AP_ECORRUPT, "profile format version %u is not supported (this apiprof reads %d)",
                   version, AP_PROF_VERSION);
        return NULL;
    }
    ap_prof *p = ap_prof_new();
    if (p == NULL)
        return NULL;
    size_t pos = 16, chunks = 0;
    int ended = 0;
    while (!ended) {
        if (len - pos < 12)
            break;
        uint32_t tag = rd_u32le(data + pos), n = rd_u32le(data + pos + 4);
        if ((uint64_t)n > len - pos - 12)
            break;
        const uint8_t *payload = data + pos + 8;
        if (crc32_of(payload, n) != rd_u32le(payload + n))
            break;
        rd r = {payload, payload + n, 0};
        if (read_chunk(p, tag, &r) != 0) {
            if (ap_err_code() == AP_ENOMEM) {
                ap_prof_free(p);
                return NULL;
            }
            break;   /* a malformed chunk ends the readable part */
        }
        chunks++;
        pos += 12 + (size_t)n;
        ended = tag == TAG_END;
    }
    if (chunks == 0) {
        ap_prof_free(p);
        ap_err_set(AP_ECORRUPT, "the profile ends before its first complete chunk");
        return NULL;
    }
    *truncated = !ended;
    return p;
}

ap_prof *ap_prof_read(const char *path, int *truncated) {
    /* Non-blocking open: a FIFO is refused below, never waited on. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        ap_err_set(AP_EIO, "cannot read %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > AP_PROF_FILE_MAX) {
        close(fd);
        if (S_ISDIR(st.st_mode))
            ap_err_set(AP_EIO, "cannot read %s: is a directory", path);
        else if (!S_ISREG(st.st_mode))
            ap_err_set(AP_EIO, "cannot read %s: not a regular file", path);
        else
            ap_err_set(AP_EIO, "cannot read %s: %llu bytes, more than the limit of %llu", path,
                       (unsigned long long)st.st_size, (unsigned long long)AP_PROF_FILE_MAX);
        return NULL;
    }
    buf b = {0};
    uint8_t chunk[65536];
    ssize_t n;
    int saved = 0;
    /* Stops at the first failed append and at the limit, whatever the file grows to. */
    while (!b.failed && b.len <= AP_PROF_FILE_MAX) {
        n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            saved = n < 0 ? errno : 0;
            break;
        }
        ap_sbuf_put(&b, chunk, (size_t)n);
    }
    close(fd);
    if (saved != 0 || b.len > AP_PROF_FILE_MAX) {
        ap_sbuf_free(&b);
        if (saved != 0)
            ap_err_set(AP_EIO, "cannot read %s: %s", path, strerror(saved));
        else
            ap_err_set(AP_EIO, "cannot read %s: more than %llu bytes", path,
                       (unsigned long long)AP_PROF_FILE_MAX);
        return NULL;
    }
    if (b.failed) {
        ap_sbuf_free(&b);
        return NULL;
    }
    ap_prof *p = ap_prof_read_mem(b.data ? (const uint8_t *)b.data : (const uint8_t *)"", b.len,
                                  truncated);
    ap_sbuf_free(&b);
    return p;
}

/* ---- JSON export ----------------------------------------------------------------------- */

void ap_prof_queries_json(const ap_prof *p, ap_sbuf *out) {
    for (size_t i = 0; i < p->nqueries; i++) {
        const ap_query *q = &p->queries[i];
        const ap_frame *f = &p->frames[q->site];
        ap_sbuf_puts(out, i ? ",\n  {\"statement\": " : "\n  {\"statement\": ");
        ap_sbuf_json_str(out, ap_prof_str(p, q->statement));
        ap_sbuf_printf(out, ", \"kind\": \"%s\"", ap_query_kind_name(q->kind));
        ap_sbuf_printf(out, ", \"count\": %llu, \"total_ns\": %llu, \"rows\": %llu, "
                       "\"requests\": %llu, \"max_per_request\": %llu, \"n_plus_one\": %s, "
                       "\"frame\": %u, \"function\": ",
                       (unsigned long long)q->count, (unsigned long long)q->total_ns,
                       (unsigned long long)q->rows, (unsigned long long)q->requests,
                       (unsigned long long)q->max_per_request,
                       q->max_per_request >= AP_QUERY_N_PLUS_ONE ? "true" : "false", q->site);
        ap_sbuf_json_str(out, ap_prof_str(p, f->qualname));
        ap_sbuf_puts(out, ", \"file\": ");
        ap_sbuf_json_str(out, ap_prof_str(p, f->file));
        ap_sbuf_printf(out, ", \"line\": %u, \"route\": ", q->line);
        if (q->route != 0)
            ap_sbuf_json_str(out, ap_prof_str(p, q->route));
        else
            ap_sbuf_puts(out, "null");
        ap_sbuf_putc(out, '}');
    }
}

static void json_frame_fields(ap_sbuf *out, const ap_prof *p, const ap_frame *f) {
    ap_sbuf_puts(out, "\"name\": ");
    ap_sbuf_json_str(out, ap_prof_str(p, f->name));
    ap_sbuf_puts(out, ", \"qualname\": ");
    ap_sbuf_json_str(out, ap_prof_str(p, f->qualname));
    ap_sbuf_puts(out, ", \"file\": ");
    ap_sbuf_json_str(out, ap_prof_str(p, f->file));
    ap_sbuf_printf(out, ", \"line\": %u, \"kind\": \"%s\"", f->line, ap_frame_kind_name(f->kind));
}

static void json_edges(ap_sbuf *out, const ap_func_edge *e, uint32_t first, uint32_t n, int callers) {
    ap_sbuf_putc(out, '[');
    for (uint32_t i = 0; i < n; i++) {
        const ap_func_edge *x = &e[first + i];
        ap_sbuf_printf(out,
                "%s{\"function\": %u, \"calls\": %llu, \"primitive_calls\": %llu, "
                "\"self_ns\": %llu, \"total_ns\": %llu}",
                i ? ", " : "", callers ? x->caller : x->callee, (unsigned long long)x->calls,
                (unsigned long long)x->prim_calls, (unsigned long long)x->self_ns,
                (unsigned long long)x->total_ns);
    }
    ap_sbuf_putc(out, ']');
}

/* A function's wait kinds, {kind: ns} (ap_wait.h), those that are not 0. */
static void json_waits(ap_sbuf *out, const uint64_t *m) {
    ap_sbuf_puts(out, ", \"waits\": {");
    int first = 1;
    for (unsigned k = 0; k < AP_WAIT_COUNT; k++) {
        uint64_t v = m[ap_wait_metric(k)];
        if (v == 0)
            continue;
        ap_sbuf_printf(out, "%s\"%s\": %llu", first ? "" : ", ", ap_wait_name(k),
                       (unsigned long long)v);
        first = 0;
    }
    ap_sbuf_putc(out, '}');
}

int ap_json_write(const ap_report_ctx *c, ap_sbuf *out) {
    ap_prof *p = c->prof;
    ap_functab ft;
    if (ap_prof_finish(p) != 0 || ap_functab_build(p, NULL, NULL, &ft) != 0)
        return -1;
    ap_sbuf_printf(out, "{\"format\": \"apiprof\", \"version\": %d,\n \"meta\": {", AP_PROF_VERSION);
    for (size_t i = 0; i < p->nmeta; i++) {
        ap_sbuf_puts(out, i ? ", " : "");
        ap_sbuf_json_str(out, p->meta[i].key);
        ap_sbuf_puts(out, ": ");
        ap_sbuf_json_str(out, p->meta[i].val);
    }
    ap_sbuf_puts(out, "},\n \"functions\": [");
    for (size_t i = 0; i < ft.nrows; i++) {
        const ap_func_row *r = &ft.rows[i];
        ap_sbuf_puts(out, i ? ",\n  {" : "\n  {");
        json_frame_fields(out, p, &p->frames[r->frame]);
        ap_sbuf_printf(out,
                ", \"calls\": %llu, \"primitive_calls\": %llu, \"self_ns\": %llu, "
                "\"total_ns\": %llu, \"await_ns\": %llu",
                (unsigned long long)r->calls, (unsigned long long)r->prim_calls,
                (unsigned long long)r->self_ns, (unsigned long long)r->total_ns,
                (unsigned long long)r->await_ns);
        for (unsigned k = 0; k < AP_M_COUNT; k++) {
            if (k == AP_M_CALLS || k == AP_M_PRIM_CALLS || k == AP_M_SELF_NS ||
                k == AP_M_TOTAL_NS || k == AP_M_AWAIT_NS || r->m[k] == 0)
                continue;
            ap_sbuf_printf(out, ", \"%s\": %llu", ap_metric_name(k), (unsigned long long)r->m[k]);
        }
        json_waits(out, r->m);
        ap_sbuf_puts(out, ", \"callers\": ");
        json_edges(out, ft.edges_in, r->callers_first, r->ncallers, 1);
        ap_sbuf_puts(out, ", \"callees\": ");
        json_edges(out, ft.edges_out, r->callees_first, r->ncallees, 0);
        ap_sbuf_putc(out, '}');
    }
    ap_sbuf_puts(out, "\n ],\n \"findings\": ");
    if (ap_findings_json(p, c->opts->lines, c->opts->baseline, out) != 0) {
        ap_functab_free(&ft);
        return -1;
    }
    ap_sbuf_puts(out, ",\n \"routes\": ");
    if (ap_findings_routes_json(p, out) != 0) {
        ap_functab_free(&ft);
        return -1;
    }
    ap_sbuf_puts(out, ",\n \"stalls\": ");
    ap_stall_json(p, out);
    ap_sbuf_puts(out, ",\n \"memory_timeline\": ");
    ap_memtl_json(p, out);
    ap_sbuf_puts(out, ",\n \"unreleased_objects\": ");
    if (ap_unrel_json(p, out) != 0) {
        ap_functab_free(&ft);
        return -1;
    }
    ap_sbuf_puts(out, ",\n \"lines\": [");
    ap_line_row *lines;
    size_t nlines;
    const char *attr = ap_prof_meta_get(p, "memory_attribution");
    int net = attr != NULL && strcmp(attr, "lines") == 0;
    if (ap_lines_build(p, &lines, &nlines) != 0) {
        ap_functab_free(&ft);
        return -1;
    }
    for (size_t i = 0; i < nlines; i++) {
        const ap_frame *f = &p->frames[lines[i].frame];
        ap_sbuf_puts(out, i ? ",\n  {\"file\": " : "\n  {\"file\": ");
        ap_sbuf_json_str(out, ap_prof_str(p, f->file));
        ap_sbuf_puts(out, ", \"function\": ");
        ap_sbuf_json_str(out, ap_prof_str(p, f->qualname));
        ap_sbuf_printf(out, ", \"function_line\": %u, \"line\": %u, \"hits\": %llu, \"time_ns\": %llu, "
                     "\"await_ns\": %llu",
                f->line, f->lineno, (unsigned long long)lines[i].hits,
                (unsigned long long)lines[i].time_ns, (unsigned long long)lines[i].await_ns);
        if (lines[i].alloc_count || lines[i].live_bytes || lines[i].freed_bytes) {
            ap_sbuf_printf(out, ", \"alloc_bytes\": %llu, \"alloc_count\": %llu, "
                                "\"live_bytes\": %llu, \"peak_bytes\": %llu",
                           (unsigned long long)lines[i].alloc_bytes,
                           (unsigned long long)lines[i].alloc_count,
                           (unsigned long long)lines[i].live_bytes,
                           (unsigned long long)lines[i].peak_bytes);
            if (net)   /* frees charged to lines (a line profile's memory) */
                ap_sbuf_printf(out, ", \"freed_bytes\": %llu, \"net_bytes\": %lld",
                               (unsigned long long)lines[i].freed_bytes,
                               (long long)(lines[i].alloc_bytes - lines[i].freed_bytes));
        }
        ap_sbuf_putc(out, '}');
    }
    free(lines);
    ap_sbuf_puts(out, "\n ],\n \"queries\": [");
    ap_prof_queries_json(p, out);
    ap_sbuf_puts(out, "\n ],\n \"frames\": [");
    for (size_t i = 0; i < p->nframes; i++) {
        ap_sbuf_puts(out, i ? ",\n  {" : "\n  {");
        json_frame_fields(out, p, &p->frames[i]);
        ap_sbuf_printf(out, ", \"lineno\": %u}", p->frames[i].lineno);
    }
    ap_sbuf_puts(out, "\n ],\n \"threads\": [");
    for (size_t ti = 0; ti < p->ntrees; ti++) {
        const ap_tree *t = p->trees[ti];
        ap_sbuf_puts(out, ti ? ",\n  {\"labels\": {" : "\n  {\"labels\": {");
        for (size_t i = 0; i < t->nlabels; i++) {
            ap_sbuf_puts(out, i ? ", " : "");
            ap_sbuf_json_str(out, ap_prof_str(p, t->labels[i].key));
            ap_sbuf_puts(out, ": ");
            ap_sbuf_json_str(out, ap_prof_str(p, t->labels[i].val));
        }
        ap_sbuf_puts(out, "}, \"nodes\": [");
        for (size_t i = 0; i < t->nnodes; i++) {
            const ap_node *n = t->nodes[i];
            ap_sbuf_printf(out, "%s{\"parent\": %lld, \"frame\": %u", i ? ",\n   " : "\n   ",
                    n->parent == AP_NONE ? -1LL : (long long)n->parent, n->frame);
            for (unsigned k = 0; k < AP_M_COUNT; k++)
                if (n->m[k] != 0)
                    ap_sbuf_printf(out, ", \"%s\": %llu", ap_metric_name(k), (unsigned long long)n->m[k]);
            ap_sbuf_putc(out, '}');
        }
        ap_sbuf_puts(out, "]}");
    }
    ap_sbuf_puts(out, "\n ]\n}\n");
    ap_functab_free(&ft);
    return out->failed ? -1 : 0;
}

/* ---- pstats export ----------------------------------------------------------------------
 * marshal's byte format for the few types pstats needs: '{' key value ... '0'
 * for a dict, ')' u8 n for a tuple of fewer than 256 items, 'u' i32 n bytes
 * for a str (UTF-8), 'i' i32 for an int that fits, 'l' i32 ndigits then
 * 15-bit digits for a larger one, 'g' 8-byte IEEE double.  Little-endian. */

static void m_int(buf *b, uint64_t v) {
    if (v <= INT32_MAX) {
        buf_u8(b, 'i');
        buf_u32le(b, (uint32_t)v);
        return;
    }
    uint16_t digits[5];
    int n = 0;
    while (v != 0) {
        digits[n++] = (uint16_t)(v & 0x7fff);
        v >>= 15;
    }
    buf_u8(b, 'l');
    buf_u32le(b, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        buf_u8(b, (uint8_t)digits[i]);
        buf_u8(b, (uint8_t)(digits[i] >> 8));
    }
}

static void m_float(buf *b, double d) {
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    buf_u8(b, 'g');
    for (int i = 0; i < 8; i++)
        buf_u8(b, (uint8_t)(bits >> (8 * i)));
}

static void m_str(buf *b, const char *s, size_t n) {
    buf_u8(b, 'u');
    buf_u32le(b, (uint32_t)n);
    ap_sbuf_put(b, s, n);
}

static void m_tuple(buf *b, uint8_t n) {
    buf_u8(b, ')');
    buf_u8(b, n);
}

/* pstats' key of a function: (file, line, name); C functions as cProfile
 * names them. */
static void m_key(buf *b, const ap_prof *p, const ap_frame *f) {
    m_tuple(b, 3);
    const char *qual = ap_prof_str(p, f->qualname);
    if (f->kind == AP_FRAME_PYTHON) {
        const char *file = ap_prof_str(p, f->file);
        m_str(b, file, strlen(file));
        m_int(b, f->line);
        const char *name = ap_prof_str(p, f->name);
        m_str(b, name, strlen(name));
        return;
    }
    m_str(b, "~", 1);
    m_int(b, 0);
    char label[512];
    const char *dot = strrchr(qual, '.');
    if (f->kind == AP_FRAME_METHOD && dot != NULL)
        snprintf(label, sizeof label, "<method '%s' of '%.*s' objects>", dot + 1,
                 (int)(dot - qual), qual);
    else if (f->kind == AP_FRAME_BUILTIN || f->kind == AP_FRAME_METHOD)
        snprintf(label, sizeof label, "<built-in method %s>", qual);
    else
        snprintf(label, sizeof label, "%s", qual);
    m_str(b, label, strlen(label));
}

int ap_pstats_write(const ap_report_ctx *c, ap_sbuf *out) {
    ap_prof *p = c->prof, *projected = NULL;
    ap_functab ft;
    /* An explicit --metric fills the time fields (pstats has no others); by
     * default they hold the recorded times, whatever the views' default. */
    if (c->opts->metric != NULL && c->opts->metric[0] != '\0') {
        p = projected = ap_report_functab(c, &ft);
        if (p == NULL)
            return -1;
    } else if (ap_functab_build(p, NULL, NULL, &ft) != 0) {
        return -1;
    }
    buf_u8(out, '{');
    for (size_t i = 0; i < ft.nrows; i++) {
        const ap_func_row *r = &ft.rows[i];
        m_key(out, p, &p->frames[r->frame]);
        m_tuple(out, 5);
        m_int(out, r->prim_calls);
        m_int(out, r->calls);
        m_float(out, (double)r->self_ns / 1e9);
        m_float(out, (double)r->total_ns / 1e9);
        buf_u8(out, '{');
        for (uint32_t j = 0; j < r->ncallers; j++) {
            const ap_func_edge *e = &ft.edges_in[r->callers_first + j];
            m_key(out, p, &p->frames[ft.rows[e->caller].frame]);
            m_tuple(out, 4);   /* pstats' caller tuples are (nc, cc, tt, ct) */
            m_int(out, e->calls);
            m_int(out, e->prim_calls);
            m_float(out, (double)e->self_ns / 1e9);
            m_float(out, (double)e->total_ns / 1e9);
        }
        buf_u8(out, '0');
    }
    buf_u8(out, '0');
    ap_functab_free(&ft);
    ap_prof_free(projected);
    return out->failed ? -1 : 0;
}
