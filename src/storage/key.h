/* key.h - volume encryption keys.
 *
 * Every encrypted volume has its own random 256-bit key. It is stored only
 * wrapped (AES-256-GCM, the volume id as associated data, so a wrapped key
 * copied to another volume does not unwrap) by the host master key,
 * STATE_DIR/master.key (32 bytes, mode 0600, made at first start). The
 * passphrase QEMU and qemu-img read (the key's hex) exists in clear only in
 * a sealed memfd that a child inherits ("file=/proc/self/fd/N"): never in an
 * argv, a file, a log line or the API.
 */
#ifndef KH_STORAGE_KEY_H
#define KH_STORAGE_KEY_H

#include <stdbool.h>

#include "util/err.h"

#define KH_KEY_MASTER_LEN 32
#define KH_KEY_WRAPPED_HEX 121 /* iv (12) | ciphertext (32) | tag (16), in hex, + NUL */

typedef struct kh_key_master {
    unsigned char key[KH_KEY_MASTER_LEN];
} kh_key_master;

/* Load state_dir/master.key, making it at first use; refused unless it is
 * 32 bytes and not readable by group or others. */
int kh_key_master_load(kh_key_master *m, const char *state_dir, kh_err *err);
void kh_key_master_clear(kh_key_master *m);
/* A new random key for volume vol_id: its wrapped form into wrapped_hex,
 * and a memfd with the passphrase (the caller closes it), or -1. */
int kh_key_new(const kh_key_master *m, const char *vol_id, char wrapped_hex[KH_KEY_WRAPPED_HEX],
               kh_err *err);
/* The passphrase of a wrapped key in a memfd, or -1 (KH_E_INTERNAL when it
 * does not unwrap: another host's master key, or another volume's key);
 * what names the volume in the message. */
int kh_key_secret_fd(const kh_key_master *m, const char *vol_id, const char *wrapped_hex,
                     const char *what, kh_err *err);

/* A random 256-bit key that belongs to nothing and is never stored (a
 * temporary image's: a backup's fleecing overlay), its hex in a sealed
 * memfd (the caller closes it), or -1. */
int kh_key_ephemeral_fd(kh_err *err);

/* Wrap a raw 32-byte key (a backup store's) under the master key with aad as
 * associated data (the store's id): wrapped_hex as kh_key_new's. */
int kh_key_wrap(const kh_key_master *m, const char *aad, const unsigned char key[32],
                char wrapped_hex[KH_KEY_WRAPPED_HEX], kh_err *err);
/* The reverse: -1 with err (KH_E_INTERNAL) when it does not unwrap. */
int kh_key_unwrap(const kh_key_master *m, const char *aad, const char *wrapped_hex,
                  unsigned char key[32], kh_err *err);
/* A key derived from the master key for label (HMAC-SHA256), as 64 hex
 * digits in a sealed memfd (the caller closes it), or -1: a VM's own
 * keys ("vm-tpm:<vm id>": its TPM state) without storing anything. */
int kh_key_derived_fd(const kh_key_master *m, const char *label, kh_err *err);

#endif
