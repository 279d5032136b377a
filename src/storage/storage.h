/* storage.h - storage pools and the volumes in them.
 *
 * A pool is a directory on the host (type "dir"): the default pool
 * STATE_DIR/pools/default is created at first start; an admin may add a
 * "dir" pool at an existing directory (an NFS mount, a bigger disk). The
 * pool layer keeps room for other types (rbd through QEMU's own driver)
 * behind the "type" field; only "dir" exists now.
 *
 * A volume is one image file in a pool, qcow2 or raw, named on disk by its
 * id (never by the user's name), recorded in the store. A qcow2 volume may
 * sit on a backing volume (a linked clone): the chain is recorded here, so
 * the VM manager resolves "pool/name" to the files of the chain without
 * trusting what an image header says.
 *
 * Everything that runs qemu-img is asynchronous (storage/qimg.h): the
 * function checks its input at once (returning -1 with err set and doing
 * nothing) or returns 0 and calls cb exactly once later.
 */
#ifndef KH_STORAGE_STORAGE_H
#define KH_STORAGE_STORAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "conf/vm_spec.h"
#include "storage/qimg.h"
#include "store/store.h"
#include "util/err.h"

#define KH_VOLUME_SIZE_MAX (64ULL << 40) /* 64 TiB */
#define KH_VOLUME_CHAIN_MAX 8

typedef struct kh_storage kh_storage;

/* result is stolen (NULL on error); err is set when result is NULL. */
typedef void (*kh_storage_cb)(json_t *result, const kh_err *err, void *opaque);

/* Which VMs refer to a volume: a JSON array of {"vm": NAME, "running": bool}
 * (a new reference). Set by the VM manager. */
typedef json_t *(*kh_volume_users_fn)(void *opaque, const char *ref);

/* Opens the pools of the store, creating the default pool under
 * state_dir/pools/default at first start, and removes the leftovers of
 * creations a previous daemon did not finish. */
kh_storage *kh_storage_new(uv_loop_t *loop, kh_store *store, kh_qimg *qimg,
                           const char *state_dir, kh_err *err);
void kh_storage_free(kh_storage *st);
void kh_storage_set_users(kh_storage *st, kh_volume_users_fn fn, void *opaque);
/* Grow a volume in the running VM that uses it (QMP block_resize): calls
 * done(err_or_NULL, done_opaque) later and returns 0, or -1 with err set
 * and done never called. Set by the VM manager. */
typedef void (*kh_volume_resize_done)(const kh_err *err, void *opaque);
typedef int (*kh_volume_live_resize_fn)(void *opaque, const char *ref, uint64_t size,
                                        kh_volume_resize_done done, void *done_opaque,
                                        kh_err *err);
void kh_storage_set_live_resize(kh_storage *st, kh_volume_live_resize_fn fn, void *opaque);
/* The qemu-img runner (for other modules that run qemu-img on volumes). */
kh_qimg *kh_storage_qimg(kh_storage *st);

/* Pools. */
json_t *kh_storage_pools_json(kh_storage *st);
json_t *kh_storage_pool_json(kh_storage *st, const char *name, kh_err *err);
/* {"name", "type": "dir", "path": "/existing/dir"}. */
json_t *kh_storage_pool_create(kh_storage *st, const json_t *body, kh_err *err);
/* {"shared": bool}: the pool's directory is the same on every cluster host
 * (an NFS mount): a live migration leaves its volumes in place. Pools are
 * not shared unless marked (their volumes are copied over NBD). */
json_t *kh_storage_pool_patch(kh_storage *st, const char *name, const json_t *body,
                              kh_err *err);
/* The pool called name is marked shared (false: not, or no such pool). */
bool kh_storage_pool_shared(kh_storage *st, const char *name);
/* Where volume ref ("pool/name") lives, for a live migration. */
typedef struct kh_volume_placement {
    bool shared;       /* its pool is shared: it stays in place */
    char format[8];    /* "qcow2" | "raw" */
    uint64_t capacity; /* virtual size, bytes */
    bool encrypted, readonly;
} kh_volume_placement;
int kh_storage_volume_placement(kh_storage *st, const char *ref, kh_volume_placement *out,
                                kh_err *err);
/* KH_E_CONFLICT while it holds volumes, and for the default pool. The
 * directory itself is left alone. */
int kh_storage_pool_delete(kh_storage *st, const char *name, kh_err *err);

/* Volumes. create body: {"name", "format": "qcow2"|"raw" (default qcow2),
 * "size": BYTES | "10G", "preallocate": bool, "encrypt": bool (qcow2 with
 * LUKS, AES-256, a random key per volume), "backing": "[pool/]name"
 * (a qcow2 overlay: a linked clone), "import": "/host/file" (a copy of a
 * host image whose format is given, never guessed)}. */
int kh_storage_volume_create(kh_storage *st, const char *pool, const json_t *body,
                             kh_storage_cb cb, void *opaque, kh_err *err);
