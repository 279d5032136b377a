/* cluster_int.h - what the files of the cluster module share (member.c,
 * etcdproc.c, join.c, hosts.c, config.c). Not for use outside src/cluster.
 */
#ifndef KH_CLUSTER_CLUSTER_INT_H
#define KH_CLUSTER_CLUSTER_INT_H

#include "cluster/cluster.h"
#include "cluster/etcd.h"

#define KH_CLUSTER_PREFIX "/kvmhost/"
#define KH_CLUSTER_MEMBERS KH_CLUSTER_PREFIX "members/" /* on the host's lease: online */
#define KH_CLUSTER_HOSTS KH_CLUSTER_PREFIX "hosts/"     /* no lease: every member */
#define KH_CLUSTER_TOKENS KH_CLUSTER_PREFIX "join-tokens/"
#define KH_CLUSTER_INFO KH_CLUSTER_PREFIX "cluster"
#define KH_CLUSTER_REMOVED KH_CLUSTER_PREFIX "removed/" /* hosts removed (or left): never back */
#define KH_CLUSTER_ETCD_TIMEOUT_MS 2000
/* In an error that the joining host retries by itself (admit's 503). */
#define KH_CLUSTER_RETRY_HINT "try again"

struct kh_cluster_form;

/* The persisted configuration (config.c: the `cluster` table). */
typedef struct kh_cluster_conf {
    char name[64];            /* the cluster's name */
    char cluster_id[37];
    char host_id[37];         /* this host's id (also its etcd member name) */
    char mode[16];            /* "local" (supervised etcd) or "external" */
    char *initial_cluster;    /* local: the --initial-cluster it was started with */
    char *endpoints;          /* comma-separated etcd client URLs */
    double created_at;
} kh_cluster_conf;

int kh_cluster_conf_load(kh_store *st, kh_cluster_conf *out, kh_err *err); /* 1, 0 none, -1 */
int kh_cluster_conf_save(kh_store *st, const kh_cluster_conf *conf, kh_err *err);
int kh_cluster_conf_clear(kh_store *st, kh_err *err);
void kh_cluster_conf_fini(kh_cluster_conf *conf);

/* etcdproc.c: one supervised etcd member. */
typedef struct kh_etcdproc kh_etcdproc;
typedef struct kh_etcdproc_spec {
    const char *binary;
    const char *name;          /* the member name: the host id */
    const char *data_dir;
    const char *log_file;
    const char *peer_url;      /* http://ADDR:2380 */
    const char *client_url;    /* http://ADDR:2379 */
    const char *initial_cluster;
    bool existing;             /* --initial-cluster-state existing */
    const char *cluster_token;
    const char *ca, *cert, *key; /* mutual TLS on both ports (NULL: plain HTTP) */
    const char *crl;           /* --client-crl-file (with ca; NULL: none) */
} kh_etcdproc_spec;
kh_etcdproc *kh_etcdproc_new(uv_loop_t *loop, const kh_etcdproc_spec *spec, kh_err *err);
/* SIGTERM, wait (up to 5 s, then SIGKILL), reap. NULL is fine. */
void kh_etcdproc_free(kh_etcdproc *p);
int kh_etcdproc_pid(const kh_etcdproc *p);
unsigned kh_etcdproc_restarts(const kh_etcdproc *p);

/* A prefix of etcd mirrored in memory: listed, then watched. */
typedef struct kh_cluster_cache {
    struct kh_cluster *c;
    const char *prefix;
    json_t *map;              /* host id -> record */
    kh_etcd_watch *watch;
    int64_t resume_rev;       /* mirrored at (mirror.c): watch from the next one */
} kh_cluster_cache;

struct kh_cluster {
    uv_loop_t *loop;
    kh_store *store;
    char *state_dir, *host_name, *advertise, *api_url, *etcd_binary;
    char *api_cert;           /* the TCP API's certificate (PEM file; NULL: no TLS) */
    char *ext_endpoints, *etcd_ca, *etcd_cert, *etcd_key;
    kh_cluster_usage_fn usage;
    void *usage_opaque;

