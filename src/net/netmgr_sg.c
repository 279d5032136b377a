/* netmgr_sg.c - the network manager's security groups: list, show,
 * replace, rule add/delete, delete (refused while a NIC uses one), and the
 * check of a NIC's group list (netmgr.h); the rules reach the NICs through
 * kh_netmgr_apply_nft. */
#include "net/netmgr.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "net/netdb.h"
#include "net/netmgr_int.h"
#include "net/secgroup.h"
#include "util/check.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

static kh_secgroup **sg_find(kh_netmgr *nm, const char *name)
{
    for (size_t i = 0; i < nm->ngroups; i++)
        if (strcmp(nm->groups[i]->name, name) == 0)
            return &nm->groups[i];
    return NULL;
}

static bool binding_has_group(const kh_net_binding *b, const char *name)
{
    if (!b->groups)
        return false;
    size_t len = strlen(name);
    for (const char *p = b->groups; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t l = comma ? (size_t)(comma - p) : strlen(p);
        if (l == len && strncmp(p, name, len) == 0)
            return true;
        p = comma ? comma + 1 : NULL;
    }
    return false;
}

json_t *kh_netmgr_sg_list_json(kh_netmgr *nm)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < nm->ngroups; i++)
        json_array_append_new(arr, kh_secgroup_to_json(nm->groups[i]));
    return arr;
}

json_t *kh_netmgr_sg_get_json(kh_netmgr *nm, const char *name, kh_err *err)
{
    if (kh_check_name(name, "security group name", err) < 0)
        return NULL;
    kh_secgroup **g = sg_find(nm, name);
    if (!g) {
        kh_err_set(err, KH_E_NOTFOUND, "no security group named %s", name);
        return NULL;
    }
    return kh_secgroup_to_json(*g);
}

json_t *kh_netmgr_sg_put(kh_netmgr *nm, const char *name, const json_t *body, bool *created,
                         kh_err *err)
{
    if (kh_check_name(name, "security group name", err) < 0)
        return NULL;
    if (!json_is_object(body)) {
        kh_err_set(err, KH_E_INVALID, "security group: must be a JSON object");
        return NULL;
    }
    const char *bn = json_string_value(json_object_get(body, "name"));
    if (bn && strcmp(bn, name) != 0) {
        kh_err_set(err, KH_E_INVALID, "name: does not match the path");
        return NULL;
    }
    json_t *copy = json_deep_copy(body);
    json_object_set_new(copy, "name", json_string(name));
    kh_secgroup *g = kh_secgroup_from_json(copy, err);
    json_decref(copy);
    if (!g)
        return NULL;
    kh_secgroup **slot = sg_find(nm, name);
    g->created_at = slot ? (*slot)->created_at : kh_wall_time();
    json_t *j = kh_secgroup_to_json(g);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    int rc = kh_netdb_secgroup_put(nm->store, name, text, g->created_at, err);
    free(text);
    if (rc < 0) {
        json_decref(j);
        kh_secgroup_free(g);
        return NULL;
    }
    *created = !slot;
    if (slot) {
        kh_secgroup_free(*slot);
        *slot = g;
    } else {
        nm->groups = xreallocarray(nm->groups, nm->ngroups + 1, sizeof(kh_secgroup *));
        nm->groups[nm->ngroups++] = g;
    }
    kh_err e = KH_ERR_INIT;
    if (nm->nets && kh_netmgr_apply_nft(nm, &e) < 0)
        kh_log(KH_LOG_ERROR, "net.nft", "error=\"%s\"", e.msg);
    kh_log(KH_LOG_INFO, "net.sg.put", "security_group=%s rules=%zu", name, g->nrules);
    return j;
}

/* The group's rules (a new reference) for a read-modify-write that the
 * single-threaded loop makes atomic; NULL with err. */
