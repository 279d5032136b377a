/* firmware.h - UEFI firmware for q35 VMs: chosen from QEMU's firmware
 * descriptors (docs/interop/firmware.json), and the VM's own VARS copy.
 *
 * kh_firmware_select() reads the descriptors of the given directories
 * (later ones lower priority; a file name in an earlier directory hides the
 * same name in later ones, an empty file disables it, as QEMU's spec says),
 * sorted by file name, and picks the first that: has interface "uefi",
 * maps "flash" with raw executable and nvram-template, targets x86_64 on a
 * "pc-q35-*" machine, and has the features asked for. Secure Boot needs
 * "secure-boot" and "enrolled-keys" (Microsoft's keys in the template);
 * without it the firmware must not have "enrolled-keys" (Secure Boot
 * would be enforced), and one without "secure-boot" at all is preferred
 * (no SMM, faster under TCG). "requires-smm" sets smm. */
#ifndef KH_QEMU_FIRMWARE_H
#define KH_QEMU_FIRMWARE_H

#include <stdbool.h>

#include "util/err.h"

/* Where QEMU's descriptors live, in priority order (NULL-terminated). */
extern const char *const kh_firmware_default_dirs[];

typedef struct kh_firmware_choice {
    char *descriptor;    /* the chosen descriptor's path */
    char *code;          /* executable (pflash0), read-only */
    char *vars_template; /* nvram-template, copied per VM */
    bool smm;            /* "requires-smm" */
    bool secure_boot;    /* "secure-boot" with "enrolled-keys" */
} kh_firmware_choice;

/* Pick the firmware; KH_E_UNSUPPORTED when none fits (the message says
 * what was asked). dirs: NULL = kh_firmware_default_dirs. */
int kh_firmware_select(const char *const *dirs, bool secure_boot, kh_firmware_choice *out,
                       kh_err *err);
void kh_firmware_choice_clear(kh_firmware_choice *c);

/* The VARS file's name in the state dir for c (an import writes it there
 * before the first start: kh_firmware_vars_open then keeps it). */
const char *kh_firmware_vars_name(const kh_firmware_choice *c);

/* The VM's VARS file in state_dir ("uefi-vars.fd", "uefi-vars-sb.fd" for
 * Secure Boot: a different template, so switching keeps both), copied from
 * the template when missing; opened O_RDWR|O_CLOEXEC, owned by uid/gid when
 * chown is set. Returns the fd, or -1 with err set. */
int kh_firmware_vars_open(const kh_firmware_choice *c, const char *state_dir, bool chown_it,
                          unsigned uid, unsigned gid, kh_err *err);

#endif
