/* migrate.h - the QMP side of live migration (QEMU 7.2), as pure
 * functions: the arguments of each command (new JSON objects, handed to
 * kh_qmp_command / the driver's command, which steal them) and the parsing
 * of the answers. No I/O: tests/unit/qmp/test_migrate.c checks the shapes,
 * bench/migrate.py and the orchestration (instance/migrate.c) send them.
 *
 * Commands, in the order of the phases (docs/migration.md):
 *   target: [object-add tls-creds-x509 (endpoint server)], migrate-set-capabilities,
 *           migrate-set-parameters, migrate-incoming, nbd-server-start,
 *           block-export-add (one per local disk); at switch nbd-server-stop, cont
 *   source: calc-dirty-rate, query-dirty-rate; [object-add tls-creds-x509
 *           (endpoint client)], blockdev-add (driver nbd), blockdev-mirror,
 *           query-block-jobs; migrate-set-capabilities, migrate-set-parameters,
 *           migrate, query-migrate; at pre-switchover block-job-cancel (a ready
 *           mirror stops consistent), migrate-continue; on the way back
 *           migrate_cancel, block-job-cancel, blockdev-del, cont.
 */
#ifndef KH_QEMU_MIGRATE_H
#define KH_QEMU_MIGRATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* What a migration asks of QEMU. */
typedef struct kh_qmig_opts {
    unsigned downtime_ms;      /* downtime-limit (0: 300) */
    uint64_t bandwidth;        /* max-bandwidth, bytes/s (0: unlimited, i.e. 10 GiB/s) */
    unsigned multifd_channels; /* 0/1: no multifd; >1 channels (not with TLS on 7.2
                                * before the cluster CA lands: both sides must agree) */
    bool auto_converge;        /* throttle the guest's vCPUs when it dirties too fast */
    bool pause_switchover;     /* source: pause-before-switchover (local disks: the
                                * mirrors must conclude before the block nodes go) */
    const char *tls_creds;     /* id of a tls-creds-x509 object, NULL: plaintext */
    const char *tls_hostname;  /* the name the target's certificate must carry */
} kh_qmig_opts;

/* The id the tls-creds-x509 object gets. */
#define KH_QMIG_TLS_ID "kh-mig-tls"

/* object-add tls-creds-x509: dir holds ca-cert.pem and server-cert.pem /
 * server-key.pem (endpoint "server", the target) or client-cert.pem /
 * client-key.pem (endpoint "client", the source); QEMU's layout. */
json_t *kh_qmig_tls_object(const char *dir, bool server);
/* migrate-set-capabilities: both get events, and multifd / auto-converge
 * as asked; the source pause-before-switchover when o->pause_switchover
 * (local disks: the mirrors are cancelled while the guest is paused, before
 * QEMU inactivates the block nodes at completion). Without local disks the
 * switch needs no pause: the target stays paused until the owner moved. */
json_t *kh_qmig_caps(const kh_qmig_opts *o, bool source);
/* migrate-set-parameters: downtime-limit, max-bandwidth, multifd-channels,
 * tls-creds (+ tls-hostname on the source). */
json_t *kh_qmig_params(const kh_qmig_opts *o, bool source);
/* migrate / migrate-incoming: {"uri": "tcp:HOST:PORT"}. NULL if host has a
 * character a URI cannot take here. */
json_t *kh_qmig_uri_args(const char *host, unsigned port);
/* nbd-server-start on HOST:PORT (tls_creds may be NULL). */
json_t *kh_qmig_nbd_server(const char *host, unsigned port, const char *tls_creds);
/* block-export-add of node (writable, export name = node). */
json_t *kh_qmig_export(const char *node);
/* blockdev-add on the source: node "mig-<node>" reading the target's
 * export of node at HOST:PORT. */
json_t *kh_qmig_nbd_node(const char *node, const char *host, unsigned port,
                         const char *tls_creds);
/* blockdev-mirror device (the source's node) -> mig-<node> (the NBD
 * node of the target's export node; sync full, job "mig-<node>"). */
json_t *kh_qmig_mirror(const char *device, const char *node);
/* The job / nbd node name of a disk node ("mig-disk0"); buf >= 64. */
void kh_qmig_node_name(const char *node, char *buf, size_t size);
/* calc-dirty-rate for seconds (1..60). */
json_t *kh_qmig_calc_dirty_rate(unsigned seconds);

/* query-migrate, parsed. */
typedef struct kh_qmig_status {
    char status[32];          /* "active", "pre-switchover", "completed", "failed", ... */
    uint64_t ram_total, ram_transferred, ram_remaining;
    uint64_t dirty_pages_rate, dirty_sync_count;
    int64_t total_time_ms, downtime_ms, expected_downtime_ms, setup_time_ms;
    unsigned cpu_throttle_pct;
    char error[256];          /* "error-desc" when failed */
} kh_qmig_status;
/* Fill st from query-migrate's return (missing fields stay 0). 0, or -1
 * if ret has no status. */
