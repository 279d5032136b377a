/* alert.c - threshold alerts (alert.h), and the rules and webhook kept in
 * the store's alert_config table (instance/alert_schema.c). */
#include "instance/alert.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/schema.h"
#include "store/store.h"
#include "util/check.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define RULES_MAX 64
#define NAME_MAX_LEN 64
#define TREND_SLOTS 720    /* samples a trend rule regresses over, at most */
#define TREND_MIN_SAMPLES 5

typedef enum { OP_GT, OP_GE, OP_LT, OP_LE } alert_op;
static const char *const op_names[] = { ">", ">=", "<", "<=" };

typedef struct rule {
    char name[NAME_MAX_LEN + 1];
    bool vm;                 /* scope */
    char metric[64];
    alert_op op;
    double threshold;
    double for_seconds;
    double predict_seconds;  /* > 0: a trend rule */
    double window_seconds;   /* its regression window */
} rule;

/* The recent values of one (trend rule, subject), for the regression. */
typedef struct trend {
    size_t rule;
    char *vm;                /* NULL = host */
    double t[TREND_SLOTS], v[TREND_SLOTS];
    size_t head, n;          /* ring: oldest at head */
    bool fed;
    struct trend *next;
} trend;

/* One (rule, subject) whose condition holds now. */
typedef struct active {
    size_t rule;
    char *vm;                /* NULL = host */
    double since;
    double value;
    double predicted, eta;   /* trend rules: value at the horizon, seconds to the crossing */
    bool firing;
    bool fed;                /* seen this round */
    struct active *next;
} active;

struct kh_alerts {
    kh_events *events;
    kh_store *store;         /* borrowed; NULL: nothing is saved */
    kh_webhook *webhook;     /* borrowed, optional */
    rule rules[RULES_MAX];
    size_t nrules;
    active *act;
    trend *trends;
};

static json_t *event_data(const kh_alerts *a, const active *x)
{
    const rule *r = &a->rules[x->rule];
    json_t *data = json_pack("{s:s, s:s, s:s, s:f, s:s, s:f}", "rule", r->name, "scope",
                             r->vm ? "vm" : "host", "metric", r->metric, "value", x->value,
                             "op", op_names[r->op], "threshold", r->threshold);
    if (r->predict_seconds > 0) {
        json_object_set_new(data, "predict_seconds", json_real(r->predict_seconds));
        json_object_set_new(data, "predicted", json_real(x->predicted));
        json_object_set_new(data, "eta_seconds", json_real(x->eta));
    }
    return data;
}

static void post_hook(kh_alerts *a, const active *x, const char *type, const json_t *data)
{
    if (!a->webhook)
        return;
    json_t *body = json_pack("{s:s, s:s?, s:f, s:O}", "type", type, "vm", x->vm, "time",
                             kh_wall_time(), "data", data);
    kh_webhook_post(a->webhook, body);
    json_decref(body);
}

static void publish(kh_alerts *a, const active *x, const char *type)
{
    const rule *r = &a->rules[x->rule];
    kh_log(KH_LOG_INFO, type, "rule=%s vm=%s value=%g threshold=%g", r->name,
           x->vm ? x->vm : "-", x->value, r->threshold);
    json_t *data = event_data(a, x);
    post_hook(a, x, type, data);
    kh_events_publish(a->events, type, x->vm, data);
}

static void active_drop(kh_alerts *a, active **pp, bool announce)
{
    active *x = *pp;
    if (announce && x->firing)
        publish(a, x, "alert.resolved");
    *pp = x->next;
    free(x->vm);
    free(x);
}