json_t *kh_storage_volumes_json(kh_storage *st, const char *pool, kh_err *err);
/* Show with qemu-img info --backing-chain. */
int kh_storage_volume_show(kh_storage *st, const char *pool, const char *name,
                           kh_storage_cb cb, void *opaque, kh_err *err);
/* Grow only: body {"size"}. A volume a running VM writes to is grown
 * online (QMP block_resize); KH_E_CONFLICT when it is shared read-only. */
int kh_storage_volume_resize(kh_storage *st, const char *pool, const char *name,
                             const json_t *body, kh_storage_cb cb, void *opaque, kh_err *err);
/* KH_E_CONFLICT while a VM refers to it or another volume is based on it. */
int kh_storage_volume_delete(kh_storage *st, const char *pool, const char *name, kh_err *err);
/* Would kh_storage_volume_delete of ref ("pool/name") succeed once VM
 * `self` (its user, about to go) is gone? 0, or -1 with err: KH_E_CONFLICT
 * naming the other VM that uses it or a volume based on it (a template's
 * base with clones), or that another operation on it is under way. */
int kh_storage_volume_delete_check(kh_storage *st, const char *ref, const char *self,
                                   kh_err *err);

/* Upload: a new volume from bytes streamed in (the API's PUT), written to
 * a "<id>.part" file in the pool (removed at the next daemon start if the
 * daemon dies meanwhile). begin: format is the caller's word ("qcow2" |
 * "raw"); expected is the announced length or UINT64_MAX. 409 for a name in
 * use, 413 when expected is over the cap (the pool's free space, at most
 * KH_VOLUME_SIZE_MAX). write: 413 past the cap or on ENOSPC. finish: qemu-img
 * info -f FORMAT checks the result (the format matches; no backing or data
 * file; not encrypted; virtual size at most KH_VOLUME_SIZE_MAX), then the
 * file is renamed into place and recorded; cb gets the volume. After a
 * failed write the caller aborts. Every failure leaves nothing behind. */
typedef struct kh_volume_upload kh_volume_upload;
kh_volume_upload *kh_storage_upload_begin(kh_storage *st, const char *pool, const char *name,
                                          const char *format, uint64_t expected, kh_err *err);
int kh_storage_upload_write(kh_volume_upload *u, const void *data, size_t len, kh_err *err);
/* Consumes u (also on -1, when cb is never called). */
int kh_storage_upload_finish(kh_volume_upload *u, kh_storage_cb cb, void *opaque, kh_err *err);
void kh_storage_upload_abort(kh_volume_upload *u);
/* A second bound, a quota's: more than max bytes streamed in, or an image
 * whose virtual size is more than max, is KH_E_FORBIDDEN "<words>, N
 * asked)" (words: the start of the quota's refusal, copied). */
void kh_storage_upload_limit(kh_volume_upload *u, uint64_t max, const char *words);
/* Download: the volume's image file, opened read-only (the caller closes
 * it), and its size. 409 while a running VM writes to it. */
int kh_storage_volume_open(kh_storage *st, const char *pool, const char *name, uint64_t *size,
                           kh_err *err);

/* A new qcow2 volume name in pool, converted from the host file path of
 * format src_format ("vmdk" only: OVA import) - or, when size > 0, from
 * the size bytes at offset in path (a disk inside an OVA, read through
 * QEMU's raw driver, which reads nothing outside that window). The image
 * is checked first with qemu-img info (kh_imginfo_check: no backing file,
 * a VMDK whose extents are all the image itself). Asynchronous as
 * kh_storage_volume_create. */
int kh_storage_volume_convert_in(kh_storage *st, const char *pool, const char *name,
                                 const char *path, uint64_t offset, uint64_t size,
                                 const char *src_format, kh_storage_cb cb, void *opaque,
                                 kh_err *err);

/* A full copy of volume src_ref (its whole chain flattened) as a new
 * volume dst_name in the same pool, with qemu-img convert -p; on_progress
 * (may be NULL) gets 0..100 as it goes. */
typedef void (*kh_storage_progress_cb)(int percent, void *opaque);
int kh_storage_volume_copy(kh_storage *st, const char *src_ref, const char *dst_name,
                           kh_storage_progress_cb on_progress, kh_storage_cb cb, void *opaque,
                           kh_err *err);
/* Mark a volume as a read-only base (templates) or writable again. */
int kh_storage_volume_set_readonly(kh_storage *st, const char *ref, bool readonly, kh_err *err);

/* Reset the guest identity in volume ref ("pool/name"; the top image is
 * written): /etc/machine-id emptied, /var/lib/dbus/machine-id and
 * /etc/ssh/ssh_host_* removed, in the ext2/3/4 filesystem holding /etc
 * (the whole disk or a partition). 1 done (*nkeys += the host key files
 * removed), 0 no such filesystem on it (nothing changed), -1 with err (an
 * encrypted volume, a filesystem whose journal needs recovery, a failed
 * helper). Synchronous (qemu-storage-daemon FUSE export + debugfs). */
