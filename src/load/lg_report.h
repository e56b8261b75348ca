/* lg_report.h -- apiprof-load results as an aligned text table and as JSON (schema in docs/load.md). */
#ifndef LG_REPORT_H
#define LG_REPORT_H

#include <stdio.h>

#include "lg_load.h"

/* Write the text report of r (run with cfg) to f: a latency table per phase
 * and URL, the uncorrected latency table in the open model, then status codes,
 * errors and bytes.  Returns 0; on error (a write failed) returns -1 with
 * AP_EIO. */
int lg_report_text(FILE *f, const lg_load_config *cfg, const lg_load_result *r);

/* Write r as one JSON object followed by a newline (the schema is in
 * docs/load.md; latencies in milliseconds).  With histograms, every set of
 * figures also carries its latency histograms in ap_hist_encode() form,
 * base64, so that a reader can merge rows exactly.  Returns 0; on error (a
 * write failed, or no memory) returns -1 with AP_EIO or AP_ENOMEM. */
int lg_report_json(FILE *f, const lg_load_config *cfg, const lg_load_result *r, int histograms);

#endif /* LG_REPORT_H */
