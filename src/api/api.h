/* api.h - the REST API v1: its context and its route table.
 *
 * The route table (routes.c) is the one list of endpoints: the router serves
 * it and the OpenAPI document is generated from it. Handlers live in one
 * file per resource (host_routes.c, vm_routes.c, ...), take the request and
 * the kh_api context, call the layer below and reply; they hold no state of
 * their own beyond a request.
 */
#ifndef KH_API_API_H
#define KH_API_API_H

#include <jansson.h>
#include <uv.h>

#include "api/auth.h"
#include "api/openapi.h"
#include "backup/backup.h"
#include "http/http.h"
#include "host/cgroup.h"
#include "storage/storage.h"
#include "instance/disk.h"
#include "instance/nic.h"
#include "instance/snapshot.h"
#include "instance/event.h"
#include "instance/manager.h"
#include "instance/metrics.h"
#include "instance/task.h"

typedef struct kh_api {
    uv_loop_t *loop;
    kh_manager *mgr;
    kh_netmgr *net;    /* networks (net/netmgr.h) */
    kh_tasks *tasks;
    kh_events *events;
    kh_storage *storage; /* pools and volumes (NULL: storage unavailable) */
    kh_snapshots *snapshots;
    kh_disks *disks;     /* disk attach/detach, hot-plug (instance/disk.h) */
    kh_nics *nics;     /* NIC add/remove/link (instance/nic.h) */
    json_t *host;      /* static host facts, computed at start (owned) */
    char *openapi;     /* generated on first request from the route table,
                        * serialised (owned): as text it is a fraction of its
                        * jansson tree; NULL until then */
    double started_at; /* wall time */
    kh_metrics *metrics;
    kh_alerts *alerts;
    struct kh_cluster *cluster; /* membership (cluster/cluster.h); never NULL */
    kh_backups *backups; /* backup stores and backups (backup/backup.h; NULL: unavailable) */
} kh_api;

/* The route table and its size. */
const kh_route *kh_routes_table(size_t *n);
/* components/schemas for the OpenAPI document (a new reference). */
json_t *kh_routes_schemas(void);

/* Handlers, by resource. */
void kh_host_routes_get(kh_http_req *req, void *app);
void kh_host_routes_openapi(kh_http_req *req, void *app);

void kh_vm_routes_list(kh_http_req *req, void *app);
void kh_vm_routes_create(kh_http_req *req, void *app);
void kh_vm_routes_get(kh_http_req *req, void *app);
void kh_vm_routes_patch(kh_http_req *req, void *app);
void kh_vm_routes_delete(kh_http_req *req, void *app);
void kh_vm_routes_start(kh_http_req *req, void *app);
void kh_vm_routes_stop(kh_http_req *req, void *app);
void kh_vm_routes_kill(kh_http_req *req, void *app);
void kh_vm_routes_reboot(kh_http_req *req, void *app);
void kh_vm_routes_pause(kh_http_req *req, void *app);
void kh_vm_routes_resume(kh_http_req *req, void *app);
/* migrate_routes.c: live migration (the user's route and the host-to-host ones) */
void kh_migrate_routes_start(kh_http_req *req, void *app);
void kh_migrate_routes_prepare(kh_http_req *req, void *app);
void kh_migrate_routes_status(kh_http_req *req, void *app);
void kh_migrate_routes_commit(kh_http_req *req, void *app);
void kh_migrate_routes_abort(kh_http_req *req, void *app);
/* Daemon start: resolve the migrations this host left pending (instance/migrate.h). */
void kh_migrate_routes_restart(kh_api *api);
/* Answer with a task: wait up to `wait` seconds for it (200 with the task,
 * or its error), else 202 with the running task (vm_routes.c). */
void kh_vm_routes_reply_task(kh_http_req *req, kh_api *api, kh_task *task, int wait);

/* A reply that comes later, from an asynchronous call's callback
 * (later.c): make it, start the call with it as the opaque, then
 * kh_api_later_started(); the callback ends with kh_api_later_done(). A
 * client that leaves meanwhile does not stop the call. */
typedef struct kh_api_later kh_api_later;
kh_api_later *kh_api_later_new(kh_http_req *req, int status /* on success */);
/* rc < 0: answer err now and free l; else follow the client. */
void kh_api_later_started(kh_api_later *l, int rc, const kh_err *err);
/* The request, or NULL once the client went away (e.g. to add a header). */
kh_http_req *kh_api_later_req(const kh_api_later *l);
/* Answer result (stolen; dropped if the client left) or err; frees l. */
void kh_api_later_done(kh_api_later *l, json_t *result, const kh_err *err);
/* Free l without answering: the request (NULL once the client went away)
 * is the caller's to answer again. */
kh_http_req *kh_api_later_take(kh_api_later *l);

