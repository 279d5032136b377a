/* test_migrate_fsm.c - the live-migration phase machine (instance/migrate_fsm.c)
 * driven by a simulator of two hosts, their QEMUs and etcd's owner key, with
 * a failure, a kill -9 of either daemon, a cancel, or an etcd outage injected
 * at every step; after each run exactly one QEMU runs the guest, on the
 * owner, and nothing is left behind on the other host. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "instance/migrate_fsm.h"
#include "../kh_test.h"
#include "util/mem.h"

enum { Q_NONE, Q_RUNNING, Q_PAUSED, Q_POST, Q_INCOMING, Q_RECEIVED, Q_DEAD };
enum { SRC = 0, TGT = 1 };

typedef struct side {
    kh_mig_role role;
    kh_mig_phase phase;
    bool up;
    int qemu;
    bool disks, def, nbd, migrating, txn_sent, reported;
} side;

typedef struct qev {
    int who;
    kh_mig_event ev;
    kh_mig_owner owner;
} qev;

/* A step deferred by KH_MIG_A_RETRY_LATER. */
typedef struct deferred {
    int who;
    kh_mig_phase phase;
    uint32_t actions;
} deferred;

typedef struct world {
    side h[2];
    int owner;          /* SRC or TGT: /kvmhost/vms/<id>/owner */
    bool fenced;        /* the migration record says aborted */
    bool txn_out;       /* an owner txn was ever sent (survives a kill) */
    bool local;
    bool prepare_pending;
    qev q[512];
    size_t qh, qt;
    deferred later[64];
    size_t nlater;
    int step;           /* actions run so far */
    int fail_at;        /* this action fails (0: none) */
    int kill_at, kill_who;  /* the daemon dies before this action (0: none) */
    int cancel_at;      /* a cancel reaches the source before this action */
    int etcd_unknown;   /* the next N txns answer "unknown" */
    bool unknown_applies; /* ... while the owner txn did go through */
    bool dirty_high;
    int violations;
    char why[256];
} world;

static void violate(world *w, const char *what)
{
    w->violations++;
    snprintf(w->why, sizeof(w->why), "%s", what);
}

static void enqueue(world *w, int who, kh_mig_event ev, kh_mig_owner owner)
{
    if (w->qt < KH_ARRAY_LEN(w->q))
        w->q[w->qt++] = (qev){ who, ev, owner };
}

static kh_mig_owner owner_seen(const world *w, int who)
{
    if (w->owner == who)
        return who == SRC ? KH_MIG_OWNER_SOURCE : KH_MIG_OWNER_TARGET;
    return who == SRC ? KH_MIG_OWNER_TARGET : KH_MIG_OWNER_SOURCE;
}

/* kh_mig_owner in the source's terms for the migration's two hosts */
static kh_mig_owner owner_abs(const world *w)
{
    return w->owner == SRC ? KH_MIG_OWNER_SOURCE : KH_MIG_OWNER_TARGET;
}

static void kill_daemon(world *w, int who)
{
    w->h[who].up = false;
    if (who == TGT && w->prepare_pending) {
        w->prepare_pending = false;
        enqueue(w, SRC, KH_MIG_EV_FAILED, 0);
    }
}

