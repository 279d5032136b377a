/* cidata.h - cloud-init's NoCloud seed for a VM: the files (rendered by a
 * pure function from the spec's "cloud_init", unit-tested) and the
 * ISO9660 volume labelled "cidata" that carries them (genisoimage, or
 * xorriso's mkisofs mode, run through host/spawn.c).
 *
 * Files (JSON is YAML, so every value is escaped by construction):
 *   meta-data       {"instance-id": "<vm id>-<reprovision>", "local-hostname": H}
 *   user-data       cloud_init.user_data as given, or "#cloud-config" and
 *                   the rendered common keys (hostname, ssh_authorized_keys,
 *                   users, packages, runcmd)
 *   network-config  cloud_init.network_config (absent: cloud-init's DHCP)
 *   vendor-data     cloud_init.vendor_data (absent: none)
 * The instance-id changes only with "reprovision": editing the config on a
 * running or stopped VM does not rerun cloud-init's first-boot modules. */
#ifndef KH_QEMU_CIDATA_H
#define KH_QEMU_CIDATA_H

#include <jansson.h>

#include "util/err.h"

typedef struct kh_cidata {
    char *meta_data;
    char *user_data;
    char *network_config; /* NULL: no file */
    char *vendor_data;    /* NULL: no file */
} kh_cidata;

/* Render the seed of a VM (id, name) from its validated cloud_init object.
 * The hostname defaults to the VM name when that is a valid hostname. */
void kh_cidata_render(const json_t *ci, const char *vm_id, const char *vm_name, kh_cidata *out);
void kh_cidata_clear(kh_cidata *c);

/* Write the seed into iso_path (replaced atomically: a running QEMU keeps
 * reading the old one until the medium is swapped). Blocks for the run of
 * the ISO tool (some ms). mode: of the new file. */
int kh_cidata_write_iso(const kh_cidata *c, const char *iso_path, unsigned mode, kh_err *err);

#endif
