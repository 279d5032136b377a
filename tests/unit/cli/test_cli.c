/* Unit tests of the pure parts of the CLI: --disk parsing, paths, numbers,
 * tables and key: value blocks, the command table and its generated help,
 * the SSE parser, the WebSocket accept key, API error mapping. */
#include <stdlib.h>
#include <string.h>

#include "../kh_test.h"
#include "cli/args.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "cli/console.h"
#include "cli/output.h"
#include "util/check.h"
#include "util/err.h"
#include "util/mem.h"

/* ---- --disk ---- */

static void disk_ok(const char *spec, const char *path, const char *format, bool ro)
{
    cli_disk d;
    kh_err err = KH_ERR_INIT;
    int rc = cli_disk_parse(spec, "/home/u", &d, &err);
    CHECK(rc == 0);
    if (rc != 0) {
        printf("# %s: %s\n", spec, err.msg);
        return;
    }
    CHECK_STR(d.path, path);
    CHECK_STR(d.format, format);
    CHECK(d.readonly == ro);
    kh_err perr = KH_ERR_INIT;
    CHECK(kh_check_abs_path(d.path, "disk", &perr) == 0);
    cli_disk_clear(&d);
}

static void disk_bad(const char *spec, const char *needle)
{
    cli_disk d;
    kh_err err = KH_ERR_INIT;
    CHECK(cli_disk_parse(spec, "/home/u", &d, &err) < 0);
    CHECK(err.code == KH_E_INVALID);
    CHECK(d.path == NULL && d.format == NULL);
    if (!strstr(err.msg, needle)) {
        CHECK(!"message");
        printf("# '%s' -> '%s' lacks '%s'\n", spec, err.msg, needle);
    }
}

static void test_disk(void)
{
    disk_ok("/a/b.qcow2,format=qcow2", "/a/b.qcow2", "qcow2", false);
    disk_ok("/a/b.img,format=raw,readonly", "/a/b.img", "raw", true);
    disk_ok("/a/b.img,readonly=off,format=raw", "/a/b.img", "raw", false);
    disk_ok("/a/b.img,readonly=yes,format=raw", "/a/b.img", "raw", true);
    disk_ok("b.img,format=raw", "/home/u/b.img", "raw", false);
    disk_ok("./x/../b.img,format=raw", "/home/u/b.img", "raw", false);
    disk_ok("../../../b.img,format=raw", "/b.img", "raw", false);
    /* '=' in a bare path is literal; ',,' is a comma */
    disk_ok("/d/a=b.img,format=raw", "/d/a=b.img", "raw", false);
    disk_ok("/d/a,,b.img,format=raw", "/d/a,b.img", "raw", false);
    disk_ok("/d/a,,,format=raw", "/d/a,", "raw", false);
    /* key form, any order */
    disk_ok("format=qcow2,path=/d/format=x", "/d/format=x", "qcow2", false);
    disk_ok("path=readonly,format=raw", "/home/u/readonly", "raw", false);
    disk_ok("readonly,format=raw,path=/x", "/x", "raw", true);
    disk_ok("path=/a//b/./c/,format=raw", "/a/b/c", "raw", false);

    disk_bad("/a/b.img", "format=raw|qcow2");
    disk_bad("/a/b.img,readonly", "format=raw|qcow2");
    disk_bad("/a/b.img,format=vmdk", "unknown format");
    disk_bad("/a/b.img,format=", "unknown format");
    disk_bad("/a/b.img,format=raw,format=raw", "twice");
    disk_bad("/a/b.img,path=/c,format=raw", "twice");
    disk_bad("/a/b.img,format=raw,readonly,readonly", "twice");
    disk_bad("/a/b.img,format=raw,readonly=maybe", "on or off");
    disk_bad("/a/b,c.img,format=raw", "unknown option 'c.img'");
    disk_bad("/a/b.img,format=raw,", "empty option");
    disk_bad(",format=raw", "empty option");
    disk_bad("format=raw", "no path");
    disk_bad("path=,format=raw", "no path");
    disk_bad("", "needs a value");
}

