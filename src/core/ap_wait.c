/* ap_wait.c -- wait kinds: names and the metric of each kind. */
#include "ap_wait.h"

#include <string.h>

#include "ap_metric.h"

static const struct {
    const char *name;
    unsigned metric;
} kinds[AP_WAIT_COUNT] = {
    [AP_WAIT_NETWORK] = {"network", AP_M_WAIT_NET_NS},
    [AP_WAIT_DATABASE] = {"database", AP_M_WAIT_DB_NS},
    [AP_WAIT_FILE] = {"file", AP_M_WAIT_FILE_NS},
    [AP_WAIT_SLEEP] = {"sleep", AP_M_WAIT_SLEEP_NS},
    [AP_WAIT_SUBPROCESS] = {"subprocess", AP_M_WAIT_SUBPROC_NS},
    [AP_WAIT_LOCK] = {"lock", AP_M_WAIT_LOCK_NS},
    [AP_WAIT_GIL] = {"gil", AP_M_WAIT_GIL_NS},
    [AP_WAIT_THREAD_POOL] = {"thread_pool", AP_M_WAIT_POOL_NS},
    [AP_WAIT_IDLE] = {"idle", AP_M_WAIT_IDLE_NS},
};

const char *ap_wait_name(unsigned k) {
    return k < AP_WAIT_COUNT ? kinds[k].name : NULL;
}

unsigned ap_wait_metric(unsigned k) {
    return k < AP_WAIT_COUNT ? kinds[k].metric : AP_M_COUNT;
}

unsigned ap_wait_of_metric(unsigned m) {
    unsigned k = 0;
    while (k < AP_WAIT_COUNT && kinds[k].metric != m)
        k++;
    return k;
}

unsigned ap_wait_by_name(const char *name) {
    unsigned k = 0;
    while (k < AP_WAIT_COUNT && strcmp(kinds[k].name, name) != 0)
        k++;
    return k;
}
