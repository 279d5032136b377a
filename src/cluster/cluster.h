/* cluster.h - the cluster module of kvmhostd: membership of this host in a
 * cluster of kvmhost hosts coordinated through etcd.
 *
 * Opt-in: a daemon that never ran `cluster create` or `cluster join` has no
 * cluster (kh_cluster_enabled false) and touches no etcd; SQLite stays its
 * only store. In a cluster the daemon either supervises a local etcd member
 * (etcdproc.c; data in STATE_DIR/etcd) or uses an existing etcd cluster
 * (--etcd-endpoints). Each host registers /kvmhost/members/<host-id> on a
 * lease of its own, kept alive on the loop (member.c); a host that cannot
 * renew it by TTL - margin on its monotonic clock no longer acts as an
 * owner ("fenced", shown in the status). Joining goes through an existing
 * member's TCP API with a one-time token (join.c, form.c). hosts.c renders
 * the views (GET /api/v1/cluster, GET /api/v1/hosts).
 *
 * Files: member.c (this interface's life cycle, lease, registration, the
 * members cache), etcdproc.c (the supervised etcd), join.c (create, tokens,
 * join, leave, remove), hosts.c (views), config.c + schema.c (the cluster
 * table in SQLite, migration 10).
 */
#ifndef KH_CLUSTER_CLUSTER_H
#define KH_CLUSTER_CLUSTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "store/store.h"
#include "util/err.h"

typedef struct kh_cluster kh_cluster;

/* What this host has right now, for its member record (the daemon fills it
 * from the VM manager and the kernel). */
typedef void (*kh_cluster_usage_fn)(void *opaque, unsigned *vms, uint64_t *memory_free_mib);

/* This host's VMs (kh_manager_list_json's array, a new reference): the
 * daemon gives it, so that a host that joins claims the VMs it has. */
typedef json_t *(*kh_cluster_vms_fn)(void *opaque);
/* The host-to-host TLS material is ready (after create, join, or at start
 * when it exists): serve listen ("ADDR:PORT") with TLS (cert, key files)
 * requiring a client certificate from the CA file ca. All NULL: stop (leave). */
typedef void (*kh_cluster_tls_fn)(void *opaque, const char *listen, const char *ca,
                                  const char *cert, const char *key);

/* A VM of another host changed (the watch of /kvmhost/vms/ saw it): type
 * "vm.created", "vm.state" or "vm.deleted", the VM's name, data (stolen:
 * {state, previous, reason} for vm.state, each with "host", the owner's
 * name). The daemon publishes it on the local event bus. */
typedef void (*kh_cluster_event_fn)(void *opaque, const char *type, const char *vm,
                                    json_t *data);

typedef struct kh_cluster_config {
    const char *state_dir;
    const char *host_name;      /* the member's name (NULL: instance name, else hostname) */
    const char *instance;       /* the daemon instance (may be NULL) */
    const char *advertise;      /* the address other hosts reach this one at (NULL:
                                 * the host part of listen) */
    const char *listen;         /* the daemon's TCP API ADDR:PORT (NULL: none) */
    bool tls;                   /* the TCP API speaks TLS */
    const char *tls_cert;       /* its certificate (PEM file): join tokens pin its key */
    const char *etcd_endpoints; /* comma-separated URLs of an existing etcd cluster (NULL:
                                 * a local etcd member, supervised) */
    const char *etcd_ca, *etcd_cert, *etcd_key; /* client TLS for etcd_endpoints */
    const char *etcd_binary;    /* NULL: /usr/bin/etcd */
    unsigned ttl_s;             /* member lease TTL (0: 10 s) */
    unsigned etcd_client_port;  /* 0: 2379 */
    unsigned etcd_peer_port;    /* 0: 2380 */
    kh_cluster_usage_fn usage;
    void *usage_opaque;
    kh_cluster_vms_fn local_vms;
    void *local_vms_opaque;
    kh_cluster_tls_fn tls_ready;
    void *tls_opaque;
    kh_cluster_event_fn event;
    void *event_opaque;
} kh_cluster_config;

/* Load the cluster configuration from the store and, when this host is a
 * member, start its etcd (local mode) and its registration. A member that
 * cannot reach etcd yet keeps retrying on the loop. NULL with err only on a
 * store error or bad options. */
kh_cluster *kh_cluster_new(uv_loop_t *loop, kh_store *store, const kh_cluster_config *cfg,
                           kh_err *err);
/* Daemon shutdown: the lease is revoked (this host shows offline at once),
 * the local etcd member is stopped (it stays a member and starts again with
 * the next daemon). The loop must run once more to close the handles. */
void kh_cluster_free(kh_cluster *c);

bool kh_cluster_enabled(const kh_cluster *c);
/* Whether cluster-wide writes can be made now: -1 with err (KH_E_UNAVAILABLE,
 * a message saying why) when not (no cluster: KH_E_INVALID). */
int kh_cluster_writable(const kh_cluster *c, kh_err *err);