static void test_paths(void)
{
    const struct {
        const char *in, *cwd, *out;
    } cases[] = {
        { "/", "/x", "/" },
        { "a", "/", "/a" },
        { "a/b/", "/c", "/c/a/b" },
        { "..", "/c", "/" },
        { "../..", "/c", "/" },
        { "/a/../../b", "/c", "/b" },
        { "./", "/c/d", "/c/d" },
        { "//a///b", "/", "/a/b" },
        { "a/./b/../c", "/r", "/r/a/c" },
        { "...", "/r", "/r/..." },
        { "a..b/..c", "/r", "/r/a..b/..c" },
    };
    for (size_t i = 0; i < KH_ARRAY_LEN(cases); i++) {
        char *p = cli_path_absolute(cases[i].in, cases[i].cwd);
        CHECK_STR(p, cases[i].out);
        free(p);
    }
}

static void test_numbers(void)
{
    kh_err err = KH_ERR_INIT;
    int64_t v;
    CHECK(cli_parse_int("42", 0, 100, "--n", &v, &err) == 0 && v == 42);
    CHECK(cli_parse_int("101", 0, 100, "--n", &v, &err) < 0);
    CHECK(strstr(err.msg, "--n") != NULL);
    const char *bad[] = { "", "x", "1x", " 1", "+1", "1.5", "99999999999999999999999" };
    for (size_t i = 0; i < KH_ARRAY_LEN(bad); i++) {
        kh_err_clear(&err);
        CHECK(cli_parse_int(bad[i], 0, INT64_MAX, "--n", &v, &err) < 0);
        CHECK(err.code == KH_E_INVALID);
    }
    kh_err_clear(&err);
    CHECK(cli_parse_mib("512", "--memory", &v, &err) == 0 && v == 512);
    CHECK(cli_parse_mib("512M", "--memory", &v, &err) == 0 && v == 512);
    CHECK(cli_parse_mib("2G", "--memory", &v, &err) == 0 && v == 2048);
    CHECK(cli_parse_mib("2gib", "--memory", &v, &err) == 0 && v == 2048);
    CHECK(cli_parse_mib("0", "--memory", &v, &err) < 0);
    kh_err_clear(&err);
    CHECK(cli_parse_mib("2T", "--memory", &v, &err) < 0);
    kh_err_clear(&err);
    CHECK(cli_parse_mib("-1", "--memory", &v, &err) < 0);
    double d;
    kh_err_clear(&err);
    CHECK(cli_parse_seconds("0.5", "--timeout", &d, &err) == 0 && d == 0.5);
    CHECK(cli_parse_seconds("3", "--timeout", &d, &err) == 0 && d == 3);
    CHECK(cli_parse_seconds("-1", "--timeout", &d, &err) < 0);
    kh_err_clear(&err);
    CHECK(cli_parse_seconds("nan", "--timeout", &d, &err) < 0);
    kh_err_clear(&err);
    CHECK(cli_parse_seconds("1s", "--timeout", &d, &err) < 0);
}

/* ---- output ---- */

static void test_table(void)
{
    static const char *const head[] = { "NAME", "STATE", "PID" };
    cli_table *t = cli_table_new(3, head);
    cli_table_add(t, "web1");
    cli_table_add(t, "running");
    cli_table_addf(t, "%d", 4242);
    cli_table_add(t, "a-much-longer-name");
    cli_table_add(t, "stopped");
    cli_table_add(t, NULL);
    char *s = cli_table_render(t);
    CHECK_STR(s, "NAME                STATE    PID\n"
                 "web1                running  4242\n"
                 "a-much-longer-name  stopped  -\n");
    free(s);
    cli_table_free(t);

    /* UTF-8 counts characters; a header-only table is just the header. */
    static const char *const h2[] = { "A", "B" };
    t = cli_table_new(2, h2);
    cli_table_add(t, "\xc3\xa9t\xc3\xa9");
    cli_table_add(t, "x");
    s = cli_table_render(t);
    CHECK_STR(s, "A    B\n\xc3\xa9t\xc3\xa9  x\n");
    free(s);
    cli_table_free(t);
    t = cli_table_new(2, h2);
    s = cli_table_render(t);
    CHECK_STR(s, "A  B\n");
    free(s);
    cli_table_free(t);
}

