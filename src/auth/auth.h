/* auth.h - who is who and who may do what: users and groups (users.c),
 * API tokens (tokens.c), privileges and built-in roles (privs.c), custom
 * roles and ACL entries (acl.c), projects, quotas and the project of each
 * object (projects.c), the audit log (audit.c), and the host-path and
 * webhook-URL policies (hostpath.c). Tables: auth/schema.c (migrations 19,
 * 20). Everything runs on the loop thread against the store; no HTTP here.
 *
 * Principals (the caller's identity, a string):
 *   "root@local"   the unix socket and the static --token: every privilege
 *   "alice"        a local user (password login, session cookie)
 *   "alice!ci"     API token "ci" of alice: its rights are the intersection
 *                  of its own ACL entries and alice's
 * ACL subjects are a user name, "@group", or "user!token".
 *
 * ACL paths: "/", "/access" (users, groups, roles, ACLs), "/projects/P",
 * "/vms/NAME", "/pools/P", "/pools/P/volumes/V", "/networks/N",
 * "/security-groups/N", "/backup-stores/S", "/backups/ID", "/hosts/H". An
 * entry applies to its own path and, with propagate, to every path below
 * it. VMs, volumes, networks, security groups and backups (the project of
 * their VM when made) belong to a project: below their own path comes
 * "/projects/P", then "/". Privileges from every entry that applies are
 * united (no entry takes rights away).
 */
#ifndef KH_AUTH_AUTH_H
#define KH_AUTH_AUTH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"
#include "util/err.h"

#define KH_AUTH_ROOT "root@local"
#define KH_AUTH_NAME_MAX 64  /* user, group, role, project, token names */
#define KH_AUTH_CHAIN_MAX 12 /* paths in a check chain */
#define KH_AUTH_PATH_MAX 512

/* ---- privileges and built-in roles (privs.c) ---- */
typedef uint32_t kh_privs;
enum {
    KH_PRIV_SYS_AUDIT = 1u << 0,           /* host facts, metrics, events, audit log */
    KH_PRIV_SYS_MODIFY = 1u << 1,          /* cluster, alert rules */
    KH_PRIV_SYS_HOSTPATH = 1u << 2,        /* host files: raw disk paths, imports, pools */
    KH_PRIV_PERMISSIONS_MODIFY = 1u << 3,  /* users, groups, roles, ACLs, projects */
    KH_PRIV_VM_AUDIT = 1u << 4,            /* see VMs, their snapshots, metrics */
    KH_PRIV_VM_POWERMGMT = 1u << 5,        /* start, stop, kill, reboot, pause, resume */
    KH_PRIV_VM_CONSOLE = 1u << 6,          /* serial and VNC console */
    KH_PRIV_VM_ALLOCATE = 1u << 7,         /* create, delete, clone, make template */
    KH_PRIV_VM_CONFIG = 1u << 8,           /* PATCH, disks, NICs */
    KH_PRIV_VM_SNAPSHOT = 1u << 9,         /* take, revert, delete snapshots */
    KH_PRIV_VM_MIGRATE = 1u << 10,         /* live migration */
    KH_PRIV_DATASTORE_AUDIT = 1u << 11,    /* see pools and volumes */
    KH_PRIV_DATASTORE_ALLOCATE = 1u << 12, /* add and remove pools */
    KH_PRIV_DATASTORE_SPACE = 1u << 13,    /* create, resize, upload, delete volumes */
    KH_PRIV_NETWORK_AUDIT = 1u << 14,      /* see networks, leases, security groups */
    KH_PRIV_NETWORK_ALLOCATE = 1u << 15,   /* change networks, forwards, security groups */
    KH_PRIV_DATASTORE_BACKUP = 1u << 16,   /* back up VMs; restore, verify, delete backups */
};
#define KH_PRIV_COUNT 17
#define KH_PRIV_ALL ((kh_privs)((1u << KH_PRIV_COUNT) - 1))

/* "VM.PowerMgmt" for one bit; NULL for none or several. */
const char *kh_privs_name(kh_privs one);
/* The bit of a privilege name; 0 when unknown. */
kh_privs kh_privs_parse(const char *name);
/* The names of the bits set, as a JSON array (new reference). */
json_t *kh_privs_json(kh_privs p);
/* A JSON array of privilege names as bits; -1 with err (KH_E_INVALID) on an
 * unknown name. */
int kh_privs_from_json(const json_t *arr, kh_privs *out, kh_err *err);
/* Built-in roles: Administrator, Operator (power + console + audit of VMs,
 * pools, networks), Auditor (every *.Audit privilege). */
