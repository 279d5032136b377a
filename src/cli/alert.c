/* alert.c - the rows and handlers of `kvmhost alert list|rules|rules set|webhook set|webhook clear`.
 *
 * GET /api/v1/alerts gives {"rules", "active", "webhook"}; PUT
 * /api/v1/alerts/rules takes {"rules": [...], "webhook": {"url",
 * "timeout_seconds"} | null} and replaces the rules whole. So the webhook
 * commands read the rules and send them back unchanged beside the new
 * webhook, and `rules set` leaves "webhook" out (the daemon keeps it) unless
 * the file names one. */
#include "cli/nouns.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/args.h"
#include "cli/client.h"
#include "cli/output.h"
#include "util/fs.h"
#include "util/mem.h"

#define ALERTS_PATH "/api/v1/alerts"
#define RULES_PATH "/api/v1/alerts/rules"
#define RULES_FILE_MAX (1 << 20)

static const char *str_or(const json_t *o, const char *key, const char *dflt)
{
    const char *s = cli_jstr(o, key);
    return s ? s : dflt;
}

static void webhook_line(const json_t *wh)
{
    if (!json_is_object(wh)) {
        printf("webhook: none\n");
        return;
    }
    printf("webhook: %s (timeout %gs; sent %lld, failed %lld, dropped %lld)\n",
           str_or(wh, "url", "?"), json_number_value(json_object_get(wh, "timeout_seconds")),
           (long long)json_integer_value(json_object_get(wh, "sent")),
           (long long)json_integer_value(json_object_get(wh, "failed")),
           (long long)json_integer_value(json_object_get(wh, "dropped")));
}

static void active_human(const json_t *resp)
{
    const json_t *act = json_object_get(resp, "active");
    if (!json_array_size(act)) {
        printf("no alert pending or firing\n");
    } else {
        static const char *const head[] = { "RULE", "VM", "STATE", "FOR", "VALUE", "ETA" };
        cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
        double now = (double)time(NULL);
        size_t i;
        json_t *x;
        json_array_foreach(act, i, x) {
            char buf[32];
            cli_table_add(t, str_or(x, "rule", ""));
            cli_table_add(t, str_or(x, "vm", "-"));
            cli_table_add(t, str_or(x, "state", ""));
            double since = json_number_value(json_object_get(x, "since"));
            cli_fmt_duration(now > since ? now - since : 0, buf, sizeof(buf));
            cli_table_add(t, buf);
            cli_table_addf(t, "%g", json_number_value(json_object_get(x, "value")));
            const json_t *eta = json_object_get(x, "eta_seconds");
            if (json_is_number(eta)) {
                cli_fmt_duration(json_number_value(eta), buf, sizeof(buf));
                cli_table_add(t, buf);
            } else {
                cli_table_add(t, "-");
            }
        }
        cli_print_free(cli_table_render(t));
        cli_table_free(t);
    }
    webhook_line(json_object_get(resp, "webhook"));
}

static void rules_human(const json_t *resp)
{
    const json_t *rules = json_object_get(resp, "rules");
    if (!json_array_size(rules)) {
        printf("no alert rules\n");
    } else {
        static const char *const head[] = { "NAME", "SCOPE", "METRIC", "CONDITION", "FOR",
                                            "TREND" };
        cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
        size_t i;
        json_t *r;
        json_array_foreach(rules, i, r) {
            char buf[32];
            cli_table_add(t, str_or(r, "name", ""));
            cli_table_add(t, str_or(r, "scope", ""));
            cli_table_add(t, str_or(r, "metric", ""));
            cli_table_addf(t, "%s %g", str_or(r, "op", "?"),
                           json_number_value(json_object_get(r, "threshold")));
            cli_fmt_duration(json_number_value(json_object_get(r, "for_seconds")), buf,
                             sizeof(buf));
            cli_table_add(t, buf);
            const json_t *ps = json_object_get(r, "predict_seconds");
            if (json_is_number(ps)) {
                char win[32];
                cli_fmt_duration(json_number_value(ps), buf, sizeof(buf));
                cli_fmt_duration(json_number_value(json_object_get(r, "window_seconds")), win,
                                 sizeof(win));
                cli_table_addf(t, "within %s (window %s)", buf, win);
            } else {
                cli_table_add(t, "-");
            }
        }
        cli_print_free(cli_table_render(t));
        cli_table_free(t);
    }
    webhook_line(json_object_get(resp, "webhook"));
}