static const struct {
    const char *json;
} defaults[] = {
    { "{\"name\":\"host_memory_high\",\"scope\":\"host\",\"metric\":\"memory_used_percent\","
      "\"op\":\">\",\"threshold\":90,\"for_seconds\":60}" },
    { "{\"name\":\"host_disk_high\",\"scope\":\"host\",\"metric\":\"disk_used_percent\","
      "\"op\":\">\",\"threshold\":90,\"for_seconds\":60}" },
    { "{\"name\":\"host_disk_full_soon\",\"scope\":\"host\",\"metric\":\"disk_used_percent\","
      "\"op\":\">=\",\"threshold\":100,\"predict_seconds\":86400,\"window_seconds\":3600,"
      "\"for_seconds\":600}" },
    { "{\"name\":\"vm_cpu_saturated\",\"scope\":\"vm\",\"metric\":\"cpu_saturation_percent\","
      "\"op\":\">=\",\"threshold\":95,\"for_seconds\":60}" },
};

kh_alerts *kh_alerts_new(kh_events *events)
{
    kh_alerts *a = xcalloc(1, sizeof(*a));
    a->events = events;
    json_t *arr = json_array();
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
        json_array_append_new(arr, json_loads(defaults[i].json, 0, NULL));
    kh_err err = KH_ERR_INIT;
    if (kh_alerts_set_rules(a, arr, &err) < 0) /* a bug in the literals */
        abort();
    json_decref(arr);
    return a;
}

static void trends_clear(kh_alerts *a)
{
    while (a->trends) {
        trend *t = a->trends;
        a->trends = t->next;
        free(t->vm);
        free(t);
    }
}

void kh_alerts_free(kh_alerts *a)
{
    if (!a)
        return;
    while (a->act)
        active_drop(a, &a->act, false);
    trends_clear(a);
    free(a);
}

void kh_alerts_set_webhook(kh_alerts *a, kh_webhook *w)
{
    a->webhook = w;
}

static int parse_rule(rule *r, const json_t *o, size_t i, kh_err *err)
{
    char path[32];
    snprintf(path, sizeof(path), "rules[%zu]", i);
    if (kh_schema_check("AlertRule", o, path, err) < 0) /* keys, types, enums */
        return -1;
    const char *name = json_string_value(json_object_get(o, "name"));
    if (!name || kh_check_name(name, "rule name", err) < 0) {
        if (!name)
            kh_err_set(err, KH_E_INVALID, "rules[%zu].name is required", i);
        return -1;
    }
    snprintf(r->name, sizeof(r->name), "%s", name);
    const char *scope = json_string_value(json_object_get(o, "scope"));
    if (!scope || (strcmp(scope, "host") != 0 && strcmp(scope, "vm") != 0)) {
        kh_err_set(err, KH_E_INVALID, "rules[%zu].scope: must be \"host\" or \"vm\"", i);
        return -1;
    }
    r->vm = strcmp(scope, "vm") == 0;
    static const char *const host_metrics[] = {
        "cpu_percent", "memory_used_bytes", "memory_total_bytes", "load1", "vms_running",
        "disk_used_bytes", "disk_total_bytes", "disk_read_bytes_per_second",
        "disk_write_bytes_per_second", "net_rx_bytes_per_second", "net_tx_bytes_per_second",
        "memory_used_percent", "disk_used_percent", NULL,
    };
    static const char *const vm_metrics[] = {
        "cpu_percent", "memory_bytes", "rss_bytes", "disk_read_bytes_per_second",
        "disk_write_bytes_per_second", "disk_read_ops_per_second", "disk_write_ops_per_second",
        "cpu_saturation_percent", NULL,
    };
    const char *metric = json_string_value(json_object_get(o, "metric"));
    const char *const *allowed = r->vm ? vm_metrics : host_metrics;
    bool ok = false;
    for (size_t k = 0; metric && allowed[k] && !ok; k++)
        ok = strcmp(metric, allowed[k]) == 0;
    if (!ok) {
        kh_err_set(err, KH_E_INVALID, "rules[%zu].metric: not a %s metric", i, scope);
        return -1;
    }
    snprintf(r->metric, sizeof(r->metric), "%s", metric);
    const char *op = json_string_value(json_object_get(o, "op"));
    ok = false;
    for (int k = 0; op && k < 4 && !ok; k++)
        if (strcmp(op, op_names[k]) == 0) {
            r->op = (alert_op)k;
            ok = true;
        }
    if (!ok) {
        kh_err_set(err, KH_E_INVALID, "rules[%zu].op: must be >, >=, < or <=", i);
        return -1;
    }
    const json_t *t = json_object_get(o, "threshold");
    if (!json_is_number(t)) {
        kh_err_set(err, KH_E_INVALID, "rules[%zu].threshold: must be a number", i);
        return -1;
    }
    r->threshold = json_number_value(t);
    const json_t *f = json_object_get(o, "for_seconds");
    r->for_seconds = 0;
    if (f && (!json_is_number(f) || json_number_value(f) < 0 ||
              json_number_value(f) > 86400)) {
        kh_err_set(err, KH_E_INVALID, "rules[%zu].for_seconds: must be from 0 to 86400", i);
        return -1;
    }
    if (f)
        r->for_seconds = json_number_value(f);
    const json_t *ps = json_object_get(o, "predict_seconds");
    const json_t *ws = json_object_get(o, "window_seconds");
    r->predict_seconds = 0;
    r->window_seconds = 3600;
    if (ps && (!json_is_number(ps) || json_number_value(ps) < 1 ||
               json_number_value(ps) > 30 * 86400)) {
        kh_err_set(err, KH_E_INVALID, "rules[%zu].predict_seconds: must be from 1 to 2592000", i);
        return -1;
    }
    if (ws && !ps) {
        kh_err_set(err, KH_E_INVALID, "rules[%zu].window_seconds: only for a trend rule "
                   "(with predict_seconds)", i);
        return -1;
    }
    if (ws && (!json_is_number(ws) || json_number_value(ws) < 1 ||
               json_number_value(ws) > 3600)) {
        kh_err_set(err, KH_E_INVALID, "rules[%zu].window_seconds: must be from 1 to 3600", i);
        return -1;
    }
    if (ps)
        r->predict_seconds = json_number_value(ps);
    if (ws)
        r->window_seconds = json_number_value(ws);
    return 0;
}