static void test_kv(void)
{
    cli_kv *kv = cli_kv_new();
    cli_kv_add(kv, "name", "web1");
    cli_kv_add(kv, "disks", "/a (raw)\n/b (qcow2)");
    cli_kv_add(kv, "pid", NULL);
    cli_kv_add(kv, "description", "");
    json_t *j = json_loads("{\"qemu\": {\"version\": \"7.2\"}, \"cpus\": 2, \"on\": true,"
                           " \"skip\": 1, \"list\": [1, \"x\"], \"none\": null, \"e\": {}}",
                           0, NULL);
    static const char *const skip[] = { "skip", NULL };
    cli_kv_add_json(kv, NULL, j, skip);
    json_decref(j);
    char *s = cli_kv_render(kv);
    CHECK_STR(s, "name:         web1\n"
                 "disks:        /a (raw)\n"
                 "              /b (qcow2)\n"
                 "pid:          -\n"
                 "description:\n"
                 "qemu.version: 7.2\n"
                 "cpus:         2\n"
                 "on:           yes\n"
                 "list:         1, x\n"
                 "none:         -\n"
                 "e:            -\n");
    free(s);
    cli_kv_free(kv);
}

static void test_formats(void)
{
    char b[64];
    cli_fmt_mib(256, b, sizeof(b));
    CHECK_STR(b, "256MiB");
    cli_fmt_mib(1024, b, sizeof(b));
    CHECK_STR(b, "1GiB");
    cli_fmt_mib(1536, b, sizeof(b));
    CHECK_STR(b, "1.5GiB");
    cli_fmt_mib(16777216, b, sizeof(b));
    CHECK_STR(b, "16TiB");
    cli_fmt_duration(12.7, b, sizeof(b));
    CHECK_STR(b, "12s");
    cli_fmt_duration(312, b, sizeof(b));
    CHECK_STR(b, "5m12s");
    cli_fmt_duration(7500, b, sizeof(b));
    CHECK_STR(b, "2h05m");
    cli_fmt_duration(3 * 86400 + 4 * 3600 + 5, b, sizeof(b));
    CHECK_STR(b, "3d04h");
    cli_fmt_duration(-5, b, sizeof(b));
    CHECK_STR(b, "0s");

    double t;
    CHECK(cli_parse_time("1970-01-01T00:00:10Z", &t) == 0 && t == 10);
    CHECK(cli_parse_time("2026-11-22T07:50:00.250Z", &t) == 0 && t == 1795333800.25);
    CHECK(cli_parse_time("2026-11-22T08:50:00+01:00", &t) == 0 && t == 1795333800);
    CHECK(cli_parse_time("2026-11-22T07:50:00", &t) < 0);
    CHECK(cli_parse_time("2026-11-22T07:50:00Zjunk", &t) < 0);
    CHECK(cli_parse_time("yesterday", &t) < 0);
    CHECK(cli_parse_time(NULL, &t) < 0);

    cli_fmt_progress(40, "waiting for QEMU", 80, b, sizeof(b));
    CHECK_STR(b, "[########            ]  40% waiting for QEMU");
    cli_fmt_progress(150, NULL, 80, b, sizeof(b));
    CHECK_STR(b, "[####################] 100% ");
    cli_fmt_progress(0, "abcdef", 30, b, sizeof(b));
    CHECK_STR(b, "[                    ]   0% ab");
}

static void test_wrap(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cli_wrap(f, "one two three four\n\n verbatim  line\nfive", 2, 12);
    fclose(f);
    CHECK_STR(buf, "  one two\n  three four\n\n   verbatim  line\n  five\n");
    free(buf);
}