/* The webhook as a PUT body takes it: {"url", "timeout_seconds"} or null
 * (a new reference). GET adds the counters, which PUT refuses. */
static json_t *webhook_conf(const json_t *wh)
{
    if (!json_is_object(wh))
        return json_null();
    json_t *o = json_object();
    json_object_set(o, "url", json_object_get(wh, "url"));
    if (json_object_get(wh, "timeout_seconds"))
        json_object_set(o, "timeout_seconds", json_object_get(wh, "timeout_seconds"));
    return o;
}

/* GET the alerts; NULL with err. */
static json_t *alerts_get(cli_ctx *ctx, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *resp = NULL;
    if (!c || cli_client_json(c, "GET", ALERTS_PATH, NULL, &resp, NULL, err) < 0)
        return NULL;
    return resp;
}

/* PUT body; print the rules (or the whole answer with --json). */
static int rules_put(cli_ctx *ctx, const json_t *body, const char *done, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *resp = NULL;
    if (!c || cli_client_json(c, "PUT", RULES_PATH, body, &resp, NULL, err) < 0)
        return -1;
    if (ctx->json) {
        cli_print_json(stdout, resp);
    } else {
        /* kvmhostd saves them before it applies them: a PUT that could
         * not save fails and changes nothing. */
        printf("%s, saved\n", done);
        rules_human(resp);
    }
    json_decref(resp);
    return 0;
}

/* GET the alerts; print them with human(), or with --json the part that
 * json_part() picks (a new reference). */
static int alerts_show(cli_ctx *ctx, json_t *(*json_part)(const json_t *),
                       void (*human)(const json_t *), kh_err *err)
{
    json_t *resp = alerts_get(ctx, err);
    if (!resp)
        return -1;
    if (ctx->json) {
        json_t *out = json_part(resp);
        cli_print_json(stdout, out);
        json_decref(out);
    } else {
        human(resp);
    }
    json_decref(resp);
    return 0;
}

static json_t *active_part(const json_t *resp)
{
    return json_pack("{s:O, s:O}", "active", json_object_get(resp, "active"), "webhook",
                     json_object_get(resp, "webhook"));
}

/* The shape `alert rules set --file` reads back. */
static json_t *rules_part(const json_t *resp)
{
    return json_pack("{s:O, s:o}", "rules", json_object_get(resp, "rules"), "webhook",
                     webhook_conf(json_object_get(resp, "webhook")));
}

static int cli_do_alert_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return alerts_show(ctx, active_part, active_human, err);
}

static int cli_do_alert_rules(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return alerts_show(ctx, rules_part, rules_human, err);
}

static int cli_do_alert_rules_set(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    const char *path = cli_arg(a, "file");
    json_t *j = kh_fs_read_json(path, RULES_FILE_MAX, err);
    if (!j)
        return -1;
    /* A bare array is the rules alone. */
    json_t *body = json_is_array(j) ? json_pack("{s:O}", "rules", j) : json_incref(j);
    json_decref(j);
    if (!json_is_object(body) || !json_is_array(json_object_get(body, "rules"))) {
        kh_err_set(err, KH_E_INVALID,
                   "%s: must hold {\"rules\": [...]} (and optionally \"webhook\") or an array "
                   "of rules", path);
        json_decref(body);
        return -1;
    }
    char done[64];
    size_t n = json_array_size(json_object_get(body, "rules"));
    snprintf(done, sizeof(done), "alert rules replaced: %zu rule%s", n, n == 1 ? "" : "s");
    int rc = rules_put(ctx, body, done, err);
    json_decref(body);
    return rc;
}

/* Replace the webhook (conf stolen; json null clears it), keeping the rules. */
static int webhook_put(cli_ctx *ctx, json_t *conf, const char *done, kh_err *err)
{
    json_t *cur = alerts_get(ctx, err);
    if (!cur) {
        json_decref(conf);
        return -1;
    }
    json_t *rules = json_object_get(cur, "rules");
    rules = json_is_array(rules) ? json_incref(rules) : json_array();
    json_t *body = json_pack("{s:o, s:o}", "rules", rules, "webhook", conf);
    json_decref(cur);
    int rc = rules_put(ctx, body, done, err);
    json_decref(body);
    return rc;
}