/* ---- the API's actions (form.c, async.c): none blocks the loop ----
 * Each *_async starts the action and returns 0: its callback runs once,
 * later, on the loop, with the outcome; or -1 with err when it cannot
 * start (the callback is not called). */
typedef void (*kh_cluster_done_cb)(void *opaque, const kh_err *err);
/* Make this host the first member of a new cluster (name may be NULL). */
int kh_cluster_create_async(kh_cluster *c, const char *name, kh_cluster_done_cb cb,
                            void *opaque, kh_err *err);
/* A one-time join token (a new string), valid for ttl_s seconds
 * (blocking: for tests and tools without a loop). */
char *kh_cluster_token(kh_cluster *c, int64_t ttl_s, kh_err *err);
/* The same for the API: cb gets the token, or NULL and err. */
typedef void (*kh_cluster_token_cb)(void *opaque, const char *token, const kh_err *err);
int kh_cluster_token_async(kh_cluster *c, int64_t ttl_s, kh_cluster_token_cb cb, void *opaque,
                           kh_err *err);
/* On a member: admit a host that presents a join token (consumed). body:
 * {host_id, name, peer_url, csr, address}. cb gets the answer (stolen:
 * {cluster, cluster_id, mode, initial_cluster, endpoints, certificate,
 * ca}) or NULL and err: KH_E_UNAUTHORIZED for a bad or used token. */
typedef void (*kh_cluster_admit_cb)(void *opaque, json_t *answer, const kh_err *err);
int kh_cluster_admit_async(kh_cluster *c, const char *token, const json_t *body,
                           kh_cluster_admit_cb cb, void *opaque, kh_err *err);
/* On the joining host: ask the member at address (HOST:PORT or a URL) to
 * admit this host with token, then start its etcd member and register. */
int kh_cluster_join_async(kh_cluster *c, const char *address, const char *token,
                          kh_cluster_done_cb cb, void *opaque, kh_err *err);
/* Leave the cluster: remove this host's etcd member and record, stop and
 * delete the local etcd data; the host is single again. */
int kh_cluster_leave_async(kh_cluster *c, kh_cluster_done_cb cb, void *opaque, kh_err *err);
/* Remove another host (by name or host id) from the cluster. */
int kh_cluster_remove_async(kh_cluster *c, const char *host, kh_cluster_done_cb cb,
                            void *opaque, kh_err *err);

/* ---- hosts.c: views ---- */
/* GET /api/v1/cluster: a new object. */
json_t *kh_cluster_status_json(kh_cluster *c);
/* GET /api/v1/hosts: {"hosts": [...]} (a single host lists itself). */
json_t *kh_cluster_hosts_json(kh_cluster *c);
/* GET /api/v1/cluster/ca: {ca (PEM), cluster_url, fingerprint}. */
json_t *kh_cluster_ca_json(kh_cluster *c, kh_err *err);

/* ---- pki.c: the CA key's backup ---- */
/* {ca, key (PKCS#8 PEM encrypted with pass), fingerprint, cluster}: a new
 * object. KH_E_CONFLICT when this host does not hold the CA key. */
json_t *kh_cluster_ca_export(kh_cluster *c, const char *pass, kh_err *err);
/* Install an exported CA key on this member: ca must be this cluster's CA
 * (KH_E_CONFLICT), pass must decrypt key and key must be its key
 * (KH_E_INVALID). This host then admits joins too. */
int kh_cluster_ca_import(kh_cluster *c, const char *ca, const char *key, const char *pass,
                         kh_err *err);

/* ---- vms.c: ownership and the cluster-wide VM view ----
 * The first five are the instance layer's hooks (kh_manager_cluster_ops in
 * instance/manager.h; opaque is the kh_cluster): they do nothing on a
 * single host. */
int kh_cluster_vm_claim(void *opaque, const char *id, const char *name, kh_err *err);
void kh_cluster_vm_unclaim(void *opaque, const char *id, const char *name);
int kh_cluster_vm_may_run(void *opaque, const char *id, const char *name, kh_err *err);
/* The claim and the may-run check off the loop (kh_etcd_request_async):
 * done runs once, later, with NULL or the error; -1 with err (done not
 * called) when nothing can be sent (no quorum). A may-run check that said
 * yes lets kh_cluster_vm_may_run answer from it for a short while (the
 * start that follows reads no etcd on the loop). On a single host done
 * runs at once. */
typedef void (*kh_cluster_vm_done_cb)(void *done_opaque, const kh_err *err);
int kh_cluster_vm_claim_async(void *opaque, const char *id, const char *name,
                              kh_cluster_vm_done_cb done, void *done_opaque, kh_err *err);
int kh_cluster_vm_may_run_async(void *opaque, const char *id, const char *name,
                                kh_cluster_vm_done_cb done, void *done_opaque, kh_err *err);