    kh_cluster_conf conf;
    kh_etcd *etcd;
    kh_etcdproc *proc;
    int64_t lease;
    kh_etcd_keeper *keeper;
    kh_etcd_watch *watch;
    uv_timer_t *timer;        /* registration retries, record refresh */
    kh_cluster_cache hosts;   /* /kvmhost/hosts/: every member, online or not */
    kh_cluster_cache live;    /* /kvmhost/members/: the online ones (leases) */
    kh_cluster_cache revoked; /* /kvmhost/removed/: hosts removed, their certificates */
    uint64_t renewed_ms;      /* monotonic time the last renewal (or the grant) was sent */
    char last_error[512];
    char *record;             /* the member record as last written */
    json_t *etcd_members;     /* etcd's member list as last read (NULL: never) */
    int64_t granted_lease;    /* granted, the record not yet written on it */
    uint64_t grant_sent_ms;

    /* vms.c: ownership and the cluster-wide view */
    json_t *vms;              /* vm id -> {owner, spec}: /kvmhost/vms/, watched */
    kh_etcd_watch *vms_watch;
    int64_t vms_resume_rev;   /* mirrored at (mirror.c): watch from the next one */
    json_t *vms_pending;      /* vm id -> view to write, or {"deleted": name} */
    uv_timer_t *vms_timer;    /* flushes vms_pending soon */
    json_t *vms_view;         /* the other hosts' VMs for GET /vms (NULL: stale) */
    char *vms_view_text;      /* the same, the items as JSON text ("a,b") */
    json_t *may_run_ok;       /* vm id -> monotonic ms of an async may-run "yes" */
    json_t *mig_puts;         /* peer.c: vm id -> {rev, busy, next}: the migration
                               * records written off the loop, one at a time */
    kh_cluster_vms_fn local_vms;
    void *local_vms_opaque;
    kh_cluster_event_fn event;  /* other hosts' VM changes, to the local bus */
    void *event_opaque;

    /* pki.c: mutual TLS between hosts (files in STATE_DIR/cluster-tls) */
    char *tls_dir;
    char *cluster_url;        /* https://ADVERTISE:PORT+1 (the host-to-host listener) */
    char *fingerprint;        /* SHA-256 of this host's certificate (hex), or NULL */
    char *serial;             /* its serial (hex; in the record, for the CRL), or NULL */
    kh_cluster_tls_fn tls_cb;
    void *tls_opaque;

    /* flags and counters (kept together: no padding) */
    unsigned ttl_s, client_port, peer_port;
    unsigned keeper_fails;    /* keep-alive attempts failed in a row */
    bool enabled;
    bool keeper_ok;           /* the last keep-alive attempt succeeded */
    bool etcd_tls;            /* the local member speaks mutual TLS (https:// URLs) */
    bool removed;             /* found removed (record write or removed/<id>): it leaves */
    bool leaving;             /* its own retire (cluster leave) is on its way: removed/<id>
                               * is its own doing, not another host's */
    bool record_busy;         /* a refresh of it is on its way (asynchronous) */
    bool members_busy;        /* a read of it is on its way */
    bool granting;            /* the tick's lease grant is on its way (asynchronous) */
    bool vms_claimed;         /* this host's VMs were claimed since it registered */
    bool stopping;            /* in kh_cluster_stop (a callback it runs must not
                               * stop again) */
    struct kh_cluster_form *forming; /* form.c: the create or join under way */
    struct kh_crl_ask *crl_ask;  /* crl.c: the CA-signed CRL asked of a key holder */
    bool crl_again;           /* the revoked view changed meanwhile: ask again */
};

/* vms.c */
int kh_cluster_vms_watch(kh_cluster *c, kh_err *err);
/* Load the mirrored /kvmhost/vms/ into c->vms (daemon start). */
void kh_cluster_vms_load(kh_cluster *c);
void kh_cluster_vms_flush(kh_cluster *c);
void kh_cluster_vms_kick(kh_cluster *c);
/* The cached view of the other hosts' VMs (GET /vms) is built again on the
 * next read: c->vms or a host record changed. */
void kh_cluster_vms_view_stale(kh_cluster *c);
void kh_cluster_vms_claim_local(kh_cluster *c);

