/* tpm.h - a VM's TPM 2.0: one swtpm per VM.
 *
 * kh_tpm_start() starts `swtpm socket --tpm2` through host/spawn.c with its
 * state in STATE/tpm (a directory of the VM, kept across starts and
 * removed with the VM) and its control channel on one end of a socketpair
 * (--ctrl type=unixio,clientfd=N); the other end goes to QEMU
 * (-chardev socket,fd=M, qemu/argv.h tpm_fd). swtpm runs with -t: it ends
 * when that connection is lost, that is when QEMU ends, so it lives exactly
 * as long as its QEMU, across daemon restarts (own session, like QEMU) and
 * in the VM's cgroup. Its log is STATE/swtpm.log. With key_fd the state is
 * encrypted (--key, AES-256-CBC; the launcher derives the VM's key). */
#ifndef KH_QEMU_TPM_H
#define KH_QEMU_TPM_H

#include <stdbool.h>

#include <jansson.h>
#include <sys/types.h>

#include "host/spawn.h"
#include "util/err.h"

typedef struct kh_tpm_opts {
    const char *binary;    /* NULL: /usr/bin/swtpm */
    const char *state_dir; /* the VM's state dir; "tpm" is made inside */
    bool drop_privileges;  /* run as uid/gid (the state dir is chowned) */
    uid_t uid;
    gid_t gid;
    const kh_cgroups *cgroups;
    const char *vm_id;
    int key_fd;            /* -1, or a file with an AES-256 key in hex (state encryption) */
} kh_tpm_opts;

/* Start the VM's swtpm; *qemu_fd gets QEMU's end of the control channel
 * (CLOEXEC; the caller passes it to QEMU and closes it), *pid the swtpm.
 * Returns 0, or -1 with err set (nothing left running). */
int kh_tpm_start(const kh_tpm_opts *o, int *qemu_fd, pid_t *pid, kh_err *err);

/* The TPM state as data, for snapshots and backups: STATE/tpm's files as
 * {"file name": "hex of its bytes"} (swtpm's own files: encrypted with the
 * VM's key when it has one, so only this VM's swtpm reads them). get: an
 * empty object when the VM has no state yet, NULL with err. put replaces
 * the whole directory with files (the old state goes only once the new one
 * is written; the next kh_tpm_start() hands them to the QEMU user); -1 with
 * err (KH_E_INVALID for names that are not swtpm's or bytes that are not
 * hex). Only while no swtpm runs for the VM. */
json_t *kh_tpm_state_get(const char *state_dir, kh_err *err);
int kh_tpm_state_put(const char *state_dir, const json_t *files, kh_err *err);

/* A TPM state brought from another host (libvirt's swtpm): _plain finds
 * the data of an unencrypted swtpm state file (its permanent state,
 * tpm2-00.permall), pointing into file; -1 with err KH_E_INVALID when it
 * is not one or is encrypted. _import makes it the VM's whole TPM state
 * (STATE/tpm/tpm2-00.permall, written in swtpm's format and encrypted with
 * the key of key_fd, as kh_tpm_start gives it to swtpm; key_fd -1: plain),
 * replacing what was there. Only while no swtpm runs for the VM. */
int kh_tpm_permall_plain(const unsigned char *file, size_t len, const unsigned char **data,
                         size_t *data_len, kh_err *err);
int kh_tpm_state_import(const char *state_dir, const unsigned char *data, size_t len,
                        int key_fd, kh_err *err);

#endif