/* Run one action; false: it failed (FAILED was queued) or the daemon died. */
static bool act(world *w, int who, uint32_t a)
{
    side *s = &w->h[who], *src = &w->h[SRC], *tgt = &w->h[TGT];
    w->step++;
    if (w->cancel_at && w->step == w->cancel_at)
        enqueue(w, SRC, KH_MIG_EV_CANCEL, 0);
    if (w->kill_at && w->step == w->kill_at && who == w->kill_who) {
        kill_daemon(w, who);
        return false;
    }
    if (w->fail_at && w->step == w->fail_at && a != KH_MIG_A_EVENT &&
        a != KH_MIG_A_REPORT_FAIL && a != KH_MIG_A_RETRY_LATER) {
        enqueue(w, who, KH_MIG_EV_FAILED, 0);
        return false;
    }
    switch (a) {
    case KH_MIG_A_DIRTY_RATE:
        enqueue(w, SRC, w->dirty_high ? KH_MIG_EV_DIRTY_HIGH : KH_MIG_EV_DIRTY_OK, 0);
        break;
    case KH_MIG_A_T_PREPARE:
        if (!tgt->up)
            goto fail;
        w->prepare_pending = true;
        enqueue(w, TGT, KH_MIG_EV_INCOMING, 0);
        break;
    case KH_MIG_A_NBD_ADD:
        if (!tgt->nbd)
            goto fail;
        break;
    case KH_MIG_A_MIRROR:
        enqueue(w, SRC, KH_MIG_EV_DISKS_READY, 0);
        break;
    case KH_MIG_A_MIGRATE:
        if (tgt->qemu != Q_INCOMING)
            goto fail;
        src->migrating = true;
        if (w->local) {
            src->qemu = Q_PAUSED; /* pause-before-switchover */
            enqueue(w, SRC, KH_MIG_EV_PRESWITCHOVER, 0);
            break;
        }
        /* shared storage: no pause, QEMU completes on its own */
        src->qemu = Q_POST;
        tgt->qemu = Q_RECEIVED;
        enqueue(w, SRC, KH_MIG_EV_COMPLETED, 0);
        if (tgt->up)
            enqueue(w, TGT, KH_MIG_EV_COMPLETED, 0);
        break;
    case KH_MIG_A_MIRROR_CANCEL:
    case KH_MIG_A_NBD_DEL:
    case KH_MIG_A_EVENT:
    case KH_MIG_A_T_RECONCILE:
    case KH_MIG_A_RETRY_LATER:
        break;
    case KH_MIG_A_CONTINUE:
        if (tgt->qemu != Q_INCOMING)
            goto fail;
        src->qemu = Q_POST;
        tgt->qemu = Q_RECEIVED;
        enqueue(w, SRC, KH_MIG_EV_COMPLETED, 0);
        if (tgt->up)
            enqueue(w, TGT, KH_MIG_EV_COMPLETED, 0);
        break;
    case KH_MIG_A_OWNER_TXN:
        src->txn_sent = true;
        w->txn_out = true;
        if (w->etcd_unknown > 0) {
            w->etcd_unknown--;
            if (w->unknown_applies && w->owner == SRC && !w->fenced)
                w->owner = TGT;
            enqueue(w, SRC, KH_MIG_EV_OWNER, KH_MIG_OWNER_UNKNOWN);
            break;
        }
        if (w->owner == SRC && !w->fenced)
            w->owner = TGT;
        enqueue(w, SRC, KH_MIG_EV_OWNER, owner_abs(w));
        break;
    case KH_MIG_A_FENCE_TXN:
        if (w->etcd_unknown > 0) {
            w->etcd_unknown--;
            enqueue(w, who, KH_MIG_EV_OWNER, KH_MIG_OWNER_UNKNOWN);
            break;
        }
        if (w->owner == SRC)
            w->fenced = true;
        enqueue(w, who, KH_MIG_EV_OWNER, owner_abs(w));
        break;
    case KH_MIG_A_MIGRATE_CANCEL:
        if (src->migrating && src->qemu != Q_POST) {
            src->migrating = false;
            if (tgt->qemu == Q_INCOMING) { /* QEMU exits when its incoming fails */
                tgt->qemu = Q_DEAD;
                if (tgt->up)
                    enqueue(w, TGT, KH_MIG_EV_FAILED, 0);
            }
        }
        break;
    case KH_MIG_A_RESUME:
        if (w->owner != SRC)
            violate(w, "source resumed without being the owner");
        /* after the owner txn went out only the fence makes a resume safe
         * (a completed QEMU before any txn is still the only copy allowed) */
        if (src->qemu == Q_POST && w->txn_out && !w->fenced)
            violate(w, "source resumed after the owner txn without the fence");
        if (src->qemu == Q_PAUSED || src->qemu == Q_POST)
            src->qemu = Q_RUNNING;
        break;
    case KH_MIG_A_T_ABORT:
        if (!tgt->up)
            goto fail;
        enqueue(w, TGT, KH_MIG_EV_ABORT, 0);
        break;
    case KH_MIG_A_T_COMMIT:
        if (!tgt->up)
            goto fail;
        enqueue(w, TGT, KH_MIG_EV_COMMIT, 0);
        break;
    case KH_MIG_A_KILL:
        if (s->qemu != Q_NONE)
            s->qemu = Q_DEAD;
        break;
    case KH_MIG_A_DISKS_DELETE:
        if (who == SRC && w->owner != TGT)
            violate(w, "source deleted its disks while it owns the VM");
        if (who == TGT && w->owner == TGT)
            violate(w, "target deleted the disks of a VM it owns");
        s->disks = false;
        break;
    case KH_MIG_A_FORGET:
        s->def = false;
        break;
    case KH_MIG_A_T_DISKS:
        tgt->disks = true;
        tgt->def = true;
        break;
    case KH_MIG_A_T_INCOMING:
        tgt->def = true;
        tgt->qemu = Q_INCOMING;
        break;
    case KH_MIG_A_T_EXPORT:
        tgt->nbd = true;
        break;
    case KH_MIG_A_T_REPLY:
        if (w->prepare_pending) {
            w->prepare_pending = false;
            enqueue(w, SRC, KH_MIG_EV_PREPARED, 0);
        }
        break;
    case KH_MIG_A_T_NBD_STOP:
        tgt->nbd = false;
        break;
    case KH_MIG_A_T_CONT:
        if (w->owner != TGT)
            violate(w, "target ran the guest without being the owner");
        if (tgt->qemu == Q_INCOMING)
            violate(w, "target ran a guest it had not received");
        if (tgt->qemu == Q_RECEIVED)
            tgt->qemu = Q_RUNNING;
        break;
    case KH_MIG_A_REPORT_FAIL:
        s->reported = true;
        if (who == TGT && w->prepare_pending) {
            w->prepare_pending = false;
            enqueue(w, SRC, KH_MIG_EV_FAILED, 0);
        }
        break;
    default:
        violate(w, "unknown action");
        break;
    }
    return true;
fail:
    enqueue(w, who, KH_MIG_EV_FAILED, 0);
    return false;
}

