/* net_routes.c - /api/v1/networks: networks, leases, port forwards. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "util/mem.h"

void kh_net_routes_list(kh_http_req *req, void *app)
{
    kh_api *api = app;
    json_t *nets = kh_netmgr_list_json(api->net);
    kh_auth_filter(req, nets, "/networks/", KH_PRIV_NETWORK_AUDIT);
    kh_http_reply_json(req, 200, json_pack("{s:o}", "networks", nets));
}

void kh_net_routes_create(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *body = kh_http_req_json(req, &err);
    json_t *net = body ? kh_netmgr_create(api->net, body, &err) : NULL;
    if (!net) {
        kh_http_reply_error(req, &err);
        return;
    }
    char *loc = xasprintf("/api/v1/networks/%s",
                          json_string_value(json_object_get(net, "name")));
    kh_http_req_add_header(req, "Location", loc);
    free(loc);
    kh_http_reply_json(req, 201, net);
}

void kh_net_routes_get(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *net = kh_netmgr_get_json(api->net, kh_http_req_param(req, "name"), &err);
    if (!net) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, 200, net);
}

void kh_net_routes_delete(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (kh_netmgr_delete(api->net, kh_http_req_param(req, "name"), &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_data(req, 204, "application/json", "", 0);
}

void kh_net_routes_leases(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *l = kh_netmgr_leases_json(api->net, kh_http_req_param(req, "name"), &err);
    if (!l) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, 200, json_pack("{s:o}", "leases", l));
}

void kh_net_routes_forward_add(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *body = kh_http_req_json(req, &err);
    json_t *net = body ? kh_netmgr_forward_add(api->net, kh_http_req_param(req, "name"), body,
                                               &err)
                       : NULL;
    if (!net) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, 201, net);
}

void kh_net_routes_forward_delete(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    const char *proto = kh_http_req_param(req, "proto");
    const char *port = kh_http_req_param(req, "port");
    char *end = NULL;
    long p = port ? strtol(port, &end, 10) : 0;
    if (!proto || (strcmp(proto, "tcp") != 0 && strcmp(proto, "udp") != 0) || !end || *end ||
        p < 1 || p > 65535) {
        kh_err_set(&err, KH_E_INVALID, "a forward is named by tcp|udp and a port 1-65535");
        kh_http_reply_error(req, &err);
        return;
    }
    if (kh_netmgr_forward_delete(api->net, kh_http_req_param(req, "name"), proto, (unsigned)p,
                                 &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_data(req, 204, "application/json", "", 0);
}

/* ---- security groups ---- */

void kh_net_routes_sg_list(kh_http_req *req, void *app)
{
    kh_api *api = app;
    json_t *sgs = kh_netmgr_sg_list_json(api->net);
    kh_auth_filter(req, sgs, "/security-groups/", KH_PRIV_NETWORK_AUDIT);
    kh_http_reply_json(req, 200, json_pack("{s:o}", "security_groups", sgs));
}

void kh_net_routes_sg_get(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *g = kh_netmgr_sg_get_json(api->net, kh_http_req_param(req, "name"), &err);
    if (!g) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, 200, g);
}

void kh_net_routes_sg_put(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    bool created = false;
    json_t *body = kh_http_req_json(req, &err);
    json_t *g = body ? kh_netmgr_sg_put(api->net, kh_http_req_param(req, "name"), body,
                                        &created, &err)
                     : NULL;
    if (!g) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, created ? 201 : 200, g);
}

void kh_net_routes_sg_delete(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (kh_netmgr_sg_delete(api->net, kh_http_req_param(req, "name"), &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_data(req, 204, "application/json", "", 0);
}

void kh_net_routes_sg_rule_add(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *body = kh_http_req_json(req, &err);
    json_t *g = body ? kh_netmgr_sg_rule_add(api->net, kh_http_req_param(req, "name"), body, &err)
                     : NULL;
    if (!g) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, 201, g);
}

void kh_net_routes_sg_rule_delete(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *g = kh_netmgr_sg_rule_delete(api->net, kh_http_req_param(req, "name"),
                                         kh_http_req_param(req, "index"), &err);
    if (!g) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, 200, g);
}