/* ---- the command table and help ---- */

static bool line_lengths_ok(const char *text, size_t max)
{
    size_t n = 0;
    for (const char *p = text; *p; p++) {
        if (*p == '\n') {
            if (n > max)
                return false;
            n = 0;
        } else {
            n++;
        }
    }
    return n <= max;
}

static void test_table_complete(void)
{
    size_t count = 0;
    for (const cli_cmd *c = cli_commands; c->noun; c++, count++) {
        CHECK(c->summary && *c->summary && c->summary[strlen(c->summary) - 1] != '.');
        CHECK(c->description && strlen(c->description) > 40);
        CHECK(c->examples &&
              (strncmp(c->examples, "$ kvmhost", 9) == 0 || c->examples[0] == '#'));
        CHECK(c->handler != NULL);
        CHECK(cli_noun_summary(c->noun) != NULL);
        CHECK(cli_cmd_find(c->noun, c->verb) == c);
        size_t nopts = 0;
        for (const cli_opt *o = c->opts; o && o->name; o++, nopts++) {
            CHECK(o->help && *o->help);
            CHECK(o->name[0] != '-');
            CHECK(!(o->flags & CLI_OPT_ARG) == !o->metavar);
            /* no clash with another option or a global one */
            for (const cli_opt *p = o + 1; p->name; p++)
                CHECK(strcmp(o->name, p->name) != 0);
            for (const cli_opt *g = cli_global_opts; g->name; g++)
                CHECK(strcmp(o->name, g->name) != 0);
        }
        CHECK(nopts < CLI_MAX_OPTS);

        char *h = cli_help_command(c);
        char *u = cli_usage_line(c, true);
        CHECK(strstr(h, "NAME\n") && strstr(h, "SYNOPSIS\n") && strstr(h, "DESCRIPTION\n"));
        CHECK(strstr(h, "EXIT STATUS\n") && strstr(h, "EXAMPLES\n"));
        CHECK(strstr(h, c->summary) != NULL);
        for (const cli_opt *o = c->opts; o && o->name; o++) {
            char *line = o->metavar ? xasprintf("    --%s %s\n", o->name, o->metavar)
                                    : xasprintf("    --%s\n", o->name);
            CHECK(strstr(h, line) != NULL);
            CHECK(strstr(u, o->name) != NULL);
            free(line);
        }
        if (!line_lengths_ok(h, 80)) {
            CHECK(!"help lines fit in 80 columns");
            printf("# %s %s\n", c->noun, c->verb ? c->verb : "");
        }
        free(u);
        free(h);
    }
    CHECK(count >= 18);

    char *o = cli_help_overview();
    CHECK(line_lengths_ok(o, 80));
    for (const cli_cmd *c = cli_commands; c->noun; c++) {
        char *u = cli_usage_line(c, false);
        CHECK(strstr(o, u + strlen("kvmhost ")) != NULL);
        CHECK(strstr(o, c->summary) != NULL);
        free(u);
    }
    for (const cli_opt *g = cli_global_opts; g->name; g++)
        CHECK(strstr(o, g->name) != NULL);
    /* every error code appears in EXIT STATUS */
    for (int k = 1; k < KH_CODE__COUNT; k++)
        CHECK(strstr(o, kh_code_name((kh_code)k)) != NULL);
    CHECK(strstr(o, "KVMHOST_SOCKET") && strstr(o, "KVMHOST_TOKEN"));
    /* vm stop's own status: the guest was killed after the timeout */
    CHECK(strstr(o, "9  vm stop: the guest did not power off") != NULL);
    free(o);

    char *n = cli_help_noun("vm");
    CHECK(strstr(n, "vm create") && strstr(n, "vm console") && !strstr(n, "host show"));
    free(n);
    n = cli_help_noun("events"); /* verb-less: the command's own help */
    CHECK(n && strstr(n, "--count"));
    free(n);
    CHECK(!cli_noun_exists("nope") && cli_noun_has_verbs("vm") && !cli_noun_has_verbs("version"));

    char *u = cli_usage_line(cli_cmd_find("vm", "create"), false);
    CHECK_STR(u, "kvmhost vm create NAME [OPTIONS]");
    free(u);
    u = cli_usage_line(cli_cmd_find("vm", "log"), true);
    CHECK_STR(u, "kvmhost vm log NAME [--tail BYTES] [--follow] [--timeout SECONDS]");
    free(u);
}