/* mirror.c: the cluster view in SQLite (hosts/ and vms/), at a revision. */
/* A watch event of prefix. */
void kh_cluster_mirror_event(kh_cluster *c, const char *prefix, const kh_etcd_kv *kv, bool put);
/* A full listing of prefix (at kvs->revision) replaces its rows. */
void kh_cluster_mirror_replace(kh_cluster *c, const char *prefix, const kh_etcd_kvs *kvs);
/* Feed the rows of prefix to apply; the revision they are at (0: none). */
int64_t kh_cluster_mirror_load(kh_cluster *c, const char *prefix,
                               void (*apply)(kh_cluster *c, const kh_etcd_kv *kv));
/* Forget it all (leave, removed). */
void kh_cluster_mirror_clear(kh_cluster *c);

/* pki.c: the cluster CA and the host certificates (PEM strings). */
/* A new EC P-256 CA: key and self-signed certificate (10 years). */
int kh_pki_make_ca(const char *cn, char **key_pem, char **cert_pem, kh_err *err);
/* A new EC P-256 key and a CSR for cn. */
int kh_pki_make_csr(const char *cn, char **key_pem, char **csr_pem, kh_err *err);
/* Sign csr with the CA: a host certificate (client and server) for cn with
 * the IP address ip as its subjectAltName (5 years). A new PEM string. */
char *kh_pki_sign(const char *ca_cert, const char *ca_key, const char *csr, const char *ip,
                  kh_err *err);
/* SHA-256 of a PEM certificate's DER, lowercase hex (a new string), or NULL. */
char *kh_pki_fingerprint(const char *cert_pem);
/* SHA-256 of a PEM certificate's public key (SubjectPublicKeyInfo DER),
 * lowercase hex (a new string), or NULL: the pin of the API certificate a
 * join token carries (libcurl's CURLOPT_PINNEDPUBLICKEY checks it). */
char *kh_pki_pubkey_pin(const char *cert_pem);
/* That pin (hex) as libcurl wants it: "sha256//BASE64" (a new string), or
 * NULL when it is not 64 hex digits. */
char *kh_cluster_pin_curl(const char *hex);
/* The files of STATE_DIR/cluster-tls: "ca.pem", "ca.key", "host.pem", "host.key". */
char *kh_cluster_tls_path(const kh_cluster *c, const char *file);
/* Read this host's TLS material (fingerprint, cluster_url) and tell the
 * daemon (tls_cb) to serve the host-to-host listener. 1 ready, 0 no files. */
int kh_cluster_tls_load(kh_cluster *c);
/* Write a PEM into STATE_DIR/cluster-tls/file (mode 0600 for keys). */
int kh_cluster_tls_write(kh_cluster *c, const char *file, const char *pem, kh_err *err);
/* Remove the directory (leave). */
void kh_cluster_tls_drop(kh_cluster *c);

/* join.c, for form.c and async.c */
/* The refusals of create and join: a member already (KH_E_CONFLICT), a
 * create or join under way, no address to advertise (KH_E_INVALID). */
int kh_cluster_refuse_member(const kh_cluster *c, kh_err *err);
int kh_cluster_need_advertise(const kh_cluster *c, kh_err *err);
/* A new cluster CA and this host's certificate from it (files). */
int kh_cluster_make_ca(kh_cluster *c, kh_err *err);
/* A previous cluster's etcd data (STATE_DIR/etcd) goes. */
void kh_cluster_drop_etcd_data(kh_cluster *c);
/* Blocking calls to a member's API (a worker thread's: they touch nothing
 * of c). ask_member: GET url, or POST body, trusting only ca_pem or the
 * public key pin; the JSON answer or NULL with err. pinned_ca: the
 * member's CA checked against the token's pin (*ca_pem) and its
 * host-to-host URL (new strings), or NULL with err. */
json_t *kh_cluster_ask_member(const char *url, const char *address, const char *token,
                              const json_t *body, const char *ca_pem, const char *pin,
                              kh_err *err);
char *kh_cluster_pinned_ca(const char *address, const char *token, char **ca_pem,
                           kh_err *err);