int kh_qmig_status_parse(const json_t *ret, kh_qmig_status *st);
bool kh_qmig_status_failed(const kh_qmig_status *st);

/* query-dirty-rate: -1 while not measured yet, else MB/s. */
int64_t kh_qmig_dirty_rate_parse(const json_t *ret);

/* query-block-jobs: how many of the jobs named mig-* are ready, and the
 * bytes done / total over them. */
typedef struct kh_qmig_mirrors {
    unsigned jobs, ready;
    unsigned failed;          /* concluded/aborting before being cancelled, or an error */
    uint64_t done, total;
    char error[256];          /* the first failed job's "device: error" */
} kh_qmig_mirrors;
void kh_qmig_mirrors_parse(const json_t *ret, kh_qmig_mirrors *m);

/* Convergence, predicted before starting: with the guest dirtying
 * dirty_mbps (MB/s, calc-dirty-rate) over a link of bandwidth bytes/s,
 * can the remaining dirty set shrink below what downtime_ms lets through?
 * KH_QMIG_CONVERGES; KH_QMIG_THROTTLE (only with auto-converge: start,
 * QEMU throttles the vCPUs); KH_QMIG_NEVER (refuse: it would migrate
 * forever). */
typedef enum kh_qmig_forecast {
    KH_QMIG_CONVERGES,
    KH_QMIG_THROTTLE,
    KH_QMIG_NEVER,
} kh_qmig_forecast;
kh_qmig_forecast kh_qmig_predict(int64_t dirty_mbps, uint64_t bandwidth, bool auto_converge);

/* The decision before a migration starts, from calc-dirty-rate: go as
 * asked; go with a longer downtime limit (doubling, up to the cap); go with
 * auto-converge (the vCPUs throttled; when it dirties at most 1.5 times what
 * the link takes); or refuse (409; with force: go with
 * auto-converge and the cap). The model: each pass sends what the last one
 * dirtied (r = dirty / link of it); the copy stops once the rest fits in
 * link * downtime; more than 30 passes (or r >= 1) does not converge.
 * A guest paused for the copy (kh_qmig_lossy_passes) dirties nothing: one
 * pass without a measurement; its pause is the copy, at worst RAM / link:
 * refused beyond the cap (unless forced). */
typedef struct kh_qmig_forecast_in {
    int64_t dirty_mbps;        /* calc-dirty-rate; -1: not measured (go) */
    bool paused;               /* the guest is paused for the RAM copy */
    uint64_t bandwidth;        /* bytes/s of the link (0: assume 1 GB/s) */
    uint64_t ram_bytes;        /* the guest's RAM */
    unsigned downtime_ms;      /* the limit asked for (0: 300) */
    unsigned downtime_cap_ms;  /* how far it may be raised */
    bool force;
} kh_qmig_forecast_in;
typedef enum kh_qmig_verdict {
    KH_QMIG_GO,
    KH_QMIG_RAISE_DOWNTIME,
    KH_QMIG_AUTO_CONVERGE,
    KH_QMIG_REFUSE,
} kh_qmig_verdict;
typedef struct kh_qmig_decision {
    kh_qmig_verdict verdict;
    unsigned downtime_ms;      /* the limit to set */
    bool auto_converge;
    int passes;                /* predicted passes (-1: never) */
    double link_mbps;
    char why[256];             /* for the log, the task and a 409 */
} kh_qmig_decision;
void kh_qmig_decide(const kh_qmig_forecast_in *in, kh_qmig_decision *out);

/* Whether QEMU loses guest writes while the guest runs during a migration.
 * QEMU before 9.0 under TCG does: the fast path of its dirty-bitmap sync
 * clears the bits 64 pages at a time without bringing the TCG TLB up to date,
 * so a store through an entry made while the page was dirty sets no bit again
 * until the entry is refilled (fixed upstream by "physmem: Fix migration dirty
 * bitmap coherency with TCG memory access", QEMU 9.0). A page sent and then
 * written that way before the guest stops reaches the target stale (seen
 * here: guest kernels crashing right after the switch in RCU callbacks on
 * per-CPU data, then resetting; with a 10 ms limit in 2 of 8 moves, with
 * 2000 ms still in 1 of 4 runs). No downtime limit avoids it; there the
 * guest is paused before the RAM copy (instance/migrate.c). qemu_version as
 * kh_qemu_caps (major * 10000 + minor * 100 + micro). */
#define KH_QMIG_DOWNTIME_MS 10
bool kh_qmig_lossy_passes(bool tcg, unsigned qemu_version);

#endif
