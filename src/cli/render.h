/* render.h - the views for people of the API objects that need more than
 * one "key: value" per member: the VM list and a VM (with its NICs and
 * their addresses), a network (its NICs and forwards as lines), DHCP
 * leases, a volume and a pool (sizes in one unit style), the host (load
 * and uptime). Pure: JSON in, text out (the caller frees), so the unit
 * tests check the layout; `now` is seconds since the epoch. --json output
 * never goes through here.
 */
#ifndef KH_CLI_RENDER_H
#define KH_CLI_RENDER_H

#include <jansson.h>

/* {"vms": [...]} as the `vm list` table. */
char *cli_render_vm_list(const json_t *resp, double now);
/* One VM as `vm show` prints it. */
char *cli_render_vm(const json_t *vm, double now);
/* One NIC of a VM on one line: "0: lan, mac ..., address 10.10.0.5
 * (reserved), security groups web+ssh". */
char *cli_render_nic(size_t index, const json_t *nic, double now);
/* The addresses of a VM, for the ADDRESS column ("-" when none known). */
char *cli_render_vm_addresses(const json_t *vm);
char *cli_render_network(const json_t *net);
/* {"leases": [...]} as the `network leases` table. */
char *cli_render_leases(const json_t *resp, double now);
char *cli_render_volume(const json_t *vol);
char *cli_render_pool(const json_t *pool);
char *cli_render_host(const json_t *host);

#endif