static int cli_do_alert_webhook_set(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *conf = json_pack("{s:s?}", "url", a->pos);
    if (!conf || !json_object_get(conf, "url")) {
        json_decref(conf);
        kh_err_set(err, KH_E_INVALID, "URL: must be UTF-8 text");
        return -1;
    }
    if (cli_arg(a, "timeout")) {
        double t;
        if (cli_parse_seconds(cli_arg(a, "timeout"), "--timeout", &t, err) < 0) {
            json_decref(conf);
            return -1;
        }
        json_object_set_new(conf, "timeout_seconds", json_real(t));
    }
    return webhook_put(ctx, conf, "alert webhook set", err);
}

static int cli_do_alert_webhook_clear(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return webhook_put(ctx, json_null(), "alert webhook cleared", err);
}

/* ---- the command rows (assembled in commands.c) ---- */

static const cli_opt opts_alert_rules_set[] = {
    { "file", "PATH", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "A JSON file: {\"rules\": [...]} with an optional \"webhook\" (the shape 'kvmhost "
      "--json alert rules' prints), or an array of rules alone." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_alert_webhook_set[] = {
    { "timeout", "SECONDS", CLI_OPT_ARG,
      "Give up a POST after this long, 1 to 60 (default 5)." },
    { NULL, NULL, 0, NULL },
};

const cli_cmd cli_alert_cmds[] = {
    {
        "alert", "list", NULL, "list the alerts pending or firing",
        "The alerts whose rule holds now, one per line: rule, VM (- for host rules), state "
        "(pending until the condition has held for the rule's for_seconds, then firing), how "
        "long, the value, and for a trend rule when the threshold is reached. Then the "
        "webhook and its counters of POSTs sent, failed and dropped.",
        NULL,
        "$ kvmhost alert list\n"
        "$ kvmhost --json alert list",
        cli_do_alert_list,
    },
    {
        "alert", "rules", NULL, "show the alert rules",
        "The rules, one per line: name, scope (host or vm), metric, condition, how long it "
        "must hold, and for a trend rule its horizon and window; then the webhook. With "
        "--json, {\"rules\", \"webhook\"} as 'alert rules set --file' reads it. See "
        "docs/metrics.md for the metrics.",
        NULL,
        "$ kvmhost alert rules\n"
        "$ kvmhost --json alert rules > rules.json",
        cli_do_alert_rules,
    },
    {
        "alert", "rules set", NULL, "replace the alert rules",
        "Replace every rule with those of the file. kvmhostd saves them and keeps them across "
        "restarts; it prints \"alert rules replaced: N rules, saved\". (A kvmhostd started "
        "with --alert-rules FILE applies that file at start only when it is new or changed "
        "since it was last applied: the newer of the two wins.) Alerts of rules that "
        "changed or went away are resolved. The webhook stays as it is unless the file has "
        "\"webhook\". A file that is not JSON, or a rule kvmhostd refuses, changes nothing "
        "(exit status 2).",
        opts_alert_rules_set,
        "$ kvmhost alert rules set --file rules.json",
        cli_do_alert_rules_set,
    },
    {
        "alert", "webhook set", "URL", "POST alerts to a URL",
        "Make kvmhostd POST every alert.firing and alert.resolved event as JSON to URL (http "
        "or https). The rules stay as they are. kvmhostd saves the webhook with the rules, "
        "across restarts. Failed POSTs are counted (see 'alert list'), never retried.",
        opts_alert_webhook_set,
        "$ kvmhost alert webhook set https://hooks.example/kvmhost --timeout 10",
        cli_do_alert_webhook_set,
    },
    {
        "alert", "webhook clear", NULL, "stop POSTing alerts",
        "Turn the webhook off (saved, across restarts). The rules stay as they are.",
        NULL,
        "$ kvmhost alert webhook clear",
        cli_do_alert_webhook_clear,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};