static void run_actions(world *w, int who, kh_mig_event ev, kh_mig_phase next, uint32_t actions)
{
    for (unsigned i = 0; i < 32; i++) {
        uint32_t a = actions & (1u << i);
        if (a && a != KH_MIG_A_RETRY_LATER && !act(w, who, a))
            return;
    }
    if (ev == KH_MIG_EV_INCOMING)
        enqueue(w, TGT, KH_MIG_EV_READY, 0);
    if ((next == KH_MIG_FINISH || next == KH_MIG_ROLLBACK) &&
        (actions & ~(uint32_t)KH_MIG_A_FENCE_TXN))
        enqueue(w, who, KH_MIG_EV_DONE, 0);
}

static void deliver(world *w, const qev *e)
{
    side *s = &w->h[e->who];
    if (!s->up)
        return; /* a dead daemon hears nothing */
    kh_mig_facts f = {
        .owner = e->owner,
        .local_disks = w->local,
        .owner_txn_sent = s->txn_sent,
        .qemu_alive = s->qemu != Q_NONE && s->qemu != Q_DEAD,
    };
    kh_mig_step st = kh_migrate_fsm_step(s->role, s->phase, e->ev, &f);
    if (getenv("KH_FSM_TRACE"))
        printf("# %s %s + %s(o%d) -> %s %x%s\n", e->who == SRC ? "S" : "T",
               kh_migrate_fsm_phase_name(s->phase), kh_migrate_fsm_event_name(e->ev), e->owner,
               kh_migrate_fsm_phase_name(st.next), st.actions, st.ignored ? " ignored" : "");
    if (st.ignored)
        return;
    s->phase = st.next; /* persisted before the actions run */
    if (e->who == TGT && st.next == KH_MIG_ROLLBACK && w->prepare_pending) {
        w->prepare_pending = false; /* the prepare request gets an error */
        enqueue(w, SRC, KH_MIG_EV_FAILED, 0);
    }
    if (st.actions & KH_MIG_A_RETRY_LATER) {
        if (w->nlater < KH_ARRAY_LEN(w->later))
            w->later[w->nlater++] = (deferred){ e->who, st.next, st.actions };
        return;
    }
    run_actions(w, e->who, e->ev, st.next, st.actions);
}

/* Run until nothing is left: events first; then daemons that died come
 * back (RESTART with the owner they read); then deferred steps; then a
 * target left waiting times out. Bounded. */