static bool rule_same(const rule *x, const rule *y)
{
    return strcmp(x->name, y->name) == 0 && x->vm == y->vm &&
           strcmp(x->metric, y->metric) == 0 && x->op == y->op &&
           x->threshold == y->threshold && x->for_seconds == y->for_seconds &&
           x->predict_seconds == y->predict_seconds && x->window_seconds == y->window_seconds;
}

/* The index of the rule in v[0..n) that is the same as r, or n. */
static size_t rule_find(const rule *v, size_t n, const rule *r)
{
    for (size_t i = 0; i < n; i++)
        if (rule_same(&v[i], r))
            return i;
    return n;
}

/* ---- alert_config: the rules and webhook across restarts ---- */

/* The webhook part of a saved config: {"url", "timeout_seconds"} or null. */
static json_t *webhook_saved(const kh_alerts *a, const json_t *wh)
{
    json_t *cur = wh ? NULL : kh_webhook_json(a->webhook);
    const json_t *src = wh ? wh : cur;
    json_t *out = json_is_object(src)
                      ? json_pack("{s:O, s:O?}", "url", json_object_get(src, "url"),
                                  "timeout_seconds", json_object_get(src, "timeout_seconds"))
                      : json_null();
    if (json_is_object(out) && !json_object_get(out, "timeout_seconds"))
        json_object_del(out, "timeout_seconds");
    json_decref(cur);
    return out;
}

/* Write the row: config = {rules, webhook (wh, or the current one when
 * NULL)}; file_config as given when set_file, else left as it is. */