void kh_disk_routes_attach(kh_http_req *req, void *app);
void kh_disk_routes_detach(kh_http_req *req, void *app);
void kh_vm_routes_guest(kh_http_req *req, void *app);
void kh_nic_routes_add(kh_http_req *req, void *app);
void kh_nic_routes_remove(kh_http_req *req, void *app);
void kh_nic_routes_patch(kh_http_req *req, void *app);

void kh_snapshot_routes_list(kh_http_req *req, void *app);
void kh_snapshot_routes_create(kh_http_req *req, void *app);
void kh_snapshot_routes_get(kh_http_req *req, void *app);
void kh_snapshot_routes_revert(kh_http_req *req, void *app);
void kh_snapshot_routes_delete(kh_http_req *req, void *app);

/* backup_routes.c */
/* porting_routes.c: import and export of VMs (OVA, libvirt XML) */
void kh_porting_routes_import_upload(kh_http_req *req, void *app);
void kh_porting_routes_import_path(kh_http_req *req, void *app);
void kh_porting_routes_export(kh_http_req *req, void *app);
void kh_porting_routes_import_libvirt(kh_http_req *req, void *app);
void kh_backup_routes_stores(kh_http_req *req, void *app);
void kh_backup_routes_store_add(kh_http_req *req, void *app);
void kh_backup_routes_store_get(kh_http_req *req, void *app);
void kh_backup_routes_store_delete(kh_http_req *req, void *app);
void kh_backup_routes_list(kh_http_req *req, void *app);
void kh_backup_routes_get(kh_http_req *req, void *app);
void kh_backup_routes_delete(kh_http_req *req, void *app);
void kh_backup_routes_create(kh_http_req *req, void *app);
void kh_backup_routes_restore(kh_http_req *req, void *app);
void kh_backup_routes_verify(kh_http_req *req, void *app);
void kh_backup_routes_prune(kh_http_req *req, void *app);
void kh_backup_routes_schedule_get(kh_http_req *req, void *app);
void kh_backup_routes_schedule_set(kh_http_req *req, void *app);
void kh_backup_routes_schedule_delete(kh_http_req *req, void *app);

void kh_storage_routes_pools(kh_http_req *req, void *app);
void kh_storage_routes_pool_get(kh_http_req *req, void *app);
void kh_storage_routes_pool_create(kh_http_req *req, void *app);
void kh_storage_routes_pool_delete(kh_http_req *req, void *app);
void kh_storage_routes_pool_patch(kh_http_req *req, void *app);
void kh_storage_routes_volumes(kh_http_req *req, void *app);
void kh_storage_routes_volume_create(kh_http_req *req, void *app);
void kh_storage_routes_volume_get(kh_http_req *req, void *app);
void kh_storage_routes_volume_resize(kh_http_req *req, void *app);
void kh_storage_routes_volume_delete(kh_http_req *req, void *app);
void kh_storage_routes_volume_upload(kh_http_req *req, void *app);
void kh_storage_routes_volume_download(kh_http_req *req, void *app);

void kh_template_routes_make(kh_http_req *req, void *app);
void kh_template_routes_list(kh_http_req *req, void *app);
/* POST /api/v1/vms with "from_template" (vm_routes.c hands it over). */
void kh_template_routes_clone(kh_http_req *req, kh_api *api, const json_t *body);

void kh_task_routes_list(kh_http_req *req, void *app);
void kh_task_routes_get(kh_http_req *req, void *app);
void kh_task_routes_cancel(kh_http_req *req, void *app);

void kh_event_routes_stream(kh_http_req *req, void *app);

void kh_console_routes_ws(kh_http_req *req, void *app);

void kh_net_routes_list(kh_http_req *req, void *app);
void kh_net_routes_create(kh_http_req *req, void *app);
void kh_net_routes_get(kh_http_req *req, void *app);
void kh_net_routes_delete(kh_http_req *req, void *app);
void kh_net_routes_leases(kh_http_req *req, void *app);
void kh_net_routes_forward_add(kh_http_req *req, void *app);
void kh_net_routes_forward_delete(kh_http_req *req, void *app);
void kh_net_routes_sg_list(kh_http_req *req, void *app);
void kh_net_routes_sg_get(kh_http_req *req, void *app);
void kh_net_routes_sg_put(kh_http_req *req, void *app);
void kh_net_routes_sg_delete(kh_http_req *req, void *app);
void kh_net_routes_sg_rule_add(kh_http_req *req, void *app);
void kh_net_routes_sg_rule_delete(kh_http_req *req, void *app);
void kh_console_routes_log(kh_http_req *req, void *app);

void kh_vnc_routes_ws(kh_http_req *req, void *app);
void kh_cluster_routes_get(kh_http_req *req, void *app);
void kh_cluster_routes_hosts(kh_http_req *req, void *app);
void kh_cluster_routes_create(kh_http_req *req, void *app);
void kh_cluster_routes_join(kh_http_req *req, void *app);
void kh_cluster_routes_leave(kh_http_req *req, void *app);
void kh_cluster_routes_token(kh_http_req *req, void *app);
void kh_cluster_routes_admit(kh_http_req *req, void *app);
void kh_cluster_routes_remove(kh_http_req *req, void *app);
void kh_cluster_routes_ca(kh_http_req *req, void *app);
void kh_cluster_routes_crl(kh_http_req *req, void *app);
void kh_cluster_routes_ca_export(kh_http_req *req, void *app);
void kh_cluster_routes_ca_import(kh_http_req *req, void *app);