static void run(world *w)
{
    for (int guard = 0; guard < 2000; guard++) {
        if (w->qh < w->qt) {
            qev e = w->q[w->qh++];
            deliver(w, &e);
            continue;
        }
        w->qh = w->qt = 0;
        bool acted = false;
        for (int who = 0; who < 2 && !acted; who++) {
            side *s = &w->h[who];
            if (s->up)
                continue;
            s->up = true;
            s->txn_sent = false; /* not persisted */
            acted = true;
            if (s->phase != KH_MIG_NONE && !kh_migrate_fsm_terminal(s->phase)) {
                kh_mig_owner o = owner_seen(w, SRC);
                if (w->etcd_unknown > 0) {
                    w->etcd_unknown--;
                    o = KH_MIG_OWNER_UNKNOWN;
                }
                enqueue(w, who, KH_MIG_EV_RESTART, o);
            }
        }
        if (acted)
            continue;
        if (w->nlater) {
            deferred d = w->later[0];
            memmove(w->later, w->later + 1, --w->nlater * sizeof(w->later[0]));
            if (w->h[d.who].up && w->h[d.who].phase == d.phase)
                run_actions(w, d.who, KH_MIG_EV_DONE, d.phase, d.actions);
            continue;
        }
        side *t = &w->h[TGT];
        if (t->phase == KH_MIG_PREPARE || t->phase == KH_MIG_MEMORY ||
            t->phase == KH_MIG_SWITCH) {
            enqueue(w, TGT, KH_MIG_EV_TIMEOUT, 0);
            continue;
        }
        return;
    }
    violate(w, "did not settle");
}

static void world_init(world *w, bool local)
{
    memset(w, 0, sizeof(*w));
    w->h[SRC] = (side){ .role = KH_MIG_SOURCE, .up = true, .qemu = Q_RUNNING, .disks = true,
                        .def = true };
    w->h[TGT] = (side){ .role = KH_MIG_TARGET, .up = true, .qemu = Q_NONE };
    w->owner = SRC;
    w->local = local;
}

/* After a run: exactly one QEMU runs the guest, on the owner, and the
 * other host holds nothing of it. */
static bool settled_ok(world *w, const char *label)
{
    const side *s = &w->h[SRC], *t = &w->h[TGT];
    int running = (s->qemu == Q_RUNNING) + (t->qemu == Q_RUNNING);
    const char *bad = w->violations ? w->why : NULL;
    if (!bad && running != 1)
        bad = running ? "two QEMUs run the guest" : "no QEMU runs the guest";
    if (!bad && !(s->phase == KH_MIG_DONE || s->phase == KH_MIG_ABORTED))
        bad = "the source did not settle";
    if (!bad && !(t->phase == KH_MIG_NONE || kh_migrate_fsm_terminal(t->phase)))
        bad = "the target did not settle";
    if (!bad && t->qemu == Q_RUNNING) {
        if (w->owner != TGT || s->phase != KH_MIG_DONE || t->phase != KH_MIG_DONE)
            bad = "moved, but owner or phases disagree";
        else if (s->qemu != Q_DEAD || s->def || (w->local && s->disks))
            bad = "moved, but the source kept its QEMU, definition or disks";
        else if (t->nbd || (w->local && !t->disks))
            bad = "moved, but the target still exports or lacks its disks";
    }
    if (!bad && s->qemu == Q_RUNNING) {
        if (w->owner != SRC || s->phase != KH_MIG_ABORTED)
            bad = "stayed, but owner or phase disagree";
        else if (!s->def || !s->disks)
            bad = "stayed, but the source lost its definition or disks";
        else if ((t->qemu != Q_NONE && t->qemu != Q_DEAD) || t->def || t->disks)
            bad = "stayed, but the target kept its QEMU, definition or disks";
        else if (!s->reported)
            bad = "stayed, but the task did not fail";
    }
    if (bad)
        printf("# %s: %s (src %s q%d, tgt %s q%d, owner %s)\n", label, bad,
               kh_migrate_fsm_phase_name(s->phase), s->qemu,
               kh_migrate_fsm_phase_name(t->phase), t->qemu, w->owner == SRC ? "S" : "T");
    return bad == NULL;
}

