/* migrate.c - owns the QMP vocabulary of live migration: the arguments of
 * each command a migration sends (capabilities, parameters, URIs, NBD
 * server, exports and nodes, mirrors, TLS objects, dirty-rate) and the
 * parsing of query-migrate, query-dirty-rate and query-block-jobs, plus the
 * convergence forecast. Pure: nothing here talks to QEMU. */
#include "qemu/migrate.h"

#include <stdio.h>
#include <string.h>

#include "util/mem.h"

/* QEMU stops the guest once what is left fits in this at the measured
 * bandwidth: QEMU's own default (300 ms) let it stop with 300 ms of RAM
 * still to send (a 307 ms downtime measured); downtime_ms in the request
 * still sets it, and the forecast raises it for a guest that dirties fast. */
#define DEFAULT_DOWNTIME_MS KH_QMIG_DOWNTIME_MS
/* When no bandwidth is given: QEMU's own default (128 MiB/s) is far below
 * a LAN; 10 GiB/s means "as fast as the link goes". */
#define UNLIMITED_BW (10ull * 1024 * 1024 * 1024)
/* The link speed the forecast assumes when none is given (1 GB/s). */
#define ASSUMED_LINK_MBPS 1000

json_t *kh_qmig_tls_object(const char *dir, bool server)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:b}", "qom-type", "tls-creds-x509", "id",
                     KH_QMIG_TLS_ID, "dir", dir, "endpoint", server ? "server" : "client",
                     "verify-peer", 1);
}

static void cap(json_t *a, const char *name, bool on)
{
    json_array_append_new(a, json_pack("{s:s, s:b}", "capability", name, "state", on));
}

json_t *kh_qmig_caps(const kh_qmig_opts *o, bool source)
{
    json_t *a = json_array();
    cap(a, "events", true);
    if (source) {
        cap(a, "pause-before-switchover", o->pause_switchover);
        cap(a, "auto-converge", o->auto_converge);
    }
    cap(a, "multifd", o->multifd_channels > 1);
    return json_pack("{s:o}", "capabilities", a);
}

json_t *kh_qmig_params(const kh_qmig_opts *o, bool source)
{
    json_t *p = json_object();
    if (source) {
        json_object_set_new(p, "downtime-limit",
                            json_integer(o->downtime_ms ? o->downtime_ms : DEFAULT_DOWNTIME_MS));
        json_object_set_new(p, "max-bandwidth",
                            json_integer((json_int_t)(o->bandwidth ? o->bandwidth
                                                                   : UNLIMITED_BW)));
    }
    if (o->multifd_channels > 1)
        json_object_set_new(p, "multifd-channels", json_integer(o->multifd_channels));
    if (o->tls_creds) {
        json_object_set_new(p, "tls-creds", json_string(o->tls_creds));
        if (source && o->tls_hostname)
            json_object_set_new(p, "tls-hostname", json_string(o->tls_hostname));
    }
    return p;
}

static bool host_ok(const char *h)
{
    if (!h || !*h || strlen(h) > 253)
        return false;
    for (const char *p = h; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              *p == '.' || *p == '-' || *p == ':'))
            return false;
    return true;
}

json_t *kh_qmig_uri_args(const char *host, unsigned port)
{
    if (!host_ok(host) || port == 0 || port > 65535)
        return NULL;
    char uri[300];
    snprintf(uri, sizeof(uri), strchr(host, ':') ? "tcp:[%s]:%u" : "tcp:%s:%u", host, port);
    return json_pack("{s:s}", "uri", uri);
}

static json_t *inet(const char *host, unsigned port)
{
    char p[16];
    snprintf(p, sizeof(p), "%u", port);
    return json_pack("{s:s, s:s}", "host", host, "port", p);
}

json_t *kh_qmig_nbd_server(const char *host, unsigned port, const char *tls_creds)
{
    json_t *addr = json_pack("{s:s, s:o}", "type", "inet", "data", inet(host, port));
    json_t *a = json_pack("{s:o}", "addr", addr);
    if (tls_creds)
        json_object_set_new(a, "tls-creds", json_string(tls_creds));
    return a;
}

json_t *kh_qmig_export(const char *node)
{
    char id[64];
    kh_qmig_node_name(node, id, sizeof(id));
    return json_pack("{s:s, s:s, s:s, s:s, s:b}", "type", "nbd", "id", id, "node-name", node,
                     "name", node, "writable", 1);
}

void kh_qmig_node_name(const char *node, char *buf, size_t size)
{
    snprintf(buf, size, "mig-%s", node);
}