static json_t *sg_rules_copy(kh_netmgr *nm, const char *name, kh_err *err)
{
    if (kh_check_name(name, "security group name", err) < 0)
        return NULL;
    kh_secgroup **slot = sg_find(nm, name);
    if (!slot) {
        kh_err_set(err, KH_E_NOTFOUND, "no security group named %s", name);
        return NULL;
    }
    json_t *g = kh_secgroup_to_json(*slot);
    json_t *rules = json_object_get(g, "rules");
    rules = json_is_array(rules) ? json_incref(rules) : json_array();
    json_decref(g);
    return rules;
}

static json_t *sg_put_rules(kh_netmgr *nm, const char *name, json_t *rules /* stolen */,
                            kh_err *err)
{
    json_t *body = json_pack("{s:o}", "rules", rules);
    bool created = false;
    json_t *g = kh_netmgr_sg_put(nm, name, body, &created, err);
    json_decref(body);
    return g;
}

json_t *kh_netmgr_sg_rule_add(kh_netmgr *nm, const char *name, const json_t *rule, kh_err *err)
{
    if (!json_is_object(rule)) {
        kh_err_set(err, KH_E_INVALID, "rule: must be a JSON object");
        return NULL;
    }
    json_t *rules = sg_rules_copy(nm, name, err);
    if (!rules)
        return NULL;
    if (json_array_size(rules) >= KH_SG_RULES_MAX) {
        kh_err_set(err, KH_E_INVALID, "security group %s has %d rules, the most it can have",
                   name, KH_SG_RULES_MAX);
        json_decref(rules);
        return NULL;
    }
    json_array_append_new(rules, json_deep_copy(rule));
    return sg_put_rules(nm, name, rules, err);
}

json_t *kh_netmgr_sg_rule_delete(kh_netmgr *nm, const char *name, const char *index,
                                 kh_err *err)
{
    json_t *rules = sg_rules_copy(nm, name, err);
    if (!rules)
        return NULL;
    char *end = NULL;
    long i = index ? strtol(index, &end, 10) : -1;
    if (!index || index[0] < '0' || index[0] > '9' || *end || i < 0 || (index[0] == '0' && index[1]) ||
        (size_t)i >= json_array_size(rules)) {
        kh_err_set(err, KH_E_NOTFOUND, "security group %s has no rule %s (rules are numbered "
                   "from 0, see the group)", name, index ? index : "");
        json_decref(rules);
        return NULL;
    }
    json_array_remove(rules, (size_t)i);
    return sg_put_rules(nm, name, rules, err);
}

int kh_netmgr_sg_delete(kh_netmgr *nm, const char *name, kh_err *err)
{
    if (kh_check_name(name, "security group name", err) < 0)
        return -1;
    kh_secgroup **slot = sg_find(nm, name);
    if (!slot) {
        kh_err_set(err, KH_E_NOTFOUND, "no security group named %s", name);
        return -1;
    }
    for (size_t i = 0; i < nm->nbinds; i++) {
        if (binding_has_group(&nm->binds[i], name)) {
            kh_err_set(err, KH_E_CONFLICT, "security group %s is used by vm %s", name,
                       nm->binds[i].vm);
            return -1;
        }
    }
    if (kh_netdb_secgroup_delete(nm->store, name, err) < 0)
        return -1;
    size_t idx = (size_t)(slot - nm->groups);
    kh_secgroup_free(*slot);
    memmove(&nm->groups[idx], &nm->groups[idx + 1],
            (nm->ngroups - idx - 1) * sizeof(kh_secgroup *));
    nm->ngroups--;
    return 0;
}

int kh_netmgr_groups_check(kh_netmgr *nm, const char *groups, kh_err *err)
{
    if (!groups)
        return 0;
    char *copy = xstrdup(groups), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        if (!sg_find(nm, t)) {
            kh_err_set(err, KH_E_INVALID, "security_groups: no security group named %s", t);
            rc = -1;
        }
    }
    free(copy);
    return rc;
}