static int clean_run(world *w, bool local)
{
    world_init(w, local);
    enqueue(w, SRC, KH_MIG_EV_START, 0);
    run(w);
    return w->step;
}

static void test_clean_runs(void)
{
    for (int local = 0; local < 2; local++) {
        world w;
        clean_run(&w, local);
        CHECK(settled_ok(&w, local ? "clean local" : "clean shared"));
        CHECK(w.owner == TGT);
        CHECK(w.h[TGT].qemu == Q_RUNNING);
    }
}

/* A failure of each action in turn, with local and shared disks. */
static void test_fail_each_step(void)
{
    for (int local = 0; local < 2; local++) {
        world w;
        int n = clean_run(&w, local);
        for (int k = 1; k <= n + 2; k++) {
            world_init(&w, local);
            w.fail_at = k;
            enqueue(&w, SRC, KH_MIG_EV_START, 0);
            run(&w);
            char label[64];
            snprintf(label, sizeof(label), "fail at %d (%s)", k, local ? "local" : "shared");
            CHECK(settled_ok(&w, label));
        }
    }
}

/* kill -9 of either daemon before each action, restarted later. */
static void test_kill_each_step(void)
{
    for (int local = 0; local < 2; local++) {
        world w;
        int n = clean_run(&w, local);
        for (int who = 0; who < 2; who++)
            for (int k = 1; k <= n + 2; k++)
                for (int unknown = 0; unknown < 3; unknown++) {
                    world_init(&w, local);
                    w.kill_at = k;
                    w.kill_who = who;
                    w.etcd_unknown = unknown; /* etcd unreachable at the restart */
                    enqueue(&w, SRC, KH_MIG_EV_START, 0);
                    run(&w);
                    char label[96];
                    snprintf(label, sizeof(label), "kill %s at %d, etcd unknown x%d (%s)",
                             who == SRC ? "source" : "target", k, unknown,
                             local ? "local" : "shared");
                    CHECK(settled_ok(&w, label));
                }
    }
}

/* A cancel arriving before each action: rolled back before the switch,
 * ignored after (too late), and in every case one QEMU runs. */
static void test_cancel_each_step(void)
{
    for (int local = 0; local < 2; local++) {
        world w;
        int n = clean_run(&w, local);
        for (int k = 1; k <= n; k++) {
            world_init(&w, local);
            w.cancel_at = k;
            enqueue(&w, SRC, KH_MIG_EV_START, 0);
            run(&w);
            char label[64];
            snprintf(label, sizeof(label), "cancel at %d (%s)", k, local ? "local" : "shared");
            CHECK(settled_ok(&w, label));
        }
        /* a cancel at the first step rolls back */
        world_init(&w, local);
        w.cancel_at = 1;
        enqueue(&w, SRC, KH_MIG_EV_START, 0);
        run(&w);
        CHECK(w.h[SRC].phase == KH_MIG_ABORTED && w.owner == SRC);
    }
}

/* The owner txn's answer lost (applied or not), the fence's answers lost. */
static void test_etcd_unknown(void)
{
    for (int local = 0; local < 2; local++)
        for (int applies = 0; applies < 2; applies++)
            for (int n = 1; n <= 4; n++) {
                world w;
                world_init(&w, local);
                w.etcd_unknown = 0;
                w.unknown_applies = applies;
                enqueue(&w, SRC, KH_MIG_EV_START, 0);
                /* run to the switch, then make etcd answer "unknown" n times
                 * (shared storage: the owner txn goes with the step into the
                 * switch, so stop before the source hears "completed") */
                while (w.qh < w.qt && w.h[SRC].phase != KH_MIG_SWITCH) {
                    if (w.q[w.qh].who == SRC && w.q[w.qh].ev == KH_MIG_EV_COMPLETED)
                        break;
                    qev e = w.q[w.qh++];
                    deliver(&w, &e);
                }
                w.etcd_unknown = n;
                run(&w);
                char label[64];
                snprintf(label, sizeof(label), "etcd unknown x%d applies=%d (%s)", n, applies,
                         local ? "local" : "shared");
                CHECK(settled_ok(&w, label));
                /* applied: the fence finds owner T and the move goes on; not applied:
                 * the fence wins and the migration rolls back */
                CHECK(w.owner == (applies ? TGT : SRC));
            }
}