static int config_write(kh_alerts *a, const json_t *rules, const json_t *wh, bool set_file,
                        const char *file_config, kh_err *err)
{
    if (!a->store)
        return 0;
    json_t *doc = json_pack("{s:O, s:o}", "rules", rules, "webhook", webhook_saved(a, wh));
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(doc);
    sqlite3_stmt *st = kh_store_prep(
        a->store,
        set_file ? "INSERT INTO alert_config (id, config, file_config, updated_at) "
                   "VALUES (1, ?1, ?2, ?3) ON CONFLICT(id) DO UPDATE SET config = ?1, "
                   "file_config = ?2, updated_at = ?3"
                 : "INSERT INTO alert_config (id, config, file_config, updated_at) "
                   "VALUES (1, ?1, NULL, ?3) ON CONFLICT(id) DO UPDATE SET config = ?1, "
                   "updated_at = ?3",
        err);
    if (!st) {
        free(text);
        return -1;
    }
    kh_store_bind_text(st, 1, text);
    if (set_file)
        kh_store_bind_text(st, 2, file_config);
    sqlite3_bind_double(st, 3, kh_wall_time());
    int rc = kh_store_step_done(a->store, st, "save the alert rules", err);
    free(text);
    return rc;
}

static int config_save(kh_alerts *a, const json_t *rules, const json_t *wh, kh_err *err)
{
    return config_write(a, rules, wh, false, NULL, err);
}

/* The saved row: config and file_config (either NULL), 0; or -1 on a
 * database error. */
static int config_load(kh_alerts *a, char **config, char **file_config, kh_err *err)
{
    *config = *file_config = NULL;
    sqlite3_stmt *st = kh_store_prep(a->store, "SELECT config, file_config FROM alert_config "
                                     "WHERE id = 1", err);
    if (!st)
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *config = kh_store_col_text(st, 0);
        *file_config = kh_store_col_text(st, 1);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return kh_store_db_error(a->store, err, "read the alert rules");
    return 0;
}

/* Apply a config without saving it again (the one read at start). */
static int config_apply(kh_alerts *a, const json_t *conf, kh_err *err)
{
    kh_store *st = a->store;
    a->store = NULL;
    int rc = kh_alerts_configure(a, conf, err);
    a->store = st;
    return rc;
}

static json_t *rules_json(const kh_alerts *a);

/* Saved: the rules in force and the current webhook, with file_config. */
static int config_save_current(kh_alerts *a, const char *file_config, kh_err *err)
{
    json_t *rules = rules_json(a);
    int rc = config_write(a, rules, NULL, true, file_config, err);
    json_decref(rules);
    return rc;
}

int kh_alerts_open(kh_alerts *a, kh_store *store, const char *file, kh_err *err)
{
    a->store = store;
    char *saved = NULL, *saved_file = NULL, *ftext = NULL;
    json_t *fj = NULL;
    int rc = -1;
    if (config_load(a, &saved, &saved_file, err) < 0)
        return -1;
    if (file) {
        fj = kh_fs_read_json(file, 1 << 20, err);
        if (!fj)
            goto out;
        ftext = json_dumps(fj, JSON_COMPACT | JSON_SORT_KEYS);
    }
    if (saved && (!file || (saved_file && ftext && strcmp(saved_file, ftext) == 0))) {
        /* What was set last: through the API, or this same file. */
        kh_err e2 = KH_ERR_INIT;
        json_t *conf = json_loads(saved, 0, NULL);
        if (conf && config_apply(a, conf, &e2) == 0)
            kh_log(KH_LOG_INFO, "alert.rules", "source=saved rules=%zu", a->nrules);
        else
            kh_log(KH_LOG_WARN, "alert.rules", "source=saved error=\"%s\" defaults=true",
                   conf ? e2.msg : "not JSON");
        json_decref(conf);
        /* Started without the file: forget it, so a later start with it
         * applies it again. */
        rc = !file && saved_file ? config_save_current(a, NULL, err) : 0;
        goto out;
    }
    if (!file) { /* nothing saved: the defaults */
        rc = 0;
        goto out;
    }
    /* A new or changed file wins over what was saved, and is saved. */
    if (config_apply(a, fj, err) < 0) {
        kh_err_prefix(err, "%s", file);
        goto out;
    }
    kh_log(KH_LOG_INFO, "alert.rules", "source=file rules=%zu", a->nrules);
    rc = config_save_current(a, ftext, err);
out:
    json_decref(fj);
    free(ftext);
    free(saved);
    free(saved_file);
    return rc;
}