/* Before each handler (forward.c): a per-VM request for a VM another host
 * owns goes to that host. True when it took the request. */
bool kh_api_forward_pre(kh_http_req *req, void *app);

void kh_metrics_routes_prometheus(kh_http_req *req, void *app);
void kh_metrics_routes_vm(kh_http_req *req, void *app);
void kh_metrics_routes_host(kh_http_req *req, void *app);
void kh_metrics_routes_alerts(kh_http_req *req, void *app);
void kh_metrics_routes_alert_rules(kh_http_req *req, void *app);

/* backup_routes.c: the project of each backup (the backup module's record
 * hook, set at start with the auth store); unwatch at shutdown, before the
 * tasks go: the restores still awaited are forgotten. */
void kh_backup_routes_watch(kh_backups *b, kh_store *auth_store);
void kh_backup_routes_unwatch(void);

/* guard.c: what a body names beyond the route's own object (see there).
 * Each returns 0, or -1 with err set (403/404) and nothing done. */
int kh_guard_disks(const kh_http_req *req, const json_t *disks, kh_err *err);
int kh_guard_volume(const kh_http_req *req, const char *ref, const char *default_pool,
                    kh_err *err);
int kh_guard_vm_quota(const kh_http_req *req, kh_api *api, const json_t *body, kh_err *err);
/* The disk quota of project (volume capacities): more bytes on top of what
 * its volumes have, volume ref except left out (a resize counts anew). */
int kh_guard_disk_quota(const kh_http_req *req, kh_api *api, const char *project,
                        uint64_t more, const char *except, kh_err *err);
/* What project may still add to its volumes' capacities (volume except
 * left out): *left (UINT64_MAX without a disk quota) and, in words, the
 * start of the refusal ("quota of project x: at most N bytes of disk (U in
 * use"; the caller ends it). 0, or -1 with err (an unknown project). */
#define KH_GUARD_QUOTA_WORDS 192
int kh_guard_disk_room(const kh_http_req *req, kh_api *api, const char *project,
                       const char *except, uint64_t *left, char *words, size_t wsz, kh_err *err);
/* The same for work that outlives its request (an import task): the auth
 * store (NULL: no projects, all pass) and the project named. */
int kh_guard_vm_quota_in(kh_store *st, kh_api *api, const char *project, const json_t *body,
                         kh_err *err);
int kh_guard_disk_room_in(kh_store *st, kh_api *api, const char *project, const char *except,
                          uint64_t *left, char *words, size_t wsz, kh_err *err);
int kh_guard_disk_quota_in(kh_store *st, kh_api *api, const char *project, uint64_t more,
                           const char *except, kh_err *err);

/* access_routes.c: users, groups, tokens, roles, ACL, projects, permissions, audit */
void kh_access_routes_users(kh_http_req *req, void *app);
void kh_access_routes_user_add(kh_http_req *req, void *app);
void kh_access_routes_user_get(kh_http_req *req, void *app);
void kh_access_routes_user_patch(kh_http_req *req, void *app);
void kh_access_routes_user_delete(kh_http_req *req, void *app);
void kh_access_routes_tokens(kh_http_req *req, void *app);
void kh_access_routes_token_add(kh_http_req *req, void *app);
void kh_access_routes_token_delete(kh_http_req *req, void *app);
void kh_access_routes_groups(kh_http_req *req, void *app);
void kh_access_routes_group_add(kh_http_req *req, void *app);
void kh_access_routes_group_delete(kh_http_req *req, void *app);
void kh_access_routes_member_put(kh_http_req *req, void *app);
void kh_access_routes_member_delete(kh_http_req *req, void *app);
void kh_access_routes_roles(kh_http_req *req, void *app);
void kh_access_routes_role_put(kh_http_req *req, void *app);
void kh_access_routes_role_delete(kh_http_req *req, void *app);
void kh_access_routes_acl(kh_http_req *req, void *app);
void kh_access_routes_acl_put(kh_http_req *req, void *app);
void kh_access_routes_acl_delete(kh_http_req *req, void *app);
void kh_access_routes_permissions(kh_http_req *req, void *app);
void kh_access_routes_projects(kh_http_req *req, void *app);
void kh_access_routes_project_add(kh_http_req *req, void *app);
void kh_access_routes_project_get(kh_http_req *req, void *app);
void kh_access_routes_project_patch(kh_http_req *req, void *app);
void kh_access_routes_project_delete(kh_http_req *req, void *app);
void kh_access_routes_audit(kh_http_req *req, void *app);

#endif