static void test_dirty_rate_refused(void)
{
    world w;
    world_init(&w, false);
    w.dirty_high = true;
    enqueue(&w, SRC, KH_MIG_EV_START, 0);
    run(&w);
    CHECK(settled_ok(&w, "dirty rate too high"));
    CHECK(w.h[SRC].phase == KH_MIG_ABORTED);
    /* the target's prepare ran beside the measurement: rolled back */
    CHECK(w.h[TGT].phase == KH_MIG_ABORTED || w.h[TGT].phase == KH_MIG_NONE);
}

/* The dirty-rate measurement and the target's prepare start together (they
 * wait on different things); DIRTY_OK alone moves nothing, PREPARED (fed
 * once both are in) goes on; the fast switch on shared storage: completed
 * in memory sends the owner txn at once. */
static void test_prepare_overlaps(void)
{
    kh_mig_facts shared = { 0 }, local = { .local_disks = true };
    kh_mig_step st = kh_migrate_fsm_step(KH_MIG_SOURCE, KH_MIG_NONE, KH_MIG_EV_START, &shared);
    CHECK(st.next == KH_MIG_PREPARE && (st.actions & KH_MIG_A_DIRTY_RATE) &&
          (st.actions & KH_MIG_A_T_PREPARE));
    st = kh_migrate_fsm_step(KH_MIG_SOURCE, KH_MIG_PREPARE, KH_MIG_EV_DIRTY_OK, &shared);
    CHECK(st.next == KH_MIG_PREPARE && st.actions == 0);
    st = kh_migrate_fsm_step(KH_MIG_SOURCE, KH_MIG_PREPARE, KH_MIG_EV_PREPARED, &shared);
    CHECK(st.next == KH_MIG_MEMORY && (st.actions & KH_MIG_A_MIGRATE));
    st = kh_migrate_fsm_step(KH_MIG_SOURCE, KH_MIG_PREPARE, KH_MIG_EV_PREPARED, &local);
    CHECK(st.next == KH_MIG_DISKS && (st.actions & KH_MIG_A_MIRROR));
    st = kh_migrate_fsm_step(KH_MIG_SOURCE, KH_MIG_MEMORY, KH_MIG_EV_COMPLETED, &shared);
    CHECK(st.next == KH_MIG_SWITCH && st.actions & KH_MIG_A_OWNER_TXN);
}

/* The restart rows, named: "restarted in phase X on side Y with owner Z". */
static void test_restart_rows(void)
{
    kh_mig_facts own_s = { .owner = KH_MIG_OWNER_SOURCE };
    kh_mig_facts own_t = { .owner = KH_MIG_OWNER_TARGET, .local_disks = true };
    kh_mig_facts own_u = { .owner = KH_MIG_OWNER_UNKNOWN };
    kh_mig_step st;
    /* source before the switch: roll back, whatever etcd says */
    for (kh_mig_phase p = KH_MIG_PREPARE; p <= KH_MIG_MEMORY; p++) {
        st = kh_migrate_fsm_step(KH_MIG_SOURCE, p, KH_MIG_EV_RESTART, &own_u);
        CHECK(st.next == KH_MIG_ROLLBACK && (st.actions & KH_MIG_A_RESUME));
    }
    /* source in switch: the owner decides; unknown touches nothing */
    st = kh_migrate_fsm_step(KH_MIG_SOURCE, KH_MIG_SWITCH, KH_MIG_EV_RESTART, &own_t);
    CHECK(st.next == KH_MIG_FINISH && (st.actions & KH_MIG_A_KILL) &&
          (st.actions & KH_MIG_A_DISKS_DELETE) && !(st.actions & KH_MIG_A_RESUME));
    st = kh_migrate_fsm_step(KH_MIG_SOURCE, KH_MIG_SWITCH, KH_MIG_EV_RESTART, &own_s);
    CHECK(st.next == KH_MIG_SWITCH && st.actions == KH_MIG_A_FENCE_TXN);
    st = kh_migrate_fsm_step(KH_MIG_SOURCE, KH_MIG_SWITCH, KH_MIG_EV_RESTART, &own_u);
    CHECK(st.next == KH_MIG_SWITCH &&
          !(st.actions & (KH_MIG_A_RESUME | KH_MIG_A_KILL | KH_MIG_A_T_COMMIT)));
    /* target: prepare rolls back; memory/switch fence first; finish goes on */
    st = kh_migrate_fsm_step(KH_MIG_TARGET, KH_MIG_PREPARE, KH_MIG_EV_RESTART, &own_s);
    CHECK(st.next == KH_MIG_ROLLBACK && (st.actions & KH_MIG_A_KILL));
    st = kh_migrate_fsm_step(KH_MIG_TARGET, KH_MIG_MEMORY, KH_MIG_EV_RESTART, &own_t);
    CHECK(st.next == KH_MIG_MEMORY && st.actions == KH_MIG_A_FENCE_TXN);
    st = kh_migrate_fsm_step(KH_MIG_TARGET, KH_MIG_SWITCH, KH_MIG_EV_OWNER, &own_t);
    CHECK(st.next == KH_MIG_FINISH && (st.actions & KH_MIG_A_T_CONT));
    st = kh_migrate_fsm_step(KH_MIG_TARGET, KH_MIG_SWITCH, KH_MIG_EV_OWNER, &own_s);
    CHECK(st.next == KH_MIG_ROLLBACK && !(st.actions & KH_MIG_A_T_CONT));
    st = kh_migrate_fsm_step(KH_MIG_TARGET, KH_MIG_FINISH, KH_MIG_EV_RESTART, &own_t);
    CHECK(st.next == KH_MIG_FINISH && (st.actions & KH_MIG_A_T_CONT));
    /* terminal phases ignore everything but repeats */
    st = kh_migrate_fsm_step(KH_MIG_SOURCE, KH_MIG_DONE, KH_MIG_EV_RESTART, &own_s);
    CHECK(st.ignored && st.next == KH_MIG_DONE);
    st = kh_migrate_fsm_step(KH_MIG_SOURCE, KH_MIG_SWITCH, KH_MIG_EV_CANCEL, NULL);
    CHECK(st.ignored);
}