/* Parse and check a rules array into next (RULES_MAX slots); *n rules. */
static int rules_parse(const json_t *rules, rule *next, size_t *n, kh_err *err)
{
    if (!json_is_array(rules) || json_array_size(rules) > RULES_MAX) {
        kh_err_set(err, KH_E_INVALID, "rules: must be an array of at most %d rules", RULES_MAX);
        return -1;
    }
    *n = json_array_size(rules);
    for (size_t i = 0; i < *n; i++) {
        if (parse_rule(&next[i], json_array_get(rules, i), i, err) < 0)
            return -1;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(next[j].name, next[i].name) == 0) {
                kh_err_set(err, KH_E_INVALID, "rules[%zu].name: %s appears twice", i,
                           next[i].name);
                return -1;
            }
        }
    }
    return 0;
}

static int rules_check(const json_t *rules, kh_err *err)
{
    rule *next = xcalloc(RULES_MAX, sizeof(*next));
    size_t n;
    int rc = rules_parse(rules, next, &n, err);
    free(next);
    return rc;
}

int kh_alerts_set_rules(kh_alerts *a, const json_t *rules, kh_err *err)
{
    rule *next = xcalloc(RULES_MAX, sizeof(*next));
    size_t n;
    if (rules_parse(rules, next, &n, err) < 0) {
        free(next);
        return -1;
    }
    /* A rule that stays as it was (same name, same definition) keeps its
     * alerts and trends: nothing resolves or fires again. The others'
     * alerts resolve. */
    active *keep = NULL, **tail = &keep;
    while (a->act) {
        active *x = a->act;
        size_t k = rule_find(next, n, &a->rules[x->rule]);
        if (k == n) {
            active_drop(a, &a->act, true);
            continue;
        }
        a->act = x->next;
        x->rule = k;
        x->next = NULL;
        *tail = x;
        tail = &x->next;
    }
    a->act = keep;
    for (trend **pp = &a->trends; *pp;) {
        trend *t = *pp;
        size_t k = rule_find(next, n, &a->rules[t->rule]);
        if (k == n) {
            *pp = t->next;
            free(t->vm);
            free(t);
        } else {
            t->rule = k;
            pp = &t->next;
        }
    }
    memcpy(a->rules, next, sizeof(a->rules));
    a->nrules = n;
    free(next);
    return 0;
}

const kh_webhook *kh_alerts_webhook(const kh_alerts *a)
{
    return a->webhook;
}

int kh_alerts_configure(kh_alerts *a, const json_t *conf, kh_err *err)
{
    if (!json_is_object(conf)) {
        kh_err_set(err, KH_E_INVALID, "body: must be {\"rules\": [...], \"webhook\": ...}");
        return -1;
    }
    if (kh_schema_check("AlertConfig", conf, "", err) < 0)
        return -1;
    const json_t *wh = json_object_get(conf, "webhook");
    if (wh && !a->webhook) {
        kh_err_set(err, KH_E_UNSUPPORTED, "webhook: not available in this daemon");
        return -1;
    }
    if (wh && kh_webhook_check(wh, err) < 0)
        return -1;
    /* Rules checked (nothing changes), saved, then applied: what the API
     * answered is what the next start finds. */
    const json_t *rules = json_object_get(conf, "rules");
    if (rules_check(rules, err) < 0 || config_save(a, rules, wh, err) < 0)
        return -1;
    if (kh_alerts_set_rules(a, rules, err) < 0)
        return -1;
    if (!wh)
        return 0;
    /* A new receiver changes nothing about the alerts (none resolves or
     * fires again); the new URL is told once of the alerts firing now, as
     * Alertmanager sends a receiver the alerts active when it is added. */
    json_t *old = kh_webhook_json(a->webhook);
    const char *was = json_string_value(json_object_get(old, "url"));
    const char *now = json_string_value(json_object_get(wh, "url"));
    bool moved = now && (!was || strcmp(was, now) != 0);
    json_decref(old);
    kh_webhook_set(a->webhook, wh);
    for (const active *x = a->act; moved && x; x = x->next) {
        if (!x->firing)
            continue;
        json_t *data = event_data(a, x);
        post_hook(a, x, "alert.firing", data);
        json_decref(data);
    }
    return 0;
}