bool kh_privs_builtin(const char *role, kh_privs *out);
/* The built-in roles as [{name, privileges, builtin: true}]. */
json_t *kh_privs_builtin_json(void);
/* Names of users, groups, roles, projects, tokens: [A-Za-z0-9_][A-Za-z0-9_.-]{0,63}. */
bool kh_privs_name_ok(const char *s);
/* An ACL path: "/" or "/seg[/seg...]" with name-like segments. */
bool kh_privs_path_ok(const char *path);
/* An ACL subject: "user", "@group" or "user!token". */
bool kh_privs_subject_ok(const char *subject);

/* ---- users and groups (users.c) ---- */
/* Set up libsodium once (0, or -1 with err). */
int kh_users_init(kh_err *err);
/* A new user (password may be NULL: no password login; hashed with
 * argon2id). KH_E_CONFLICT when the name is taken. project: the default
 * project of the user's new objects ("default" when NULL). */
int kh_users_add(kh_store *st, const char *name, const char *password, const char *project,
                 kh_err *err);
/* Change password (NULL: none), default project (NULL: keep), enabled
 * (-1: keep). KH_E_NOTFOUND for an unknown user. */
int kh_users_update(kh_store *st, const char *name, const char *password, const char *project,
                    int enabled, kh_err *err);
/* Delete a user with their tokens, group memberships and ACL entries. */
int kh_users_delete(kh_store *st, const char *name, kh_err *err);
/* [{name, project, enabled, groups, has_password, created_at}] or one user
 * (name != NULL; NULL with KH_E_NOTFOUND when unknown). */
json_t *kh_users_json(kh_store *st, const char *name, kh_err *err);
/* Does name exist and is it enabled, with that password? (constant work
 * for unknown users too). Synchronous: the argon2id check takes tens of ms. */
bool kh_users_verify(kh_store *st, const char *name, const char *password);
/* The same in two steps, for a worker thread: the stored hash of an
 * enabled user (owned; NULL for none), read on the loop thread; then the
 * check, which touches no shared state but the dummy hash (thread-safe
 * after kh_users_init). */
char *kh_users_pwhash(kh_store *st, const char *name);
bool kh_users_pwcheck(const char *hash, const char *password);
/* Is the user there and enabled? */
bool kh_users_enabled(kh_store *st, const char *name);
/* The user's default project (owned), or NULL. */
char *kh_users_project(kh_store *st, const char *name);
int kh_users_group_add(kh_store *st, const char *group, kh_err *err);
int kh_users_group_delete(kh_store *st, const char *group, kh_err *err);
/* add true: put user in group; false: take out. */
int kh_users_group_member(kh_store *st, const char *group, const char *user, bool add,
                          kh_err *err);
/* [{name, members}] */
json_t *kh_users_groups_json(kh_store *st, kh_err *err);

/* ---- API tokens (tokens.c) ---- */
/* A new token of user: its secret text "user!name:HEX" into out (shown
 * once; only a SHA-256 is stored). expires_at: wall time, 0 = never. */
int kh_tokens_create(kh_store *st, const char *user, const char *name, double expires_at,
                     const char *comment, char *out, size_t outsz, kh_err *err);
/* Revoke (delete) a token; KH_E_NOTFOUND when unknown. */
int kh_tokens_delete(kh_store *st, const char *user, const char *name, kh_err *err);
/* The tokens of user (no secrets). */
json_t *kh_tokens_json(kh_store *st, const char *user, kh_err *err);
/* A bearer secret "user!name:HEX": the principal "user!name" into out
 * when it names a live token of an enabled user (unexpired), else false
 * with why set ("expired", "unknown or revoked token"). */
bool kh_tokens_verify(kh_store *st, const char *secret, double now, char *out, size_t outsz,
                      const char **why);

/* ---- roles and ACL entries (acl.c) ---- */
/* Custom role: create or replace (a built-in name is KH_E_CONFLICT). */
int kh_acl_role_put(kh_store *st, const char *role, kh_privs privs, kh_err *err);
int kh_acl_role_delete(kh_store *st, const char *role, kh_err *err);
/* Built-in and custom roles [{name, privileges, builtin}]. */
json_t *kh_acl_roles_json(kh_store *st, kh_err *err);
/* Add an entry (idempotent; KH_E_INVALID for an unknown role). */
int kh_acl_set(kh_store *st, const char *path, const char *subject, const char *role,
               bool propagate, kh_err *err);
int kh_acl_delete(kh_store *st, const char *path, const char *subject, const char *role,
                  kh_err *err);
/* [{path, subject, role, propagate}] */
json_t *kh_acl_json(kh_store *st, kh_err *err);
/* The paths an object path is checked on, most specific first: the path,
 * then for an object of a project "/projects/P" and "/", else its
 * ancestors. Strings are owned (kh_acl_chain_clear). */
