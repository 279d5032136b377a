/* commands.c - the one command table of `kvmhost`, assembled from the
 * per-noun row tables (nouns.h) in the order `kvmhost --help` lists them,
 * the noun summaries, and the lookups on the table.
 */
#include "cli/commands.h"

#include <stdlib.h>
#include <string.h>

#include "cli/nouns.h"
#include "util/mem.h"

/* The per-noun tables, in help order (vm nic after network, volume delete
 * after disk: the order the single table had). */
static const cli_cmd *const parts[] = {
    cli_vm_cmds,
    cli_porting_cmds,
    cli_network_cmds,
    cli_vm_nic_cmds,
    cli_secgroup_cmds,
    cli_alert_cmds,
    cli_host_cmds,
    cli_cluster_cmds,
    cli_snapshot_cmds,
    cli_template_cmds,
    cli_pool_cmds,
    cli_volume_cmds,
    cli_disk_cmds,
    cli_volume_delete_cmds,
    cli_access_cmds,
    cli_backup_cmds,
    cli_login_cmds,
};

#define CLI_MAX_COMMANDS 128

const cli_cmd *cli_commands_all(void)
{
    static cli_cmd all[CLI_MAX_COMMANDS + 1];
    static bool built;
    if (built)
        return all;
    size_t n = 0;
    for (size_t i = 0; i < KH_ARRAY_LEN(parts); i++) {
        for (const cli_cmd *c = parts[i]; c->noun; c++) {
            if (n == CLI_MAX_COMMANDS)
                abort(); /* raise CLI_MAX_COMMANDS */
            all[n++] = *c;
        }
    }
    built = true; /* all[n] stays zero: the end row */
    return all;
}

static const struct {
    const char *noun;
    const char *summary;
} noun_summaries[] = {
    { "vm", "manage virtual machines" },
    { "network", "manage networks" },
    { "secgroup", "manage security groups (inbound firewall rules of NICs)" },
    { "alert", "show alerts and set alert rules and the webhook" },
    { "host", "show the host, list the hosts of the cluster" },
    { "cluster", "join hosts into a cluster (etcd) and see its members" },
    { "task", "follow long operations" },
    { "pool", "manage storage pools" },
    { "disk", "attach and detach the disks of VMs (hot-plug when they run)" },
    { "template", "make templates of VMs, to clone" },
    { "snapshot", "snapshot VMs and go back to a snapshot" },
    { "volume", "manage disk volumes in pools" },
    { "backup", "back up VMs into backup stores, restore, verify, prune" },
    { "backup-store", "manage backup stores" },
    { "events", "follow what happens on the host" },
    { "version", "show versions" },
    { "user", "manage local users (password login, tokens)" },
    { "group", "manage groups of users" },
    { "token", "manage API tokens of users (user!name)" },
    { "role", "list and define roles (sets of privileges)" },
    { "acl", "give users, groups and tokens roles on paths" },
    { "permissions", "show your effective privileges" },
    { "project", "manage projects and their quotas" },
    { "audit", "show the audit log" },
    { "login", "log in to a daemon with OIDC (single sign-on)" },
    { "logout", "revoke the stored OIDC login" },
};

/* ---- lookup ---- */

const cli_cmd *cli_cmd_find(const char *noun, const char *verb)
{
    for (const cli_cmd *c = cli_commands; c->noun; c++) {
        if (strcmp(c->noun, noun) != 0)
            continue;
        if (!c->verb && !verb)
            return c;
        if (c->verb && verb && strcmp(c->verb, verb) == 0)
            return c;
    }
    return NULL;
}

bool cli_noun_exists(const char *noun)
{
    for (const cli_cmd *c = cli_commands; c->noun; c++)
        if (strcmp(c->noun, noun) == 0)
            return true;
    return false;
}

bool cli_noun_has_verbs(const char *noun)
{
    for (const cli_cmd *c = cli_commands; c->noun; c++)
        if (strcmp(c->noun, noun) == 0 && c->verb)
            return true;
    return false;
}

const char *cli_noun_summary(const char *noun)
{
    for (size_t i = 0; i < KH_ARRAY_LEN(noun_summaries); i++)
        if (strcmp(noun_summaries[i].noun, noun) == 0)
            return noun_summaries[i].summary;
    return NULL;
}