int kh_storage_identity_reset(kh_storage *st, const char *ref, unsigned *nkeys, kh_err *err);

/* Templates: VMs (by id) whose volumes are read-only bases for clones. The
 * mark belongs to the VM row: kh_store_vm_delete() removes it (cascade). */
int kh_storage_template_mark(kh_storage *st, const char *vm_id, kh_err *err);
/* 1 a template, 0 not (or st NULL), -1 a database error (KH_E_INTERNAL). */
int kh_storage_template_get(kh_storage *st, const char *vm_id, kh_err *err);
/* Old form of kh_storage_template_get() without an error channel: a
 * database error is logged and answers true (refuse rather than write
 * into a base). Callers should move to kh_storage_template_get(). */
bool kh_storage_is_template(kh_storage *st, const char *vm_id);

/* Snapshot records of VMs (internal qcow2 snapshots; instance/snapshot.c). A
 * record is written only after the snapshot exists in every image. */
int kh_storage_snapshot_add(kh_storage *st, const char *vm_id, const char *name, bool memory,
                            kh_err *err);
/* 1 found (*memory set), 0 not found, -1 error. */
int kh_storage_snapshot_get(kh_storage *st, const char *vm_id, const char *name, bool *memory,
                            kh_err *err);
int kh_storage_snapshot_remove(kh_storage *st, const char *vm_id, const char *name, kh_err *err);
/* [{"name", "memory", "created_at", "parent", "current"}], oldest first.
 * The snapshots of a VM form a tree: a new one's parent is the VM's current
 * snapshot (NULL at first), and it becomes current; a revert makes its
 * target current; a removed one's children take its parent, and if it was
 * current its parent becomes current. NULL with err set on a database
 * error. */
json_t *kh_storage_snapshot_list_err(kh_storage *st, const char *vm_id, kh_err *err);
/* 0 with *out the current snapshot (caller frees) or NULL when none; -1 on
 * a database error. */
int kh_storage_snapshot_current_get(kh_storage *st, const char *vm_id, char **out,
                                    kh_err *err);
int kh_storage_snapshot_set_current(kh_storage *st, const char *vm_id, const char *name,
                                    kh_err *err);

/* A volume reference "pool/name" resolved to its chain of files, top first. */
typedef struct kh_volume_chain {
    size_t n;
    struct {
        char id[37];
        char *path;
        kh_disk_format format;
        bool encrypted; /* LUKS: its own key (kh_storage_volume_secret_fd) */
    } layer[KH_VOLUME_CHAIN_MAX];
    bool readonly;       /* the top volume is a read-only base (a template) */
    unsigned dependents; /* volumes based on the top one */
    bool encrypted;      /* the top volume is LUKS-encrypted (kh_storage_volume_secret) */
} kh_volume_chain;

/* KH_E_INVALID for a malformed reference, KH_E_NOTFOUND when unknown. */
int kh_storage_resolve(kh_storage *st, const char *ref, kh_volume_chain *out, kh_err *err);
void kh_volume_chain_clear(kh_volume_chain *c);

/* The passphrase of an encrypted volume (by id) - its random per-volume
 * key, unwrapped with the host master key (STATE_DIR/master.key, 0600,
 * AES-256-GCM) - in a sealed memfd (close-on-exec) for a child to inherit
 * and read as a QEMU secret object ("file=/proc/self/fd/N"). The key never
 * appears in an argv, a file, a log line or the API. -1 with err set. */
int kh_storage_volume_secret_fd(kh_storage *st, const char *volume_id, kh_err *err);
/* The key of a VM's TPM state (swtpm --key, AES-256, 64 hex digits in a
 * sealed memfd): derived from the host master key and the VM id, so it is
 * never stored. -1 with err set. */
int kh_storage_vm_tpm_key_fd(kh_storage *st, const char *vm_id, kh_err *err);

/* Parse "pool/name" (both checked names) into its parts (caller frees). */
int kh_volume_ref_parse(const char *ref, char **pool, char **name, kh_err *err);
/* imginfo.c: may a volume take the image qemu-img describes (info_text,
 * `qemu-img info --output=json`)? The format asked for, a virtual size up
 * to KH_VOLUME_SIZE_MAX, no backing or external data file, not encrypted.
 * 0 with the virtual size and the actual size (-1: not given) out; -1 with
 * err set, its message starting with what ("import: /x.qcow2"). */
int kh_imginfo_check(const char *info_text, const char *format, const char *what,
                     uint64_t *vsize_out, int64_t *actual_out, kh_err *err);
/* A size: a JSON integer (bytes) or a string "512M", "10G", "1TiB"... */
int kh_volume_size_parse(const json_t *v, uint64_t *out, kh_err *err);

#endif
