/* vmuid.c - owns the per-VM QEMU identity (see vmuid.h): allocation from
 * the configured uid range, the vm_uids rows (vmuid_schema.c), and giving a
 * VM's files to its uid and back. */
#include "instance/vmuid.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "instance/instance_int.h"
#include "util/log.h"
#include "util/mem.h"

uid_t kh_vmuid_lookup(kh_manager *mgr, const char *vm_id)
{
    kh_err err = KH_ERR_INIT;
    sqlite3_stmt *s = kh_store_prep(mgr->store, "SELECT uid FROM vm_uids WHERE vm_id = ?1", &err);
    if (!s)
        return 0;
    kh_store_bind_text(s, 1, vm_id);
    uid_t uid = 0;
    if (sqlite3_step(s) == SQLITE_ROW)
        uid = (uid_t)sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return uid;
}

/* A uid the host already uses for someone (a user or a group of that
 * number): never handed to a VM. */
static bool taken_on_host(uid_t uid)
{
    return getpwuid(uid) != NULL || getgrgid((gid_t)uid) != NULL;
}

static uid_t allocate(kh_manager *mgr, const char *vm_id, kh_err *err)
{
    uid_t first = mgr->cfg.uid_first;
    uid_t last = first + (uid_t)mgr->cfg.uid_count - 1;
    sqlite3_stmt *s = kh_store_prep(mgr->store,
                                    "SELECT uid FROM vm_uids WHERE uid BETWEEN ?1 AND ?2 "
                                    "ORDER BY uid", err);
    if (!s)
        return 0;
    sqlite3_bind_int64(s, 1, first);
    sqlite3_bind_int64(s, 2, last);
    /* the lowest uid of the range that no row holds and the host does not use */
    uid_t cand = first;
    bool found = false;
    while (!found && sqlite3_step(s) == SQLITE_ROW) {
        uid_t used = (uid_t)sqlite3_column_int64(s, 0);
        for (; cand < used; cand++)
            if (!taken_on_host(cand)) {
                found = true;
                break;
            }
        if (!found)
            cand = used + 1;
    }
    sqlite3_finalize(s);
    for (; !found && cand <= last && cand >= first; cand++)
        if (!taken_on_host(cand)) {
            found = true;
            break;
        }
    if (!found) {
        kh_err_set(err, KH_E_UNAVAILABLE, "no free QEMU uid left in the range %u-%u (one per "
                   "VM; widen --qemu-uid-range)", (unsigned)first, (unsigned)last);
        return 0;
    }
    s = kh_store_prep(mgr->store, "INSERT INTO vm_uids (vm_id, uid) VALUES (?1, ?2)", err);
    if (!s)
        return 0;
    kh_store_bind_text(s, 1, vm_id);
    sqlite3_bind_int64(s, 2, cand);
    if (kh_store_step_done(mgr->store, s, "recording the QEMU uid of a VM", err) < 0)
        return 0;
    kh_log(KH_LOG_INFO, "vm.uid", "vm_id=%s uid=%u", vm_id, (unsigned)cand);
    return cand;
}

int kh_vmuid_identity_get(kh_manager *mgr, const char *vm_id, kh_vmuid_identity *out,
                          kh_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!mgr->cfg.uid_count) {
        out->uid = mgr->cfg.uid;
        out->gid = mgr->cfg.gid;
        for (size_t i = 0; i < mgr->cfg.ngroups && i < KH_ARRAY_LEN(out->groups); i++)
            out->groups[out->ngroups++] = mgr->groups[i];
        return 0;
    }
    uid_t uid = kh_vmuid_lookup(mgr, vm_id);
    if (!uid && !(uid = allocate(mgr, vm_id, err)))
        return -1;
    out->uid = uid;
    out->gid = (gid_t)uid;
    out->per_vm = true;
    out->groups[out->ngroups++] = (gid_t)uid;
    if (mgr->cfg.kvm_gid)
        out->groups[out->ngroups++] = mgr->cfg.kvm_gid;
    return 0;
}

void kh_vmuid_own_fd(const kh_vmuid_identity *id, int fd, const char *what)
{
    struct stat st;
    if (!id->per_vm || fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return;
    if (st.st_uid == id->uid && st.st_gid == id->gid && (st.st_mode & 07777) == 0600)
        return;
    if (fchown(fd, id->uid, id->gid) < 0 || fchmod(fd, 0600) < 0)
        kh_log(KH_LOG_WARN, "vm.uid", "file=\"%s\" uid=%u error=\"%s\"", what,
               (unsigned)id->uid, strerror(errno));
}

void kh_vmuid_disown_path(uid_t uid, const char *path)
{
    struct stat st;
    if (!uid || !path || lstat(path, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != uid)
        return;
    if (chown(path, 0, 0) < 0)
        kh_log(KH_LOG_WARN, "vm.uid", "file=\"%s\" uid=%u note=\"cannot give it back to root\" "
               "error=\"%s\"", path, (unsigned)uid, strerror(errno));
}

static void disown_disk(kh_manager *mgr, uid_t uid, const kh_disk_spec *d)
{
    kh_volume_chain c;
    if (d->readonly)
        return; /* never given to the VM */
    if (!d->volume) {
        kh_vmuid_disown_path(uid, d->path);
    } else if (mgr->cfg.storage && kh_storage_resolve(mgr->cfg.storage, d->volume, &c, NULL) == 0) {
        kh_vmuid_disown_path(uid, c.layer[0].path);
        kh_volume_chain_clear(&c);
    }
}

void kh_vmuid_disown_disk(kh_manager *mgr, const char *vm_id, const kh_disk_spec *d)
{
    uid_t uid = kh_vmuid_lookup(mgr, vm_id);
    if (uid)
        disown_disk(mgr, uid, d);
}

void kh_vmuid_release(kh_manager *mgr, const char *vm_id, const kh_vm_spec *spec)
{
    uid_t uid = kh_vmuid_lookup(mgr, vm_id);
    for (size_t i = 0; uid && i < spec->ndisks; i++)
        disown_disk(mgr, uid, &spec->disks[i]);
}