json_t *kh_qmig_nbd_node(const char *node, const char *host, unsigned port,
                         const char *tls_creds)
{
    char name[64];
    kh_qmig_node_name(node, name, sizeof(name));
    json_t *server = inet(host, port);
    json_object_set_new(server, "type", json_string("inet"));
    json_t *a = json_pack("{s:s, s:s, s:o, s:s}", "driver", "nbd", "node-name", name, "server",
                          server, "export", node);
    if (tls_creds)
        json_object_set_new(a, "tls-creds", json_string(tls_creds));
    return a;
}

json_t *kh_qmig_mirror(const char *device, const char *node)
{
    char name[64];
    kh_qmig_node_name(node, name, sizeof(name));
    return json_pack("{s:s, s:s, s:s, s:s, s:b}", "job-id", name, "device", device, "target",
                     name, "sync", "full", "auto-dismiss", 0);
}

json_t *kh_qmig_calc_dirty_rate(unsigned seconds)
{
    if (seconds < 1)
        seconds = 1;
    if (seconds > 60)
        seconds = 60;
    return json_pack("{s:I}", "calc-time", (json_int_t)seconds);
}

static uint64_t u64(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    if (json_is_integer(v))
        return json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
    if (json_is_real(v)) /* a uint64 past json_int_t (see qmp.h) */
        return json_real_value(v) > 0 ? (uint64_t)json_real_value(v) : 0;
    return 0;
}

int kh_qmig_status_parse(const json_t *ret, kh_qmig_status *st)
{
    memset(st, 0, sizeof(*st));
    const char *s = json_string_value(json_object_get(ret, "status"));
    if (!s)
        return -1;
    snprintf(st->status, sizeof(st->status), "%s", s);
    const json_t *ram = json_object_get(ret, "ram");
    st->ram_total = u64(ram, "total");
    st->ram_transferred = u64(ram, "transferred");
    st->ram_remaining = u64(ram, "remaining");
    st->dirty_pages_rate = u64(ram, "dirty-pages-rate");
    st->dirty_sync_count = u64(ram, "dirty-sync-count");
    st->total_time_ms = (int64_t)u64(ret, "total-time");
    st->downtime_ms = (int64_t)u64(ret, "downtime");
    st->expected_downtime_ms = (int64_t)u64(ret, "expected-downtime");
    st->setup_time_ms = (int64_t)u64(ret, "setup-time");
    st->cpu_throttle_pct = (unsigned)u64(ret, "cpu-throttle-percentage");
    const char *e = json_string_value(json_object_get(ret, "error-desc"));
    if (e)
        snprintf(st->error, sizeof(st->error), "%s", e);
    return 0;
}

bool kh_qmig_status_failed(const kh_qmig_status *st)
{
    return strcmp(st->status, "failed") == 0 || strcmp(st->status, "cancelled") == 0 ||
           strcmp(st->status, "cancelling") == 0;
}

int64_t kh_qmig_dirty_rate_parse(const json_t *ret)
{
    const char *s = json_string_value(json_object_get(ret, "status"));
    const json_t *r = json_object_get(ret, "dirty-rate");
    if (!s || strcmp(s, "measured") != 0 || !json_is_integer(r))
        return -1;
    return json_integer_value(r);
}

void kh_qmig_mirrors_parse(const json_t *ret, kh_qmig_mirrors *m)
{
    memset(m, 0, sizeof(*m));
    size_t i;
    const json_t *j;
    json_array_foreach(ret, i, j) {
        const char *dev = json_string_value(json_object_get(j, "device"));
        if (!dev || strncmp(dev, "mig-", 4) != 0)
            continue;
        m->jobs++;
        const char *status = json_string_value(json_object_get(j, "status"));
        const char *e = json_string_value(json_object_get(j, "error"));
        if (e || (status && (strcmp(status, "concluded") == 0 ||
                             strcmp(status, "aborting") == 0 || strcmp(status, "null") == 0))) {
            m->failed++;
            if (!m->error[0])
                snprintf(m->error, sizeof(m->error), "%s: %s", dev, e ? e : status);
        } else if (json_is_true(json_object_get(j, "ready"))) {
            m->ready++;
        }
        m->done += u64(j, "offset");
        m->total += u64(j, "len");
    }
}

kh_qmig_forecast kh_qmig_predict(int64_t dirty_mbps, uint64_t bandwidth, bool auto_converge)
{
    uint64_t link = bandwidth ? bandwidth / 1000000 : ASSUMED_LINK_MBPS;
    if (link == 0)
        link = 1;
    if (dirty_mbps < 0)
        return KH_QMIG_CONVERGES; /* not measured: let QEMU try */
    /* each pass sends what the last one dirtied: it shrinks while the
     * guest dirties less than half the link */
    if ((uint64_t)dirty_mbps * 2 <= link)
        return KH_QMIG_CONVERGES;
    /* auto-converge throttles the vCPUs up to 99 %: a guest dirtying a
     * few times the link still gets through */
    if (auto_converge && (uint64_t)dirty_mbps <= link * 4)
        return KH_QMIG_THROTTLE;
    return KH_QMIG_NEVER;
}