static void test_args(void)
{
    const cli_cmd *create = cli_cmd_find("vm", "create");
    cli_ctx ctx;
    cli_args a;
    kh_err err = KH_ERR_INIT;
    memset(&ctx, 0, sizeof(ctx));
    const char *ok[] = { "web1", "--vcpus=2", "--json", "--memory", "1G", "--disk", "a,format=raw",
                   "--socket", "/s", "--disk=b,format=raw", "--description", "--odd text" };
    CHECK(cli_args_parse(create, (int)KH_ARRAY_LEN(ok), ok, &ctx, &a, &err) == 0);
    CHECK_STR(a.pos, "web1");
    CHECK_STR(cli_arg(&a, "vcpus"), "2");
    CHECK_STR(cli_arg(&a, "memory"), "1G");
    CHECK_STR(cli_arg(&a, "description"), "--odd text");
    CHECK(cli_arg_all(&a, "disk") && cli_arg_all(&a, "disk")->n == 2);
    CHECK(cli_arg(&a, "kernel") == NULL && !cli_flag(&a, "kernel"));
    CHECK(ctx.json && ctx.socket_opt && strcmp(ctx.socket_opt, "/s") == 0);
    CHECK(!a.help);
    cli_args_clear(&a);

    struct {
        const char *args[4];
        const char *needle;
    } bad[] = {
        { { "web1", "--vcpus", NULL, NULL }, "--vcpus needs a value" },
        { { "--vcpus", "1", "--memory", "2" }, "missing NAME" },
        { { "a", "b", NULL, NULL }, "unexpected argument 'b'" },
        { { "a", "--bogus", NULL, NULL }, "unknown option '--bogus'" },
        { { "a", "-x", NULL, NULL }, "unknown option '-x'" },
        { { "a", "--vcpus", "1", "--vcpus" }, "--vcpus needs a value" },
        { { "a", "--json=1", NULL, NULL }, "--json takes no value" },
        { { "a", "--socket", NULL, NULL }, "--socket needs a value" },
    };
    for (size_t i = 0; i < KH_ARRAY_LEN(bad); i++) {
        int n = 0;
        while (n < 4 && bad[i].args[n])
            n++;
        memset(&ctx, 0, sizeof(ctx));
        kh_err_clear(&err);
        CHECK(cli_args_parse(create, n, bad[i].args, &ctx, &a, &err) < 0);
        CHECK(err.code == KH_E_INVALID && ctx.usage_error && ctx.usage_cmd == create);
        if (!strstr(err.msg, bad[i].needle)) {
            CHECK(!"message");
            printf("# got '%s', want '%s'\n", err.msg, bad[i].needle);
        }
        cli_args_clear(&a);
    }

    const cli_cmd *stop = cli_cmd_find("vm", "stop");
    const char *twice[] = { "a", "--timeout", "1", "--timeout=2" };
    kh_err_clear(&err);
    CHECK(cli_args_parse(stop, 4, twice, &ctx, &a, &err) < 0 && strstr(err.msg, "twice"));
    cli_args_clear(&a);
    const char *flagval[] = { "a", "--no-wait=yes" };
    kh_err_clear(&err);
    CHECK(cli_args_parse(stop, 2, flagval, &ctx, &a, &err) < 0 && strstr(err.msg, "no value"));
    cli_args_clear(&a);
    const char *help[] = { "--help", "--bogus" };
    kh_err_clear(&err);
    CHECK(cli_args_parse(stop, 2, help, &ctx, &a, &err) == 0 && a.help);
    cli_args_clear(&a);
    const char *dashdash[] = { "--no-wait", "--", "-odd" };
    CHECK(cli_args_parse(stop, 3, dashdash, &ctx, &a, &err) == 0);
    CHECK_STR(a.pos, "-odd");
    CHECK(cli_flag(&a, "no-wait"));
    cli_args_clear(&a);
}