int kh_alerts_load_file(kh_alerts *a, const char *path, kh_err *err)
{
    json_t *j = kh_fs_read_json(path, 1 << 20, err);
    if (!j)
        return -1;
    int rc = kh_alerts_configure(a, j, err);
    if (rc < 0) {
        kh_err e2 = KH_ERR_INIT;
        kh_err_set(&e2, err->code, "%s: %s", path, err->msg);
        *err = e2;
    }
    json_decref(j);
    return rc;
}

void kh_alerts_begin(kh_alerts *a)
{
    for (active *x = a->act; x; x = x->next)
        x->fed = false;
}

static bool holds(const rule *r, double v)
{
    switch (r->op) {
    case OP_GT: return v > r->threshold;
    case OP_GE: return v >= r->threshold;
    case OP_LT: return v < r->threshold;
    case OP_LE: return v <= r->threshold;
    }
    return false;
}

static bool same_subject(const active *x, const char *vm)
{
    return (!x->vm && !vm) || (x->vm && vm && strcmp(x->vm, vm) == 0);
}

static trend *trend_get(kh_alerts *a, size_t rule_idx, const char *vm)
{
    for (trend *t = a->trends; t; t = t->next)
        if (t->rule == rule_idx && ((!t->vm && !vm) || (t->vm && vm && strcmp(t->vm, vm) == 0)))
            return t;
    trend *t = xcalloc(1, sizeof(*t));
    t->rule = rule_idx;
    t->vm = vm ? xstrdup(vm) : NULL;
    t->next = a->trends;
    a->trends = t;
    return t;
}

static void trend_push(trend *t, double now, double v, double window)
{
    while (t->n > 0 && (t->t[t->head] < now - window || t->n == TREND_SLOTS)) {
        t->head = (t->head + 1) % TREND_SLOTS;
        t->n--;
    }
    size_t k = (t->head + t->n) % TREND_SLOTS;
    t->t[k] = now;
    t->v[k] = v;
    t->n++;
    t->fed = true;
}

/* Least squares line through the window's samples: its slope (per second)
 * and its value at now. False with too few samples, or when they span less
 * than half the window (a fresh start must not extrapolate from noise). */
static bool trend_fit(const trend *t, double now, double window, double *slope, double *at_now)
{
    if (t->n < TREND_MIN_SAMPLES)
        return false;
    double first = t->t[t->head], last = t->t[(t->head + t->n - 1) % TREND_SLOTS];
    if (last - first < window / 2)
        return false;
    double mt = 0, mv = 0;
    for (size_t i = 0; i < t->n; i++) {
        size_t k = (t->head + i) % TREND_SLOTS;
        mt += t->t[k] - first;
        mv += t->v[k];
    }
    mt /= (double)t->n;
    mv /= (double)t->n;
    double sxx = 0, sxy = 0;
    for (size_t i = 0; i < t->n; i++) {
        size_t k = (t->head + i) % TREND_SLOTS;
        double dt = t->t[k] - first - mt;
        sxx += dt * dt;
        sxy += dt * (t->v[k] - mv);
    }
    if (sxx <= 0)
        return false;
    *slope = sxy / sxx;
    *at_now = mv + *slope * (now - first - mt);
    return true;
}

/* Whether rule r holds for this value now; for a trend rule, also when the
 * fitted line crosses the threshold within predict_seconds. */