/* Passes of the RAM copy we accept before calling it "does not converge". */
#define MAX_PASSES 30

/* Passes until the dirty set fits in the downtime: each pass sends what
 * the last one dirtied, a fraction r = dirty / link of it; the copy stops
 * when the rest fits in link * downtime. -1: never (r >= 1). */
static int passes(double ram_mb, double r, double link_mbps, unsigned downtime_ms)
{
    double fits = link_mbps * downtime_ms / 1000.0;
    if (ram_mb <= fits)
        return 1;
    if (r <= 0.0)
        return 2;
    if (r >= 1.0)
        return -1;
    int k = 1;
    for (double pending = ram_mb; pending > fits && k <= 1000; k++)
        pending *= r;
    return k;
}

void kh_qmig_decide(const kh_qmig_forecast_in *in, kh_qmig_decision *out)
{
    memset(out, 0, sizeof(*out));
    unsigned dt = in->downtime_ms ? in->downtime_ms : DEFAULT_DOWNTIME_MS;
    unsigned cap = in->downtime_cap_ms > dt ? in->downtime_cap_ms : dt;
    double link = in->bandwidth ? (double)in->bandwidth / 1e6 : ASSUMED_LINK_MBPS;
    double ram = (double)in->ram_bytes / 1e6;
    out->downtime_ms = dt;
    out->link_mbps = link;
    if (in->paused) { /* one pass: the pause is the whole copy, at worst ram / link */
        double pause_ms = ram / link * 1000;
        out->passes = 1;
        out->verdict = pause_ms <= cap || in->force ? KH_QMIG_GO : KH_QMIG_REFUSE;
        snprintf(out->why, sizeof(out->why),
                 "the guest is paused for the RAM copy (QEMU under TCG before 9.0 loses writes "
                 "made during a live one): up to %.0f ms for %.0f MB over %.0f MB/s%s", pause_ms,
                 ram, link, pause_ms <= cap ? "" : in->force ? " (forced)"
                 : ", more than the max downtime; give force to go anyway");
        return;
    }
    if (in->dirty_mbps < 0) {
        out->verdict = KH_QMIG_GO;
        snprintf(out->why, sizeof(out->why), "dirty rate not measured");
        return;
    }
    double r = (double)in->dirty_mbps / link;
    int k = passes(ram, r, link, dt);
    out->passes = k;
    if (k > 0 && k <= MAX_PASSES) {
        out->verdict = KH_QMIG_GO;
        snprintf(out->why, sizeof(out->why),
                 "dirty %lld MB/s over %.0f MB/s: about %d passes within %u ms",
                 (long long)in->dirty_mbps, link, k, dt);
        return;
    }
    /* a longer switch within the cap */
    for (unsigned d = dt * 2; d <= cap; d *= 2) {
        int kd = passes(ram, r, link, d);
        if (kd > 0 && kd <= MAX_PASSES) {
            out->verdict = KH_QMIG_RAISE_DOWNTIME;
            out->downtime_ms = d;
            out->passes = kd;
            snprintf(out->why, sizeof(out->why),
                     "dirty %lld MB/s over %.0f MB/s: downtime limit raised to %u ms",
                     (long long)in->dirty_mbps, link, d);
            return;
        }
    }
    /* auto-converge throttles the vCPUs (up to 99 %, in steps that take a
     * few passes each): a guest dirtying up to 1.5 times the link still gets
     * through in reasonable time */
    if (r <= 1.5) {
        out->verdict = KH_QMIG_AUTO_CONVERGE;
        out->auto_converge = true;
        out->downtime_ms = cap;
        snprintf(out->why, sizeof(out->why),
                 "dirty %lld MB/s over %.0f MB/s: vCPUs throttled (auto-converge), downtime "
                 "limit %u ms", (long long)in->dirty_mbps, link, cap);
        return;
    }
    out->verdict = in->force ? KH_QMIG_AUTO_CONVERGE : KH_QMIG_REFUSE;
    out->auto_converge = in->force;
    out->downtime_ms = in->force ? cap : dt;
    snprintf(out->why, sizeof(out->why),
             "the guest dirties %lld MB/s, %.1f times what the link takes (%.0f MB/s): it "
             "would not converge within a %u ms downtime%s",
             (long long)in->dirty_mbps, r, link, cap,
             in->force ? " (forced: vCPUs throttled)" : "; give force to try anyway");
}

bool kh_qmig_lossy_passes(bool tcg, unsigned qemu_version)
{
    return tcg && qemu_version < 90000;
}

