/* migrate.h - live migration of a running VM to another cluster host
 * (disks on shared pools keep their paths, the others are copied over
 * NBD): the source side (migrate.c) runs the
 * phase machine (instance/migrate_fsm.h) on the loop, the target side
 * (migrate_target.c) answers the host-to-host routes. Cluster work (the member record, the
 * migration record /kvmhost/migrations/<vm-id>, the owner move in etcd)
 * comes in through kh_migrate_ops: the instance layer does not know etcd.
 * See docs/migration.md.
 */
#ifndef KH_INSTANCE_MIGRATE_H
#define KH_INSTANCE_MIGRATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <stdint.h>

#include "instance/manager.h"
#include "instance/task.h"
#include "util/err.h"

typedef struct kh_migrate_peer {
    char host_id[37];
    char name[128];
    char address[128];   /* where its QEMU listens for the migration */
    char api_url[256];   /* where the host-to-host routes are called: its
                          * host-to-host listener (mutual TLS with the files below) */
    char tls_ca[512];    /* the cluster CA (the only trust), this host's */
    char tls_cert[512];  /* certificate and key as the client's ("": none) */
    char tls_key[512];
    char self_id[37];    /* this host's id */
    bool online;         /* its lease is alive */
} kh_migrate_peer;

typedef struct kh_migrate_ops {
    void *opaque;
    /* Owner of vm_id: this host -> to (a host id). 0 with owner = the owner
     * after it; -1: outcome unknown. */
    int (*owner_move)(void *opaque, const char *vm_id, const char *to, char *owner,
                      size_t owner_size, kh_err *err);
    /* Write /kvmhost/migrations/<vm_id> (rec borrowed). */
    int (*record)(void *opaque, const char *vm_id, const json_t *rec, kh_err *err);
    /* Restart resolution: the record (a new object), the owner's host id
     * now ("" when none), a member by host id (peer's self_id filled too). */
    json_t *(*record_get)(void *opaque, const char *vm_id, kh_err *err);
    int (*owner_get)(void *opaque, const char *vm_id, char *owner, size_t owner_size,
                     kh_err *err);
    int (*peer_find)(void *opaque, const char *host_id, kh_migrate_peer *peer,
                     kh_err *err);
    /* QEMU's TLS files (tls-creds-x509 layout) readable by group gid: the
     * directory (a new string), or NULL (no TLS: err untouched; or err). */
    char *(*qemu_tls)(void *opaque, gid_t gid, kh_err *err);
    /* The fence (kh_cluster_migration_fence): 0 with owner, -1 unknown. */
    int (*fence)(void *opaque, const char *vm_id, const char *source, char *owner,
                 size_t owner_size, kh_err *err);
} kh_migrate_ops;


/* What the user asked for besides the target. */
typedef struct kh_migrate_opts {
    uint64_t max_bandwidth;   /* bytes/s for the copies (0: unlimited) */
    unsigned downtime_ms;     /* the downtime limit asked for (0: 300) */
    unsigned max_downtime_ms; /* how far the forecast may raise it (0: 2000) */
    bool force;               /* go even when the forecast says it never converges */
} kh_migrate_opts;

/* Source: migrate the running VM name to peer; the task ("vm.migrate")
 * ends when the VM runs on the peer (or failed, the VM running here). Its
 * disks on pools not marked shared are copied to the peer's pools of the
 * same names (NBD + blockdev-mirror) and deleted here at the end. The task
 * can be cancelled (kh_tasks_cancel) until the switch-over begins. */
kh_task *kh_migrate_start(kh_manager *mgr, const char *name, const kh_migrate_peer *peer,
                          const kh_migrate_opts *opts, const kh_migrate_ops *ops,
                          kh_err *err);

/* Daemon start: every migration this host was the source of and that did
 * not end is resolved by the phase machine's restart rows (before the
 * switch: cancel, cont, the target aborts; after the owner moved: the
 * target commits, this QEMU goes), retried each second until the VM's QEMU
 * is reattached (or known gone) and the cluster answers; a minute at most.
 * As a target: an incoming migration left pending is resolved by the owner
 * in etcd (moved here: the guest runs here; else the incoming QEMU and the
 * disk copies go). */
void kh_migrate_restart(kh_manager *mgr, const kh_migrate_ops *ops);

/* Target: the incoming migrations a previous daemon left pending are
 * resolved by the fence (kh_migrate_restart calls it). */
void kh_migrate_target_restart(kh_manager *mgr, const kh_migrate_ops *ops);

/* Daemon stop (kh_manager_free): every timer of a migration in progress
 * is closed (the phases are persisted: the next daemon resolves them). */
void kh_migrate_shutdown(kh_manager *mgr);
void kh_migrate_target_shutdown(kh_manager *mgr);

/* Shared by migrate.c and migrate_target.c: the migrations row of vm_id
 * (a failure is logged), and the list of local disks ("pool/name" JSON
 * array; NULL deletes it) this host made (target) or copies (source). */
void kh_migrate_persist(kh_manager *mgr, const char *vm_id, const char *name, const char *role,
                        const char *phase, const char *peer, const char *error);
void kh_migrate_disks_save(kh_manager *mgr, const char *vm_id, const json_t *refs);
/* A new array (empty when none). */
json_t *kh_migrate_disks_load(kh_manager *mgr, const char *vm_id);

/* Target (migrate_target.c; the host-to-host routes
 * /api/v1/migrations/{vm-id}/...). prepare: body {"spec": VM spec,
 * "address": ADDR, "source": HOST-ID, "disks": [{"index", "volume",
 * "format", "size"}], "tls": bool}: the disks are made empty in the pools of the same
 * names, then the VM is defined here with the same id and started
 * `-incoming defer` listening on ADDR:port, the disks exported over NBD on
 * ADDR:nbd_port (both over TLS with the cluster's certificates when
 * "tls"); replies {"port": N, "nbd_port": M} at once (status says
 * when it is ready). */
json_t *kh_migrate_target_prepare(kh_manager *mgr, const char *vm_id, const json_t *body,
                                  const kh_migrate_ops *ops, kh_err *err);
/* {"state": "starting", "reason": "incoming"} once ready ("disks" while
 * they are made, "stopped" with the reason when it failed). */
json_t *kh_migrate_target_status(kh_manager *mgr, const char *vm_id, kh_err *err);
/* The owner moved to this host: cont, running. */
int kh_migrate_target_commit(kh_manager *mgr, const char *vm_id, kh_err *err);
/* Roll back: kill the incoming QEMU, forget the VM, delete the disk copies. */
int kh_migrate_target_abort(kh_manager *mgr, const char *vm_id, kh_err *err);

#endif