void kh_cluster_vm_changed(void *opaque, const char *id, const json_t *vm);
void kh_cluster_vm_deleted(void *opaque, const char *id, const char *name);
/* The VMs other hosts own (their views with "host"), only host's when not
 * NULL: a new array (empty on a single host) whose items are shared with
 * the cached view: read them, do not change them. */
json_t *kh_cluster_vms_remote(kh_cluster *c, const char *host);
/* The same (every host's), as the JSON text of the array's items, comma-
 * separated ("" none): built once per change of the view (a watch event,
 * a host record), not per request. Borrowed until the next change. */
const char *kh_cluster_vms_remote_text(kh_cluster *c);
/* This host's name (the single host's too). */
const char *kh_cluster_host_name(const kh_cluster *c);
/* Is the vm named name owned by another host? 1 with *host (its name) and
 * *url (its host-to-host URL, NULL when unknown) as new strings; 0 not. */
int kh_cluster_vm_remote(kh_cluster *c, const char *name, char **host, char **url);

/* ---- forward.c: a request sent to another host over mutual TLS ----
 * Runs on the loop's thread pool; cb runs on the loop. status is the other
 * host's HTTP status (0 with err when it could not be reached). */
typedef void (*kh_forward_cb)(void *opaque, int status, const char *content_type,
                              const char *body, size_t len, const kh_err *err);
int kh_cluster_forward(kh_cluster *c, const char *url, const char *method, const char *target,
                       const char *content_type, const char *forwarded, const char *body,
                       size_t len, kh_forward_cb cb, void *opaque, kh_err *err);

/* The host-to-host TLS files (cluster CA, this host's certificate and key)
 * as new path strings, for a WebSocket relayed to another host. -1 with
 * err (KH_E_UNAVAILABLE) when this host has none. */
int kh_cluster_peer_tls(kh_cluster *c, char **ca, char **cert, char **key, kh_err *err);

/* Is the certificate with this SHA-256 fingerprint (hex) one of a host
 * removed from the cluster (/kvmhost/removed/, watched and mirrored)? The
 * host-to-host listener refuses it even though the CA signed it. */
bool kh_cluster_cert_revoked(kh_cluster *c, const char *fingerprint);

/* ---- crl.c: the CRL signed for a host without the CA key ----
 * POST /api/v1/cluster/crl (host-to-host only): {"crl": PEM} listing the
 * serials (hex strings), signed by the cluster CA. KH_E_CONFLICT on a host
 * without the CA key. */
json_t *kh_cluster_crl_sign(kh_cluster *c, const json_t *serials, kh_err *err);

/* ---- peer.c: lookups for a live migration (instance/migrate.c) ---- */
typedef struct kh_cluster_member {
    char host_id[37];
    char name[128];
    char address[128];          /* the host's advertised address */
    char api_url[256];          /* its TCP API */
    char cluster_url[256];      /* its host-to-host listener (mutual TLS; "" if none) */
    bool self, online;
} kh_cluster_member;
/* The member called name (or with that host id). -1 with err
 * (KH_E_NOTFOUND, KH_E_INVALID without a cluster). */
int kh_cluster_member_find(kh_cluster *c, const char *name, kh_cluster_member *out,
                           kh_err *err);
/* This host's id (NULL without a cluster). */
const char *kh_cluster_host_id(const kh_cluster *c);
/* QEMU's TLS files for live migration and NBD (pki.c), in
 * STATE_DIR/qemu-tls: ca-cert.pem and the host's certificate and key as
 * server-cert.pem/server-key.pem and client-cert.pem/client-key.pem, group
 * gid (QEMU's) may read them. The directory (a new string), or NULL: with
 * err set on a failure, untouched when this host has no certificate. */
char *kh_cluster_qemu_tls_dir(kh_cluster *c, gid_t gid, kh_err *err);
/* /kvmhost/migrations/<vm-id>: write it, read it (a new object; KH_E_NOTFOUND). */
int kh_cluster_migration_put(kh_cluster *c, const char *vm_id, const json_t *rec, kh_err *err);
json_t *kh_cluster_migration_get(kh_cluster *c, const char *vm_id, kh_err *err);
/* The owner of vm_id now: its host id, "" when none. 0, or -1 with err. */
int kh_cluster_owner_get(kh_cluster *c, const char *vm_id, char *owner, size_t size,
                         kh_err *err);
/* The owner move, this host -> host id `to` (a txn comparing the owner is
 * this host and the migration is not fenced). 0 with owner_out = the owner
 * after it (to: moved), -1 with err (the outcome unknown). The first
 * record of a migration (phase "prepare") lifts an old fence. */
int kh_cluster_owner_move(kh_cluster *c, const char *vm_id, const char *to, char *owner_out,
                          size_t owner_size, kh_err *err);
/* The fence, from either side: while the owner is still `source`, mark the
 * migration fenced (the owner move then fails). 0 with owner_out = the
 * owner (source: fenced; another: the move won first), -1 with err. */
int kh_cluster_migration_fence(kh_cluster *c, const char *vm_id, const char *source,
                               char *owner_out, size_t owner_size, kh_err *err);

#endif