/* ---- protocol helpers ---- */

typedef struct sse_seen {
    char out[1024];
    int n;
    int stop_after;
} sse_seen;

static int sse_cb(const char *type, const char *id, const char *data, void *ud)
{
    sse_seen *s = ud;
    size_t len = strlen(s->out);
    snprintf(s->out + len, sizeof(s->out) - len, "[%s|%s|%s]", type, id, data);
    s->n++;
    return s->stop_after && s->n >= s->stop_after;
}

static void test_sse(void)
{
    const char *stream = ": keepalive\n\n"
                         "id: 1\r\nevent: vm.state\r\ndata: {\"a\":1}\r\n\r\n"
                         "data: line1\ndata:line2\n\n"
                         "id: 7\ndata\nretry: 10\n\n"
                         "data: partial";
    /* fed whole, and byte by byte: the same events */
    for (int mode = 0; mode < 2; mode++) {
        sse_seen seen = { .out = "" };
        cli_sse sse;
        cli_sse_init(&sse, sse_cb, &seen);
        if (mode == 0) {
            CHECK(cli_sse_feed(&sse, stream, strlen(stream)) == 0);
        } else {
            for (size_t i = 0; stream[i]; i++)
                CHECK(cli_sse_feed(&sse, stream + i, 1) == 0);
        }
        CHECK_STR(seen.out, "[vm.state|1|{\"a\":1}][message|1|line1\nline2][message|7|]");
        cli_sse_clear(&sse);
    }
    sse_seen seen = { .out = "", .stop_after = 1 };
    cli_sse sse;
    cli_sse_init(&sse, sse_cb, &seen);
    CHECK(cli_sse_feed(&sse, "data: a\n\ndata: b\n\n", 18) != 0);
    CHECK(seen.n == 1);
    cli_sse_clear(&sse);
}

static void test_protocol(void)
{
    char acc[64];
    /* RFC 6455, section 1.3 */
    cli_ws_accept_for_key("dGhlIHNhbXBsZSBub25jZQ==", acc, sizeof(acc));
    CHECK_STR(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    kh_err err = KH_ERR_INIT;
    const char *body = "{\"error\": {\"code\": \"conflict\", \"message\": \"vm web1 is running\"}}";
    cli_error_from_answer(409, body, strlen(body), &err);
    CHECK(err.code == KH_E_CONFLICT);
    CHECK_STR(err.msg, "vm web1 is running");
    CHECK(kh_code_exit_status(err.code) == 5);
    kh_err_clear(&err);
    cli_error_from_answer(404, "not json", 8, &err);
    CHECK(err.code == KH_E_NOTFOUND && strstr(err.msg, "404"));
    kh_err_clear(&err);
    cli_error_from_answer(599, NULL, 0, &err);
    CHECK(err.code == KH_E_INTERNAL);
    kh_err_clear(&err);
    body = "{\"error\": {\"code\": \"brand_new\", \"message\": \"m\"}}";
    cli_error_from_answer(418, body, strlen(body), &err);
    CHECK(err.code == KH_E_INTERNAL);

    char *e = cli_path_escape("web-1_a.b");
    CHECK_STR(e, "web-1_a.b");
    free(e);
    e = cli_path_escape("a/b c?%");
    CHECK_STR(e, "a%2Fb%20c%3F%25");
    free(e);
}

int main(void)
{
    RUN(test_disk);
    RUN(test_paths);
    RUN(test_numbers);
    RUN(test_table);
    RUN(test_kv);
    RUN(test_formats);
    RUN(test_wrap);
    RUN(test_table_complete);
    RUN(test_args);
    RUN(test_sse);
    RUN(test_protocol);
    TEST_DONE();
}