/* A new join token RANDOM.SHA256(CA)[.SHA256(API key)] (not stored yet). */
char *kh_cluster_token_new(kh_cluster *c, kh_err *err);
/* Its etcd key (/kvmhost/join-tokens/<sha256>) and value (new strings). */
char *kh_cluster_token_key(const char *token);
char *kh_cluster_token_value(const kh_cluster *c);
/* The host id `cluster remove HOST` removes (a new string), or NULL with
 * err (not writable, unknown, this host). */
char *kh_cluster_remove_target(kh_cluster *c, const char *host, kh_err *err);
/* async.c: the retire chain of `cluster remove` for any host id (leave:
 * this host's): etcd member removal (local mode), then the retire txn. */
int kh_cluster_retire_async(kh_cluster *c, const char *host_id, kh_cluster_done_cb cb,
                            void *opaque, kh_err *err);
/* The txn body retiring host_id: removed/<id> put, its records deleted. */
json_t *kh_cluster_retire_txn(kh_cluster *c, const char *host_id);
bool kh_cluster_is_local(const kh_cluster *c);

/* crl.c: the CRL of removed hosts' certificates for etcd's --client-crl-file. */
/* The serial of a PEM certificate, uppercase hex (a new string), or NULL. */
char *kh_crl_serial(const char *cert_pem);
/* A PEM CRL listing the serials (hex), issued and signed by issuer/key. */
char *kh_crl_make(const char *issuer_pem, const char *key_pem, const char *const *serials,
                  size_t n, kh_err *err);
/* Write STATE_DIR/cluster-tls/crl.pem from the removed hosts' view (a
 * no-op without etcd TLS). 0, or -1 (logged). Without the CA key, the CRL
 * signed by this host's key, then the CA-signed one asked of a key holder
 * (it replaces the file when it comes). */
int kh_crl_update(kh_cluster *c);
/* Whether this host holds the CA key (its member record says so). */
bool kh_crl_can_sign(const kh_cluster *c);
/* The cluster goes: the answer of a CRL request on its way is dropped. */
void kh_crl_abort(kh_cluster *c);

/* member.c */
/* Connect to etcd (starting the local member when local) and start the
 * registration. c->conf must be set. */
int kh_cluster_start(kh_cluster *c, kh_err *err);
/* Write the member record on lease (granted at sent, monotonic ms) and
 * start the keeper (the tick does it when not done; create and join do it
 * once etcd answers). */
int kh_cluster_register_on(kh_cluster *c, int64_t lease, uint64_t sent, kh_err *err);
/* Start the tick (kh_cluster_start does, unless a create or join is under
 * way: that one starts it once etcd answers). */
void kh_cluster_tick_start(kh_cluster *c);
/* form.c: kh_cluster_free ends the create or join under way (its callback
 * runs with an error). */
void kh_cluster_form_abort(kh_cluster *c);
/* Stop registration, client and local etcd (the lease is revoked when
 * revoke). */
void kh_cluster_stop(kh_cluster *c, bool revoke);
/* The local etcd's URLs: peer and client. */
char *kh_cluster_peer_url(const kh_cluster *c);
char *kh_cluster_client_url(const kh_cluster *c);
/* join.c: the end of a host that another one removed from the cluster
 * (found at its next record write): it stops, forgets the cluster and is a
 * single host again, as after leave. */
void kh_cluster_forget(kh_cluster *c);
/* Read etcd's member list into c->etcd_members (asynchronous). */
void kh_cluster_members_refresh(kh_cluster *c);
/* Whether etcd looks stalled: the lease renewal on its way has waited
 * longer than a healthy etcd ever takes. The loop then makes no blocking
 * etcd call of its own (it would hold every request up to its timeout). */
bool kh_cluster_etcd_stalled(const kh_cluster *c);
/* Quorum as this host sees it: its lease is renewed (a failed renewal
 * counts only once every member failed in a row) and not fenced. */
bool kh_cluster_quorum(const kh_cluster *c);
/* Whether the lease deadline (TTL - margin) has passed: not an owner. */
bool kh_cluster_fenced(const kh_cluster *c);
/* The member record of this host (JSON text, a new string). */
char *kh_cluster_record(kh_cluster *c);
/* Milliseconds left before the self-fence deadline (<0: past; 0 no lease). */
int64_t kh_cluster_fence_left_ms(const kh_cluster *c);

#endif