typedef struct kh_acl_chain {
    size_t n;
    char *path[KH_AUTH_CHAIN_MAX];
    char *project; /* the object's project, or NULL for a non-project path */
} kh_acl_chain;
int kh_acl_chain_make(kh_store *st, const char *path, kh_acl_chain *c, kh_err *err);
void kh_acl_chain_clear(kh_acl_chain *c);
/* The privileges principal holds on chain (see the top of this file). */
int kh_acl_effective(kh_store *st, const char *principal, const kh_acl_chain *c,
                     kh_privs *out, kh_err *err);
/* The same for an object path (makes the chain). */
int kh_acl_effective_path(kh_store *st, const char *principal, const char *path,
                          kh_privs *out, kh_err *err);
/* Every path with an entry for principal (or its groups/user), with the
 * privileges held there: {path: [privs]}; for root {"/": all}. */
json_t *kh_acl_permissions_json(kh_store *st, const char *principal, kh_err *err);

/* ---- projects, quotas, object ownership (projects.c) ---- */
typedef struct kh_quota {
    int64_t vms, vcpus, memory_mib, disk_bytes; /* 0 = unlimited */
} kh_quota;
int kh_projects_add(kh_store *st, const char *name, const kh_quota *q, kh_err *err);
/* Replace quota fields present in patch (JSON object) */
int kh_projects_update(kh_store *st, const char *name, const kh_quota *q, kh_err *err);
/* KH_E_CONFLICT while objects belong to it, or for "default". */
int kh_projects_delete(kh_store *st, const char *name, kh_err *err);
bool kh_projects_exists(kh_store *st, const char *name);
int kh_projects_quota(kh_store *st, const char *name, kh_quota *q, kh_err *err);
/* [{name, quota: {...}, objects: n}] or one project */
json_t *kh_projects_json(kh_store *st, const char *name, kh_err *err);
/* Object kinds: "vm", "volume" ("pool/volume"), "network", "security-group",
 * "backup" (its id). */
int kh_projects_object_set(kh_store *st, const char *kind, const char *name,
                           const char *project, kh_err *err);
int kh_projects_object_forget(kh_store *st, const char *kind, const char *name, kh_err *err);
/* Record an object that exists without a record as "default" (start-up:
 * objects made before projects); a recorded one keeps its project. */
int kh_projects_object_adopt(kh_store *st, const char *kind, const char *name, kh_err *err);
/* The object's project (owned), or NULL when it has no record. */
char *kh_projects_object_find(kh_store *st, const char *kind, const char *name);
/* The object's project (owned); "default" when it has no record. */
char *kh_projects_object_project(kh_store *st, const char *kind, const char *name);

/* ---- audit log (audit.c) ---- */
typedef struct kh_audit_entry {
    const char *principal; /* NULL: not authenticated */
    const char *address;
    const char *method, *path, *object;
    unsigned status;
    const char *detail;
} kh_audit_entry;
int kh_audit_add(kh_store *st, const kh_audit_entry *e, double at, kh_err *err);
/* A request forwarded to the host owning its VM names the caller this host
 * checked and this host, so that the owner's audit says who it was:
 * "KH-Forwarded: for=alice; host=h1" (no CRLF; without "for=" when
 * principal is NULL or has characters no principal has). Caller frees. */
char *kh_audit_forwarded_header(const char *host, const char *principal);
/* The owner's side: a KH-Forwarded value into "alice via h1" (false when it
 * names no caller or is malformed). */
bool kh_audit_forwarded_for(const char *value, char *out, size_t outsz);
typedef struct kh_audit_filter {
    const char *principal, *method, *path_prefix, *object;
    unsigned status_min, status_max; /* 0: any */
    double since, until;             /* 0: any */
    int64_t before_id;               /* paging: entries with a smaller id; 0: newest */
    unsigned limit;                  /* 0: 100; at most 1000 */
} kh_audit_filter;
/* {entries: [...newest first], next_before: id|null} */
json_t *kh_audit_query(kh_store *st, const kh_audit_filter *f, kh_err *err);

/* ---- host paths and outbound URLs (hostpath.c) ---- */
/* Is path (absolute) inside one of the allowed directories, once resolved
 * (symlinks of the existing part followed)? 0, or -1 with KH_E_FORBIDDEN
 * naming the allowed directories. */
int kh_hostpath_check(const char *const *allowed, size_t n, const char *path, const char *what,
                      kh_err *err);
/* Is the address (text) loopback, link-local, unspecified or a cloud
 * metadata address? */
bool kh_hostpath_addr_internal(const char *addr);
/* A webhook URL's host: refuse loopback, link-local and metadata
 * addresses (literal, or any address the name resolves to) unless
 * allow_internal. 0 or -1 with KH_E_INVALID. */
int kh_hostpath_url_check(const char *host, bool allow_internal, kh_err *err);

#endif