static bool rule_holds(kh_alerts *a, size_t i, const char *vm, double v, double now,
                       double *predicted, double *eta)
{
    const rule *r = &a->rules[i];
    *predicted = v;
    *eta = 0;
    if (r->predict_seconds <= 0)
        return holds(r, v);
    trend *t = trend_get(a, i, vm);
    trend_push(t, now, v, r->window_seconds);
    if (holds(r, v))
        return true;
    double slope, at_now;
    if (!trend_fit(t, now, r->window_seconds, &slope, &at_now))
        return false;
    *predicted = at_now + slope * r->predict_seconds;
    if (!holds(r, *predicted))
        return false;
    double e = slope != 0 ? (r->threshold - at_now) / slope : 0;
    *eta = e > 0 ? e : 0;
    return true;
}

void kh_alerts_feed(kh_alerts *a, const char *vm, const char *const *fields,
                    const double *values, size_t n, double now)
{
    for (size_t i = 0; i < a->nrules; i++) {
        const rule *r = &a->rules[i];
        if (r->vm != (vm != NULL))
            continue;
        size_t f = 0;
        while (f < n && strcmp(fields[f], r->metric) != 0)
            f++;
        if (f == n)
            continue;
        active **pp = &a->act;
        while (*pp && !((*pp)->rule == i && same_subject(*pp, vm)))
            pp = &(*pp)->next;
        double predicted, eta;
        if (!rule_holds(a, i, vm, values[f], now, &predicted, &eta)) {
            if (*pp) {
                (*pp)->value = values[f]; /* the resolved event tells the new value */
                (*pp)->predicted = predicted;
                (*pp)->eta = eta;
                active_drop(a, pp, true);
            }
            continue;
        }
        active *x = *pp;
        if (!x) {
            x = xcalloc(1, sizeof(*x));
            x->rule = i;
            x->vm = vm ? xstrdup(vm) : NULL;
            x->since = now;
            x->next = a->act;
            a->act = x;
        }
        x->fed = true;
        x->value = values[f];
        x->predicted = predicted;
        x->eta = eta;
        if (!x->firing && now - x->since >= r->for_seconds) {
            x->firing = true;
            publish(a, x, "alert.firing");
        }
    }
}

void kh_alerts_end(kh_alerts *a, double now)
{
    (void)now;
    /* A subject that was not fed (a VM that stopped or went away): its
     * alerts resolve. */
    for (active **pp = &a->act; *pp;) {
        if (!(*pp)->fed)
            active_drop(a, pp, true);
        else
            pp = &(*pp)->next;
    }
    for (trend **pp = &a->trends; *pp;) {
        trend *t = *pp;
        if (!t->fed) {
            *pp = t->next;
            free(t->vm);
            free(t);
        } else {
            t->fed = false;
            pp = &t->next;
        }
    }
}

static json_t *rules_json(const kh_alerts *a)
{
    json_t *rules = json_array();
    for (size_t i = 0; i < a->nrules; i++) {
        const rule *r = &a->rules[i];
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:f, s:f}", "name", r->name, "scope",
                              r->vm ? "vm" : "host", "metric", r->metric, "op",
                              op_names[r->op], "threshold", r->threshold, "for_seconds",
                              r->for_seconds);
        if (r->predict_seconds > 0) {
            json_object_set_new(o, "predict_seconds", json_real(r->predict_seconds));
            json_object_set_new(o, "window_seconds", json_real(r->window_seconds));
        }
        json_array_append_new(rules, o);
    }
    return rules;
}

json_t *kh_alerts_json(const kh_alerts *a)
{
    json_t *rules = rules_json(a);
    json_t *act = json_array();
    for (const active *x = a->act; x; x = x->next) {
        json_t *o = json_pack("{s:s, s:s?, s:s, s:f, s:f}", "rule", a->rules[x->rule].name,
                              "vm", x->vm, "state", x->firing ? "firing" : "pending", "since",
                              x->since, "value", x->value);
        if (a->rules[x->rule].predict_seconds > 0) {
            json_object_set_new(o, "predicted", json_real(x->predicted));
            json_object_set_new(o, "eta_seconds", json_real(x->eta));
        }
        json_array_append_new(act, o);
    }
    return json_pack("{s:o, s:o, s:o}", "rules", rules, "active", act, "webhook",
                     kh_webhook_json(a->webhook));
}
