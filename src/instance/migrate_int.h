/* migrate_int.h - what migrate.c (the source's phase machine) shares
 * with migrate_prep.c (prepare), migrate_peer.c (the target's routes) and
 * migrate_disks.c (its local disks): the migration's state and the
 * helpers that drive it. Not for use outside src/instance/migrate*.c. */
#ifndef KH_INSTANCE_MIGRATE_INT_H
#define KH_INSTANCE_MIGRATE_INT_H

#include <jansson.h>
#include <uv.h>

#include "instance/instance_int.h"
#include "instance/migrate.h"
#include "instance/migrate_fsm.h"
#include "qemu/migrate.h"
#include "qemu/qmp.h"

#define POLL_MS 100

typedef struct kh_migration {
    kh_manager *mgr;
    char id[37];
    char name[128];
    kh_migrate_peer peer;
    kh_migrate_ops ops;
    char token[37];
    kh_task *task;
    kh_mig_phase phase;
    kh_mig_facts facts;
    unsigned port, nbd_port;
    kh_migrate_opts opts;
    kh_qmig_decision plan;  /* the forecast's: downtime limit, auto-converge */
    /* local disks (not on a shared pool): copied to the target over NBD */
    unsigned ndisks;
    struct {
        unsigned index;     /* in the spec: the target's node disk<index> */
        int node;           /* this QEMU's node disk<node> */
        char ref[200];      /* "pool/name" */
        char format[8];
        uint64_t size;
    } disks[KH_VM_DISKS_MAX];
    char tls_dir[256];      /* QEMU's TLS files ("": plain) */
    bool tls_ready;         /* the tls-creds-x509 object is in this QEMU */
    bool tls_confirmed;     /* query-migrate-parameters read tls-creds back */
    bool wait_mirrors;      /* switch: migrate-continue once every mirror concluded */
    bool delete_disks;      /* finish: the local copies here go with the definition */
    unsigned dirty_polls;
    bool dirty_done;        /* prepare: the forecast is in (and allows it) */
    bool dirty_asking;      /* a query-dirty-rate is under way */
    bool target_ready;      /* prepare: the target's QEMU listens */
    uint64_t dirty_due_ms;  /* when the measurement should be in (0: not begun) */
    uint64_t target_next_ms;/* the next status call to the target */
    uint64_t dirty_ms, ready_ms; /* the forecast in; the target ready */
    uint64_t phase_ms[KH_MIG_PHASES]; /* when each phase was entered */
    uint32_t cur_acts;      /* the batch run_step runs */
    uint64_t running_ms;    /* finish: the target said the guest runs there */
    uint32_t resume_acts;   /* finish: the actions after the commit, once the target runs */
    kh_qmig_mirrors mirrors;
    uv_timer_t *timer;
    void *curl;             /* the peer calls' libcurl handle: keeps its TLS connection */
    uint64_t t0_ms, poll_deadline_ms;
    uint64_t stopped_ms;    /* QEMU's STOP of the guest for the switch-over (event) */
    uint64_t completed_ms, committed_ms; /* QEMU said completed; the target ran it */
    kh_qmig_status st;
    bool continued;
    bool paused_copy;       /* the guest paused for the RAM copy (qemu/migrate.h) */
    kh_err err;
    int pending;       /* an event the actions produced (-1: none) */
    kh_mig_owner pending_owner;
    unsigned forget_tries;
    unsigned inflight; /* QMP calls whose reply has not come: m lives until 0 */
    uint32_t later;    /* actions a RETRY_LATER row delayed */
    unsigned later_tries;
    bool stop_batch;   /* an action failed: the rest of its batch waits */
    bool finished;
    bool timer_closing;
} kh_migration;


/* migrate.c */
void kh_migrate_feed(kh_migration *m, kh_mig_event ev);
/* Keep err (the first one) and have FAILED fed after the running actions. */
void kh_migrate_fail(kh_migration *m, const kh_err *err);
/* A QMP command to the VM's QEMU (args stolen); cb gets m as opaque; -1
 * (m's error set, FAILED pending) when there is no QEMU. */
int kh_migrate_qmp(kh_migration *m, const char *cmd, json_t *args, kh_qmp_reply_cb cb);
void kh_migrate_timer_start(kh_migration *m, uv_timer_cb cb, uint64_t ms, uint64_t repeat);
void kh_migrate_timer_stop(kh_migration *m);
kh_inst *kh_migrate_vm(kh_migration *m);

void kh_migrate_tls_setup(kh_migration *m);
/* QEMU's events reach on_vm_event (once per daemon): the source's phase
 * machine, and the target's commits waiting for the load to end. */
void kh_migrate_hook(kh_manager *mgr);

/* migrate_peer.c */
/* POST (body non-NULL) or GET the target's route path; *out (may be NULL)
 * its JSON reply. */
int kh_migrate_peer_call(kh_migration *m, const char *path, const json_t *body, json_t **out,
                         kh_err *err);
void kh_migrate_peer_close(kh_migration *m);

/* migrate_prep.c */
/* The target's prepare call, then its status polled until its QEMU listens. */
void kh_migrate_prepare(kh_migration *m);
/* calc-dirty-rate; the forecast once it is in (a paused copy measures
 * nothing: its forecast is made at prepare's first tick). PREPARED is fed
 * once the forecast and the target are in. */
void kh_migrate_dirty_rate(kh_migration *m);

/* migrate_target.c */
/* The MIGRATION event "completed" of an incoming QEMU: its load ended. */
void kh_migrate_target_loaded(kh_manager *mgr, const char *vm_id);

/* migrate_disks.c */
int kh_migrate_disks_collect(kh_migration *m, const kh_inst *v, kh_err *err);
void kh_migrate_disks_nbd_add(kh_migration *m);
void kh_migrate_disks_mirror(kh_migration *m);
void kh_migrate_disks_stop(kh_migration *m);
int kh_migrate_disks_switch_poll(kh_migration *m);
/* A mirror said ready (JOB_STATUS_CHANGE): check them all now, not at the next poll. */
void kh_migrate_disks_check(kh_migration *m);
void kh_migrate_disks_drop(kh_migration *m);
void kh_migrate_disks_shutdown(kh_manager *mgr);

#endif