/* No row sends the guest running on the target without owner T, nor
 * resumes the source after the switch without owner S. */
static void test_rows_keep_the_owner_rule(void)
{
    kh_mig_facts f = { 0 };
    for (int role = 0; role < 2; role++)
        for (int p = 0; p < KH_MIG_PHASES; p++)
            for (int e = 0; e < KH_MIG_EVENTS; e++)
                for (int o = 0; o < 4; o++)
                    for (int bits = 0; bits < 16; bits++) {
                        f.owner = (kh_mig_owner)o;
                        f.local_disks = bits & 1;
                        f.owner_txn_sent = bits & 2;
                        f.qemu_alive = bits & 4;
                        kh_mig_step st = kh_migrate_fsm_step((kh_mig_role)role, (kh_mig_phase)p,
                                                             (kh_mig_event)e, &f);
                        if (role == KH_MIG_TARGET && (st.actions & KH_MIG_A_T_CONT))
                            CHECK(e == KH_MIG_EV_COMMIT || f.owner == KH_MIG_OWNER_TARGET ||
                                  p == KH_MIG_FINISH);
                        if (role == KH_MIG_SOURCE && p == KH_MIG_SWITCH &&
                            (st.actions & KH_MIG_A_RESUME))
                            CHECK(f.owner == KH_MIG_OWNER_SOURCE && e == KH_MIG_EV_OWNER);
                        if (kh_migrate_fsm_terminal((kh_mig_phase)p))
                            CHECK((int)st.next == p);
                        CHECK(kh_migrate_fsm_phase_name(st.next) != NULL);
                    }
    for (unsigned i = 0; i < KH_MIG_ACTIONS; i++)
        CHECK(kh_migrate_fsm_action_name(1u << i) != NULL);
    CHECK(kh_migrate_fsm_phase_parse("switch") == KH_MIG_SWITCH);
    CHECK(kh_migrate_fsm_phase_parse("nope") == -1);
}

int main(void)
{
    RUN(test_clean_runs);
    RUN(test_fail_each_step);
    RUN(test_kill_each_step);
    RUN(test_cancel_each_step);
    RUN(test_etcd_unknown);
    RUN(test_dirty_rate_refused);
    RUN(test_prepare_overlaps);
    RUN(test_restart_rows);
    RUN(test_rows_keep_the_owner_rule);
    TEST_DONE();
}
