/* secgroup.c - security groups (see secgroup.h). */
#include "net/secgroup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/schema.h"
#include "util/check.h"
#include "util/inet.h"
#include "util/mem.h"

void kh_secgroup_free(kh_secgroup *g)
{
    if (!g)
        return;
    free(g->name);
    free(g->rules);
    free(g);
}

static int parse_ports(const char *s, kh_sg_rule *r, const char *what, kh_err *err)
{
    char *end = NULL;
    long a = strtol(s, &end, 10), b = a;
    if (end && *end == '-')
        b = strtol(end + 1, &end, 10);
    if (!end || *end || !*s || *s < '0' || *s > '9' || a < 1 || b > 65535 || a > b) {
        kh_err_set(err, KH_E_INVALID, "%s: must be a port or a range like 8000-8080", what);
        return -1;
    }
    r->port_min = (unsigned)a;
    r->port_max = (unsigned)b;
    return 0;
}

static int parse_rule(const json_t *o, kh_sg_rule *r, size_t i, kh_err *err)
{
    char what[48];
    snprintf(what, sizeof(what), "rules[%zu]", i);
    if (!json_is_object(o)) {
        kh_err_set(err, KH_E_INVALID, "%s: must be an object", what);
        return -1;
    }
    const char *dir = json_string_value(json_object_get(o, "direction"));
    if (json_object_get(o, "direction") && (!dir || strcmp(dir, "in") != 0)) {
        kh_err_set(err, KH_E_INVALID,
                   "%s.direction: only \"in\" (outbound traffic is always allowed)", what);
        return -1;
    }
    const char *proto = json_string_value(json_object_get(o, "proto"));
    if (!proto)
        proto = "tcp";
    if (strcmp(proto, "tcp") != 0 && strcmp(proto, "udp") != 0 && strcmp(proto, "icmp") != 0 &&
        strcmp(proto, "any") != 0) {
        kh_err_set(err, KH_E_INVALID, "%s.proto: must be tcp, udp, icmp or any", what);
        return -1;
    }
    snprintf(r->proto, sizeof(r->proto), "%s", proto);
    const json_t *ports = json_object_get(o, "ports");
    if (ports) {
        snprintf(what, sizeof(what), "rules[%zu].ports", i);
        if (strcmp(proto, "tcp") != 0 && strcmp(proto, "udp") != 0) {
            kh_err_set(err, KH_E_INVALID, "%s: only with tcp or udp", what);
            return -1;
        }
        if (json_is_integer(ports)) {
            json_int_t p = json_integer_value(ports);
            if (p < 1 || p > 65535) {
                kh_err_set(err, KH_E_INVALID, "%s: must be a port from 1 to 65535", what);
                return -1;
            }
            r->port_min = r->port_max = (unsigned)p;
        } else if (!json_is_string(ports) ||
                   parse_ports(json_string_value(ports), r, what, err) < 0) {
            kh_err_set(err, KH_E_INVALID, "%s: must be a port or a range like 8000-8080", what);
            return -1;
        }
    }
    const json_t *cidr = json_object_get(o, "cidr");
    snprintf(what, sizeof(what), "rules[%zu].cidr", i);
    if (cidr) {
        const char *c = json_string_value(cidr);
        if (c && strchr(c, ':')) {
            r->family = 6;
            if (kh_inet_cidr6_parse(c, r->cidr6, &r->prefix, what, err) < 0)
                return -1;
        } else {
            r->family = 4;
            if (!c || kh_inet_cidr_parse(c, &r->cidr, &r->prefix, 0, 32, what, err) < 0) {
                kh_err_set(err, KH_E_INVALID,
                           "%s: must be an IPv4 network like 10.0.0.0/8 or an IPv6 network "
                           "like 2001:db8::/32", what);
                return -1;
            }
        }
    }
    return 0;
}

kh_secgroup *kh_secgroup_from_json(const json_t *obj, kh_err *err)
{
    if (!json_is_object(obj)) {
        kh_err_set(err, KH_E_INVALID, "security group: must be a JSON object");
        return NULL;
    }
    /* keys, types, enums of the group and its rules: SecurityGroup.json */
    if (kh_schema_check("SecurityGroup", obj, "", err) < 0)
        return NULL;
    const char *name = json_string_value(json_object_get(obj, "name"));
    if (!name) {
        kh_err_set(err, KH_E_INVALID, "security group name is required");
        return NULL;
    }
    if (kh_check_name(name, "security group name", err) < 0)
        return NULL;
    const json_t *rules = json_object_get(obj, "rules");
    if (rules && (!json_is_array(rules) || json_array_size(rules) > KH_SG_RULES_MAX)) {
        kh_err_set(err, KH_E_INVALID, "rules: must be an array of at most %d rules",
                   KH_SG_RULES_MAX);
        return NULL;
    }
    kh_secgroup *g = xcalloc(1, sizeof(*g));
    g->name = xstrdup(name);
    size_t n = json_array_size(rules);
    g->rules = xcalloc(n + 1, sizeof(*g->rules));
    for (size_t i = 0; i < n; i++) {
        if (parse_rule(json_array_get(rules, i), &g->rules[i], i, err) < 0) {
            kh_secgroup_free(g);
            return NULL;
        }
    }
    g->nrules = n;
    return g;
}

json_t *kh_secgroup_to_json(const kh_secgroup *g)
{
    json_t *rules = json_array();
    for (size_t i = 0; i < g->nrules; i++) {
        const kh_sg_rule *r = &g->rules[i];
        json_t *o = json_pack("{s:s,s:s}", "direction", "in", "proto", r->proto);
        if (r->port_min) {
            char p[16];
            if (r->port_min == r->port_max)
                snprintf(p, sizeof(p), "%u", r->port_min);
            else
                snprintf(p, sizeof(p), "%u-%u", r->port_min, r->port_max);
            json_object_set_new(o, "ports", json_string(p));
        }
        char a[KH_IPV6_STRLEN], c[KH_IPV6_STRLEN + 4];
        if (r->family == 4)
            kh_inet_ipv4_format(r->cidr, a);
        else if (r->family == 6)
            kh_inet_ipv6_format(r->cidr6, a);
        if (r->family) { /* absent: anywhere, both families */
            snprintf(c, sizeof(c), "%s/%u", a, r->prefix);
            json_object_set_new(o, "cidr", json_string(c));
        }
        json_array_append_new(rules, o);
    }
    return json_pack("{s:s,s:o}", "name", g->name, "rules", rules);
}
