/* main.c - kvmhostd: one daemon per host (per state directory).
 *
 * Start-up, in order: arguments; the state directory and its lock (a second
 * daemon on the same directory exits at once); the API token; the host
 * probes (QEMU binary and capabilities, whether KVM can run a guest, the
 * cgroup layout, the unprivileged QEMU user); the store; the VM manager,
 * which reattaches to the QEMUs that kept running; the HTTP server. Then the
 * libuv loop runs until SIGTERM/SIGINT. Stopping the daemon never stops a
 * guest.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api/api.h"
#include "api/auth.h"
#include "auth/oidc.h"
#include "cluster/cluster.h"
#include "http/http.h"
#include "host/cgroup.h"
#include "host/confine.h"
#include "kh_config.h"
#include "qemu/accel.h"
#include "qemu/caps.h"
#include "storage/qimg.h"
#include "storage/storage.h"
#include "store/store.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"
#include "instance/event.h"
#include "instance/lifecycle.h"
#include "instance/manager.h"
#include "instance/metrics.h"
#include "instance/task.h"

typedef struct options {
    const char *state_dir;
    const char *run_dir;
    const char *socket;
    const char *listen;
    const char *tls_cert;
    const char *tls_key;
    const char *log_file;
    const char *log_level;
    const char *qemu;
    const char *qemu_user;
    const char *qemu_uid_range;
    const char *web_dir;
    bool metrics_public;
    bool no_tls;             /* --no-tls: plain HTTP on TCP, on purpose */
    bool tls_fingerprint;    /* --tls-fingerprint: print it and exit */
    unsigned rate_limit, rate_burst;
    const char *alert_rules;
    unsigned sample_interval_ms;
    /* instance and cluster */
    const char *instance;
    const char *cgroup_mount; /* --cgroup-mount (NULL: /sys/fs/cgroup) */
    const char *host_name;
    const char *advertise;
    const char *etcd_endpoints, *etcd_ca, *etcd_cert, *etcd_key, *etcd_binary;
    unsigned cluster_ttl_s;
    /* auth: directories host paths may name; webhooks to internal addresses */
    const char *host_path_allow[16];
    size_t nhost_path_allow;
    bool webhook_allow_internal;
    kh_oidc_config oidc; /* issuer NULL: no OIDC login */
    const char *oidc_secret_file;
} options;

/* Everything the daemon holds, reachable from one place (and by leak
 * checkers at exit: the daemon does not tear down what the kernel frees). */
static struct daemon {
    uv_loop_t *loop;
    kh_store *store;
    kh_events *events;
    kh_tasks *tasks;
    kh_manager *mgr;
    kh_qimg *qimg;
    kh_storage *storage;
    kh_netmgr *net;
    kh_metrics *metrics;
    kh_alerts *alerts;
    kh_webhook *webhook;
    kh_http_server *http;
    kh_auth *auth;           /* the API auth policy (token, browser sessions) */
    kh_cluster *cluster;     /* membership (src/cluster); a single host has no etcd */
    kh_http_server *peer_http; /* the host-to-host listener (mutual TLS), in a cluster */
    char *peer_cfg[4];       /* its listen, ca, cert, key until it can start */
    bool serving;            /* d.http is up: the peer listener may start at once */
    kh_api api;
    kh_cgroups cgroups;
    kh_accel_probe accel;
    kh_qemu_caps caps;
    char *qemu_binary;
    char *token;
    uv_signal_t sigterm, sigint, sigchld;
    int lock_fd;
} d;

static void usage(FILE *fp)
{
    fprintf(fp,
            "Usage: kvmhostd [OPTIONS]\n"
            "\n"
            "The kvmhost daemon: runs and supervises this host's virtual machines and\n"
            "serves the REST API (docs/api.md).\n"
            "\n"
            "Options:\n"
            "  --state-dir DIR     persistent state (default %s)\n"
            "  --run-dir DIR       sockets and pid files of running VMs (default\n"
            "                      %s, or STATE_DIR/run when --state-dir is given)\n"
            "  --socket PATH       the API's unix socket (default %s)\n"
            "  --listen ADDR:PORT  also serve the API on TCP (token required)\n"
            "  --tls-cert FILE     serve TCP with TLS (PEM certificate; with --tls-key)\n"
            "  --tls-key FILE      PEM private key for --tls-cert\n"
            "                      (without them, TCP uses a self-signed certificate made\n"
            "                      at first start in STATE_DIR/tls; its SHA-256\n"
            "                      fingerprint is logged)\n"
            "  --no-tls            serve TCP as plain HTTP (not recommended)\n"
            "  --tls-fingerprint   print the fingerprint of STATE_DIR/tls/cert.pem (made\n"
            "                      if missing) and exit\n"
            "  --rate-limit N      TCP requests per second per caller (default 50; 0: off);\n"
            "                      over it: 429 with Retry-After\n"
            "  --rate-burst N      requests a caller may send at once (default 200)\n"
            "  --web-dir DIR       static web console files (default %s if present)\n"
            "  --metrics-public    serve GET /metrics on TCP without the token, to\n"
            "                      loopback clients only (127.0.0.0/8, ::1)\n"
            "  --sample-interval-ms N  metrics sampling period (default 10000)\n"
            "  --alert-rules FILE  alert rules ({\"rules\": [...]}) instead of the defaults;\n"
            "                      applied when new or changed since the last start, else\n"
            "                      the rules last set (through the API or this file) stay\n"
            "  --qemu PATH         QEMU binary (default: $KVMHOST_QEMU or\n"
            "                      qemu-system-x86_64 from PATH)\n"
            "  --qemu-uid-range FIRST-LAST  when started as root, each VM's QEMU runs\n"
            "                      as a uid and gid of its own from this range\n"
            "                      (default 700000000-700065535, shifted by the\n"
            "                      --instance name)\n"
            "  --qemu-user USER    instead, run every QEMU as this one user (all VMs\n"
            "                      share it: compatibility only)\n"
            "  --instance NAME     a daemon instance name, for several daemons on one\n"
            "                      kernel: nftables tables and the cgroup parent become\n"
            "                      kvmhost-NAME (default: kvmhost)\n"
            "  --host-name NAME    this host's name in a cluster (default: the instance\n"
            "                      name, else the hostname)\n"
            "  --advertise ADDR    the address other cluster hosts reach this one at\n"
            "                      (default: the address of --listen)\n"
            "  --etcd-endpoints URLS  use this existing etcd cluster (comma-separated)\n"
            "                      instead of a local etcd member\n"
            "  --etcd-ca FILE, --etcd-cert FILE, --etcd-key FILE  TLS for --etcd-endpoints\n"
            "  --etcd-binary PATH  the etcd of the local member (default /usr/bin/etcd)\n"
            "  --cluster-ttl SECONDS  the member lease TTL (default 10, 2 to 300)\n"
            "  --cgroup-mount DIR  the cgroup hierarchy VMs go in (default /sys/fs/cgroup;\n"
            "                      a cgroup2 mount there means cgroup v2)\n"
            "  --host-path-allow DIR  host paths (raw disks, imports, pools) may lie in\n"
            "                      DIR (repeatable; default STATE_DIR and\n"
            "                      /var/lib/kvmhost/images)\n"
            "  --webhook-allow-internal  alert webhooks may name loopback, link-local\n"
            "                      and metadata addresses\n"
            "  --log-file FILE     log here instead of stderr\n"
            "  --log-level LEVEL   debug, info, warn or error (default info)\n"
            "  --version           print the version and exit\n"
            "  --help              print this help and exit\n"
            "\n"
            "Environment: KVMHOST_ACCEL=tcg|kvm forces the accelerator.\n",
            KH_DEFAULT_STATE_DIR, KH_DEFAULT_RUN_DIR, KH_DEFAULT_SOCKET, KH_WEB_DIR);
    fputs("\nOIDC login (web console; see docs/api.md):\n"
            "  --oidc-issuer URL   log in with this OpenID Connect provider\n"
            "                      (discovery at URL/.well-known/openid-configuration;\n"
            "                      admin-set, so loopback and private addresses are allowed)\n"
            "  --oidc-client-id ID  the client id registered at the provider\n"
            "  --oidc-client-secret-file F  its secret (omit for a public client)\n"
            "  --oidc-groups-claim C  the claim listing groups (default groups); local\n"
            "                      groups of those names become the user's memberships\n"
            "  --oidc-user-claim C the claim naming the user (default sub)\n"
            "  --oidc-realm NAME   user name prefix: NAME.<claim> (default oidc)\n"
            "  --oidc-redirect-url URL  the callback URL registered at the provider\n"
            "                      (default: from the request, .../api/v1/oidc/callback)\n"
            "  --oidc-scopes S     (default \"openid profile email\")\n"
            "  --oidc-ca-file F    CA certificates for the provider (default: the system's)\n"
            "  --oidc-name NAME    shown as \"Sign in with NAME\" (default: the issuer's host)\n"
            "  --oidc-cli-ttl S    lifetime of a `kvmhost login --oidc` token, seconds\n"
            "                      (default 43200)\n",
          fp);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kvmhostd: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void parse_args(int argc, char **argv, options *o)
{
    enum { O_STATE = 256, O_RUN, O_SOCKET, O_LISTEN, O_CERT, O_KEY, O_LOGF, O_LOGL, O_QEMU,
           O_QUSER, O_WEB, O_VERSION, O_HELP, O_MPUBLIC, O_SAMPLE, O_ALERTS, O_INSTANCE,
           O_HOSTNAME, O_ADVERTISE, O_ETCD_EPS, O_ETCD_CA, O_ETCD_CERT, O_ETCD_KEY, O_ETCD_BIN,
           O_CTTL, O_QUIDS, O_NOTLS, O_TLSFP, O_RATE, O_BURST, O_HPALLOW,
           O_WHINTERNAL, O_OIDC_ISS, O_OIDC_ID, O_OIDC_SECRET, O_OIDC_GROUPS, O_OIDC_USER,
           O_OIDC_REALM, O_OIDC_REDIRECT, O_OIDC_SCOPES, O_OIDC_CA, O_OIDC_NAME,
           O_OIDC_CLITTL, O_CGMOUNT };
    static const struct option longopts[] = {
        { "state-dir", required_argument, NULL, O_STATE },
        { "run-dir", required_argument, NULL, O_RUN },
        { "socket", required_argument, NULL, O_SOCKET },
        { "listen", required_argument, NULL, O_LISTEN },
        { "tls-cert", required_argument, NULL, O_CERT },
        { "tls-key", required_argument, NULL, O_KEY },
        { "log-file", required_argument, NULL, O_LOGF },
        { "log-level", required_argument, NULL, O_LOGL },
        { "qemu", required_argument, NULL, O_QEMU },
        { "qemu-user", required_argument, NULL, O_QUSER },
        { "qemu-uid-range", required_argument, NULL, O_QUIDS },
        { "web-dir", required_argument, NULL, O_WEB },
        { "metrics-public", no_argument, NULL, O_MPUBLIC },
        { "sample-interval-ms", required_argument, NULL, O_SAMPLE },
        { "alert-rules", required_argument, NULL, O_ALERTS },
        { "instance", required_argument, NULL, O_INSTANCE },
        { "host-name", required_argument, NULL, O_HOSTNAME },
        { "advertise", required_argument, NULL, O_ADVERTISE },
        { "etcd-endpoints", required_argument, NULL, O_ETCD_EPS },
        { "etcd-ca", required_argument, NULL, O_ETCD_CA },
        { "etcd-cert", required_argument, NULL, O_ETCD_CERT },
        { "etcd-key", required_argument, NULL, O_ETCD_KEY },
        { "etcd-binary", required_argument, NULL, O_ETCD_BIN },
        { "cluster-ttl", required_argument, NULL, O_CTTL },
        { "cgroup-mount", required_argument, NULL, O_CGMOUNT },
        { "no-tls", no_argument, NULL, O_NOTLS },
        { "tls-fingerprint", no_argument, NULL, O_TLSFP },
        { "rate-limit", required_argument, NULL, O_RATE },
        { "rate-burst", required_argument, NULL, O_BURST },
        { "host-path-allow", required_argument, NULL, O_HPALLOW },
        { "webhook-allow-internal", no_argument, NULL, O_WHINTERNAL },
        { "oidc-issuer", required_argument, NULL, O_OIDC_ISS },
        { "oidc-client-id", required_argument, NULL, O_OIDC_ID },
        { "oidc-client-secret-file", required_argument, NULL, O_OIDC_SECRET },
        { "oidc-groups-claim", required_argument, NULL, O_OIDC_GROUPS },
        { "oidc-user-claim", required_argument, NULL, O_OIDC_USER },
        { "oidc-realm", required_argument, NULL, O_OIDC_REALM },
        { "oidc-redirect-url", required_argument, NULL, O_OIDC_REDIRECT },
        { "oidc-scopes", required_argument, NULL, O_OIDC_SCOPES },
        { "oidc-ca-file", required_argument, NULL, O_OIDC_CA },
        { "oidc-name", required_argument, NULL, O_OIDC_NAME },
        { "oidc-cli-ttl", required_argument, NULL, O_OIDC_CLITTL },
        { "version", no_argument, NULL, O_VERSION },
        { "help", no_argument, NULL, O_HELP },
        { NULL, 0, NULL, 0 },
    };
    memset(o, 0, sizeof(*o));
    o->rate_limit = 50;
    o->rate_burst = 200;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_STATE: o->state_dir = optarg; break;
        case O_RUN: o->run_dir = optarg; break;
        case O_SOCKET: o->socket = optarg; break;
        case O_LISTEN: o->listen = optarg; break;
        case O_CERT: o->tls_cert = optarg; break;
        case O_KEY: o->tls_key = optarg; break;
        case O_LOGF: o->log_file = optarg; break;
        case O_LOGL: o->log_level = optarg; break;
        case O_QEMU: o->qemu = optarg; break;
        case O_QUSER: o->qemu_user = optarg; break;
        case O_QUIDS: o->qemu_uid_range = optarg; break;
        case O_WEB: o->web_dir = optarg; break;
        case O_MPUBLIC: o->metrics_public = true; break;
        case O_HPALLOW:
            if (o->nhost_path_allow >= KH_ARRAY_LEN(o->host_path_allow) || optarg[0] != '/')
                die("--host-path-allow: an absolute directory, at most %zu times",
                    KH_ARRAY_LEN(o->host_path_allow));
            o->host_path_allow[o->nhost_path_allow++] = optarg;
            break;
        case O_WHINTERNAL: o->webhook_allow_internal = true; break;
        case O_OIDC_ISS: o->oidc.issuer = optarg; break;
        case O_OIDC_ID: o->oidc.client_id = optarg; break;
        case O_OIDC_SECRET: o->oidc_secret_file = optarg; break;
        case O_OIDC_GROUPS: o->oidc.groups_claim = optarg; break;
        case O_OIDC_USER: o->oidc.user_claim = optarg; break;
        case O_OIDC_REALM: o->oidc.realm = optarg; break;
        case O_OIDC_REDIRECT: o->oidc.redirect_url = optarg; break;
        case O_OIDC_SCOPES: o->oidc.scopes = optarg; break;
        case O_OIDC_CA: o->oidc.ca_file = optarg; break;
        case O_OIDC_NAME: o->oidc.name = optarg; break;
        case O_OIDC_CLITTL: {
            char *end;
            unsigned long s = strtoul(optarg, &end, 10);
            if (!*optarg || *end || s < 1 || s > 90UL * 86400)
                die("--oidc-cli-ttl must be from 1 to 7776000 seconds");
            o->oidc.cli_ttl_s = (unsigned)s;
            break;
        }
        case O_ALERTS: o->alert_rules = optarg; break;
        case O_INSTANCE: o->instance = optarg; break;
        case O_HOSTNAME: o->host_name = optarg; break;
        case O_ADVERTISE: o->advertise = optarg; break;
        case O_ETCD_EPS: o->etcd_endpoints = optarg; break;
        case O_ETCD_CA: o->etcd_ca = optarg; break;
        case O_ETCD_CERT: o->etcd_cert = optarg; break;
        case O_ETCD_KEY: o->etcd_key = optarg; break;
        case O_ETCD_BIN: o->etcd_binary = optarg; break;
        case O_CTTL: {
            char *end;
            unsigned long s = strtoul(optarg, &end, 10);
            if (!*optarg || *end || s < 2 || s > 300)
                die("--cluster-ttl must be from 2 to 300 seconds");
            o->cluster_ttl_s = (unsigned)s;
            break;
        }
        case O_NOTLS: o->no_tls = true; break;
        case O_CGMOUNT:
            if (optarg[0] != '/' || strlen(optarg) > 200)
                die("--cgroup-mount must be an absolute path");
            o->cgroup_mount = optarg;
            break;
        case O_TLSFP: o->tls_fingerprint = true; break;
        case O_RATE:
        case O_BURST: {
            char *end;
            unsigned long v = strtoul(optarg, &end, 10);
            if (!*optarg || *end || v > 1000000)
                die("--rate-limit and --rate-burst must be from 0 to 1000000");
            *(c == O_RATE ? &o->rate_limit : &o->rate_burst) = (unsigned)v;
            break;
        }
        case O_SAMPLE: {
            char *end;
            unsigned long ms = strtoul(optarg, &end, 10);
            if (!*optarg || *end || ms < 100 || ms > 3600000)
                die("--sample-interval-ms must be from 100 to 3600000");
            o->sample_interval_ms = (unsigned)ms;
            break;
        }
        case O_VERSION: printf("kvmhostd %s\n", KH_VERSION); exit(0);
        case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kvmhostd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        exit(2);
    }
    if (!!o->tls_cert != !!o->tls_key)
        die("--tls-cert and --tls-key go together");
    if (o->tls_cert && !o->listen)
        die("--tls-cert needs --listen");
    if (!!o->oidc.issuer != !!o->oidc.client_id)
        die("--oidc-issuer and --oidc-client-id go together");
    if ((o->oidc_secret_file || o->oidc.groups_claim || o->oidc.user_claim || o->oidc.realm ||
         o->oidc.redirect_url || o->oidc.scopes || o->oidc.ca_file || o->oidc.name ||
         o->oidc.cli_ttl_s) && !o->oidc.issuer)
        die("the --oidc-* options need --oidc-issuer");
    if (o->tls_cert && o->no_tls)
        die("--tls-cert and --no-tls contradict each other");
    if (o->instance) {
        size_t n = strlen(o->instance);
        if (n < 1 || n > 32 || strspn(o->instance, "abcdefghijklmnopqrstuvwxyz0123456789-") != n ||
            o->instance[0] == '-')
            die("--instance must be 1 to 32 of a-z, 0-9 and '-' (not first)");
    }
}

/* Absolute form of a path given on the command line. */
static char *absolute(const char *p)
{
    if (p[0] == '/')
        return xstrdup(p);
    char cwd[4096];
    if (!getcwd(cwd, sizeof(cwd)))
        die("getcwd: %s", strerror(errno));
    return xasprintf("%s/%s", cwd, p);
}

/* True when pid names a process that is alive and not exiting. */
static bool holder_alive(long pid)
{
    if (pid <= 0)
        return false;
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* One daemon per state directory: an exclusive flock that dies with us. A
 * holder that is alive means another daemon: exit at once. A holder that is
 * gone or exiting (kill -9 a moment ago; its last children still closing)
 * releases the lock within moments: wait for that, up to 5 s. */
static void take_lock(const char *state_dir)
{
    char *path = xasprintf("%s/kvmhostd.lock", state_dir);
    d.lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (d.lock_fd < 0)
        die("cannot open %s: %s", path, strerror(errno));
    for (int tries = 0; flock(d.lock_fd, LOCK_EX | LOCK_NB) < 0; tries++) {
        if (errno != EWOULDBLOCK)
            die("cannot lock %s: %s", path, strerror(errno));
        char buf[32] = { 0 };
        ssize_t n = pread(d.lock_fd, buf, sizeof(buf) - 1, 0);
        long other = n > 0 ? strtol(buf, NULL, 10) : 0;
        if (holder_alive(other) || tries >= 250) {
            fprintf(stderr, "kvmhostd: error: another kvmhostd (pid %ld) is already using the "
                    "state directory %s\n", other, state_dir);
            exit(1);
        }
        usleep(20000);
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(d.lock_fd, 0) < 0 || pwrite(d.lock_fd, pid, (size_t)len, 0) != len)
        die("cannot write %s: %s", path, strerror(errno));
    free(path);
}

/* The TCP API token: generated once, kept 0600, never logged. */
static char *load_token(const char *state_dir)
{
    char *path = xasprintf("%s/api-token", state_dir);
    kh_err err = KH_ERR_INIT;
    char *tok = kh_fs_read(path, 4096, NULL, &err);
    if (tok) {
        tok[strcspn(tok, "\r\n")] = '\0';
        struct stat st;
        if (stat(path, &st) == 0 && (st.st_mode & 077))
            chmod(path, 0600);
        if (strlen(tok) >= 32) {
            free(path);
            return tok;
        }
        free(tok);
    }
    unsigned char raw[32];
    kh_random_bytes(raw, sizeof(raw));
    tok = xmalloc(2 * sizeof(raw) + 2);
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(tok + 2 * i, 3, "%02x", raw[i]);
    char *line = xasprintf("%s\n", tok);
    kh_err_clear(&err);
    if (kh_fs_write_atomic(path, line, strlen(line), 0600, &err) < 0)
        die("%s", err.msg);
    free(line);
    free(path);
    return tok;
}

/* The KVM probe runs a test guest for up to a second: on the thread pool,
 * so that reattaching and serving the API do not wait for it. */
static uv_work_t accel_work;
static bool accel_finished;

static void accel_probe_work(uv_work_t *w)
{
    (void)w;
    kh_accel_probe_run(NULL, &d.accel);
}

static void accel_probe_done(uv_work_t *w, int status)
{
    (void)w;
    accel_finished = true;
    if (status == UV_ECANCELED) /* shutdown came first */
        return;
    if (d.accel.accel == KH_ACCEL_TCG)
        kh_log(KH_LOG_WARN, "host.accel",
               "accel=tcg reason=\"%s\" note=\"guests run under software emulation, "
               "much slower than KVM\"", d.accel.reason);
    else
        kh_log(KH_LOG_INFO, "host.accel", "accel=kvm reason=\"%s\"", d.accel.reason);
    json_object_set_new(d.api.host, "accelerator", json_string(kh_accel_name(d.accel.accel)));
    json_object_set_new(d.api.host, "accelerator_reason", json_string(d.accel.reason));
    kh_lifecycle_set_accel(d.mgr, d.accel.accel);
    kh_metrics_set_accel(d.metrics, kh_accel_name(d.accel.accel));
    kh_events_publish(d.events, "host.accelerator", NULL,
                      json_pack("{s:s, s:s}", "accelerator", kh_accel_name(d.accel.accel),
                                "reason", d.accel.reason));
}

static void on_request(void *opaque, const char *method, const char *route, unsigned status,
                       double seconds)
{
    (void)opaque;
    kh_metrics_observe_request(d.metrics, method, route, status, seconds);
}

static void on_term(uv_signal_t *h, int sig)
{
    kh_log(KH_LOG_INFO, "daemon.stop", "signal=%d note=\"guests keep running\"", sig);
    uv_stop(h->loop);
}

static void on_chld(uv_signal_t *h, int sig)
{
    (void)h;
    (void)sig;
    int status;
    pid_t pid;
    /* As the subreaper we also collect orphans of our helpers. */
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        if (kh_qimg_child_exited(d.qimg, pid, status))
            continue;
        else if (d.mgr)
            kh_lifecycle_child_exited(d.mgr, pid, status);
}

/* Resolve the QEMU user and its groups (kvm for /dev/kvm). */
static void qemu_identity(const char *user, kh_manager_config *cfg, gid_t *groups, size_t max)
{
    if (geteuid() != 0) {
        cfg->drop_privileges = false;
        return;
    }
    struct passwd *pw = getpwnam(user);
    if (!pw)
        die("the QEMU user '%s' does not exist. Create it with\n"
            "  useradd --system --no-create-home --shell /usr/sbin/nologin %s\n"
            "or leave out --qemu-user (each VM then gets a uid of its own)", user, user);
    if (pw->pw_uid == 0)
        die("--qemu-user %s is root: QEMU never runs as root", user);
    cfg->drop_privileges = true;
    cfg->uid = pw->pw_uid;
    cfg->gid = pw->pw_gid;
    size_t n = 0;
    groups[n++] = pw->pw_gid;
    struct group *kvm = getgrnam("kvm");
    if (kvm && n < max)
        groups[n++] = kvm->gr_gid;
    cfg->groups = groups;
    cfg->ngroups = n;
}

/* Per-VM QEMU uids (instance/vmuid.h): the range, checked against the
 * subordinate ids of the host; the default range moves with --instance so
 * that daemons sharing a kernel do not hand out the same uids. */
static void qemu_uid_range(const options *o, kh_manager_config *cfg)
{
    kh_err err = KH_ERR_INIT;
    if (geteuid() != 0)
        return;
    if (o->qemu_uid_range) {
        if (kh_confine_uid_range_parse(o->qemu_uid_range, &cfg->uid_first, &cfg->uid_count,
                                       &err) < 0)
            die("%s", err.msg);
    } else {
        unsigned shift = 0;
        for (const char *p = o->instance; p && *p; p++)
            shift = shift * 31u + (unsigned char)*p;
        cfg->uid_first = 700000000u + (o->instance ? 1u + shift % 4000u : 0u) * 65536u;
        cfg->uid_count = 65536;
    }
    if (kh_confine_uid_range_check(cfg->uid_first, cfg->uid_count, &err) < 0)
        die("%s", err.msg);
    struct group *kvm = getgrnam("kvm");
    cfg->kvm_gid = kvm ? kvm->gr_gid : 0;
    cfg->drop_privileges = true;
}

static json_t *host_facts(const options *o, const char *state_dir, const char *run_dir,
                          const char *socket_path)
{
    char hostname[256] = "";
    gethostname(hostname, sizeof(hostname) - 1);
    char ver[32];
    snprintf(ver, sizeof(ver), "%u.%u.%u", d.caps.version / 10000, d.caps.version / 100 % 100,
             d.caps.version % 100);
    const char *cg = d.cgroups.version == 2 ? "v2" : d.cgroups.version == 1 ? "v1" : "none";
    json_t *missing = json_array();
    char list[sizeof(d.cgroups.missing)];
    snprintf(list, sizeof(list), "%s", d.cgroups.missing);
    char *save = NULL;
    for (char *c = strtok_r(list, ",", &save); c; c = strtok_r(NULL, ",", &save))
        json_array_append_new(missing, json_string(c));
    json_t *facts = json_pack("{s:s, s:s, s:{s:s, s:s, s:b, s:b}, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:s?}",
                     "hostname", hostname, "version", KH_VERSION, "qemu", "binary",
                     d.qemu_binary, "version", ver, "sandbox", d.caps.sandbox, "io_uring",
                     d.caps.io_uring, "accelerator", "probing",
                     "accelerator_reason", "the KVM probe is running", "cpus",
                     (int)sysconf(_SC_NPROCESSORS_ONLN), "cgroup", cg, "state_dir", state_dir,
                     "run_dir", run_dir, "socket", socket_path, "listen", o->listen);
    json_object_set_new(facts, "cgroup_missing", missing);
    json_object_set_new(facts, "cgroup_mounted_private", json_boolean(d.cgroups.mounted_private));
    return facts;
}

/* What this host has now, for its cluster member record. */
static void cluster_usage(void *opaque, unsigned *vms, uint64_t *memory_free_mib)
{
    (void)opaque;
    unsigned running;
    kh_manager_counts(d.mgr, vms, &running);
    struct sysinfo si;
    *memory_free_mib = sysinfo(&si) == 0
                           ? (uint64_t)si.freeram * si.mem_unit / (1024 * 1024) : 0;
}

/* This host's VMs, for the claims of a host that joins. */
static json_t *cluster_local_vms(void *opaque)
{
    (void)opaque;
    return kh_manager_list_json(d.mgr);
}

static const kh_manager_cluster_ops cluster_ops = {
    .claim = kh_cluster_vm_claim,
    .claim_async = kh_cluster_vm_claim_async,
    .unclaim = kh_cluster_vm_unclaim,
    .may_run = kh_cluster_vm_may_run,
    .changed = kh_cluster_vm_changed,
    .deleted = kh_cluster_vm_deleted,
};

/* Another host's VM changed: on this host's event stream too. */
static void cluster_event(void *opaque, const char *type, const char *vm, json_t *data)
{
    (void)opaque;
    kh_events_publish(d.events, type, vm, data);
}

/* The host-to-host listener's check: a client certificate from the cluster
 * CA (api/auth.c), and not one of a host removed from the cluster. */
static int peer_auth(kh_http_req *req, const kh_route *route, void *opaque, kh_err *err)
{
    if (kh_auth_check_peer(req, route, opaque, err) < 0)
        return -1;
    char *fp = kh_http_req_peer_fingerprint(req);
    bool revoked = kh_cluster_cert_revoked(d.cluster, fp);
    free(fp);
    if (!revoked)
        return 0;
    kh_err_set(err, KH_E_FORBIDDEN, "this certificate was revoked: its host was removed from "
               "the cluster");
    return -1;
}

/* The host-to-host listener: the same routes, TLS with this host's cluster
 * certificate, a client certificate from the cluster CA required by its
 * auth hook (peer_auth). */
static void peer_start(void)
{
    if (!d.peer_cfg[0] || d.peer_http)
        return;
    size_t nroutes;
    const kh_route *routes = kh_routes_table(&nroutes);
    kh_http_config pcfg = {
        .tcp_listen = d.peer_cfg[0], .tls_trust = d.peer_cfg[1], .tls_cert = d.peer_cfg[2],
        .tls_key = d.peer_cfg[3], .max_body = 1024 * 1024, .max_connections = 64,
        .auth = peer_auth, .auth_opaque = d.auth, .pre = kh_api_forward_pre,
        .on_reply = kh_auth_on_reply, /* the audit: forwarded writes too */
    };
    kh_err err = KH_ERR_INIT;
    d.peer_http = kh_http_server_new(d.loop, &pcfg, routes, nroutes, &d.api, &err);
    if (!d.peer_http)
        kh_log(KH_LOG_ERROR, "cluster.listen", "listen=%s error=\"%s\"", d.peer_cfg[0],
               err.msg);
    else
        kh_log(KH_LOG_INFO, "cluster.listen", "listen=%s tls=mutual", d.peer_cfg[0]);
}

static void cluster_tls_ready(void *opaque, const char *listen, const char *ca, const char *cert,
                              const char *key)
{
    (void)opaque;
    kh_http_server_free(d.peer_http);
    d.peer_http = NULL;
    const char *v[4] = { listen, ca, cert, key };
    for (int i = 0; i < 4; i++) {
        free(d.peer_cfg[i]);
        d.peer_cfg[i] = v[i] ? xstrdup(v[i]) : NULL;
    }
    if (d.serving)
        peer_start();
}

static void close_straggler(uv_handle_t *h, void *arg)
{
    unsigned *n = arg;
    if (uv_is_closing(h))
        return;
    (*n)++;
    kh_log(KH_LOG_DEBUG, "daemon.shutdown", "straggler=%s",
           uv_handle_type_name(uv_handle_get_type(h)));
    uv_close(h, NULL);
}

/* Shutdown: free everything in the reverse order of start-up, so that a
 * leak checker at exit sees only real leaks. QEMUs, dnsmasqs, their sockets
 * and cgroups stay (the next daemon reattaches); qemu-img jobs are killed. */
static void shutdown_all(void)
{
    /* The KVM probe's callback touches the manager: cancel it, or let it
     * finish while everything is still there. */
    if (uv_cancel((uv_req_t *)&accel_work) != 0)
        while (!accel_finished)
            uv_run(d.loop, UV_RUN_ONCE);
    /* Stop serving first: no request may reach a freed module. */
    kh_http_server_free(d.http);
    d.http = NULL;
    kh_http_server_free(d.peer_http);
    d.peer_http = NULL;
    for (int i = 0; i < 4; i++) {
        free(d.peer_cfg[i]);
        d.peer_cfg[i] = NULL;
    }
    /* qemu-img jobs end now, while their owners still exist: each owner's
     * failure path frees its operation and removes its partial file */
    kh_qimg_shutdown(d.qimg);
    kh_auth_free(d.auth);
    d.auth = NULL;
    /* ---- cluster (src/cluster): shutdown (lease revoked, local etcd stopped) ---- */
    if (d.mgr)
        kh_manager_set_cluster(d.mgr, NULL, NULL);
    kh_cluster_free(d.cluster);
    d.cluster = NULL;
    d.api.cluster = NULL;
    /* ---- end of cluster shutdown ---- */
    kh_nics_free(d.api.nics);
    kh_disks_free(d.api.disks);
    kh_snapshots_free(d.api.snapshots);
    kh_backup_routes_unwatch();
    kh_backup_free(d.api.backups);
    d.api.backups = NULL;
    d.api.nics = NULL;
    d.api.disks = NULL;
    d.api.snapshots = NULL;
    free(d.api.openapi);
    d.api.openapi = NULL;
    json_decref(d.api.host);
    d.api.host = NULL;
    kh_metrics_free(d.metrics);
    d.metrics = NULL;
    kh_alerts_free(d.alerts);
    d.alerts = NULL;
    kh_webhook_free(d.webhook);
    d.webhook = NULL;
    kh_manager_free(d.mgr);
    d.mgr = NULL;
    kh_netmgr_free(d.net);
    d.net = NULL;
    kh_storage_free(d.storage);
    d.storage = NULL;
    kh_qimg_free(d.qimg);
    d.qimg = NULL;
    kh_tasks_free(d.tasks);
    d.tasks = NULL;
    kh_events_free(d.events);
    d.events = NULL;
    uv_close((uv_handle_t *)&d.sigterm, NULL);
    uv_close((uv_handle_t *)&d.sigint, NULL);
    uv_close((uv_handle_t *)&d.sigchld, NULL);
    kh_store_close(d.store);
    d.store = NULL;
    /* Let the close callbacks run, then close what is left (and say so:
     * a straggler is a module that does not close its own handles). */
    uv_run(d.loop, UV_RUN_DEFAULT);
    unsigned stragglers = 0;
    uv_walk(d.loop, close_straggler, &stragglers);
    uv_run(d.loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(d.loop);
    if (stragglers || rc != 0)
        kh_log(KH_LOG_WARN, "daemon.shutdown", "stragglers=%u loop_close=\"%s\"", stragglers,
               rc ? uv_strerror(rc) : "ok");
    d.loop = NULL;
    free(d.qemu_binary);
    d.qemu_binary = NULL;
    free(d.token);
    d.token = NULL;
}

#define KH_HOSTNAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-."

/* TLS by default on TCP: without --tls-cert (and without --no-tls), the
 * daemon's own self-signed certificate in STATE_DIR/tls. */
static char *tls_cert_path, *tls_key_path;
static void tls_setup(options *o, const char *state_dir)
{
    if (o->tls_cert || (!o->tls_fingerprint && (!o->listen || o->no_tls))) {
        if (o->listen && o->no_tls)
            kh_log(KH_LOG_WARN, "daemon.tls", "tls=off reason=\"--no-tls: the token and "
                   "everything else cross the network in clear text\"");
        return;
    }
    char *dir = xasprintf("%s/tls", state_dir);
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    char lhost[256] = "";
    if (o->listen) {
        const char *c = strrchr(o->listen, ':');
        const char *b = o->listen[0] == '[' ? o->listen + 1 : o->listen;
        size_t n = c ? (size_t)(c - b) : 0;
        if (n && b[n - 1] == ']')
            n--;
        if (n < sizeof(lhost))
            snprintf(lhost, sizeof(lhost), "%.*s", (int)n, b);
    }
    unsigned char buf[16];
    bool lip = inet_pton(AF_INET, lhost, buf) == 1 || inet_pton(AF_INET6, lhost, buf) == 1;
    bool lname = !lip && lhost[0] && strspn(lhost, KH_HOSTNAME_CHARS) == strlen(lhost);
    bool hname = host[0] && strspn(host, KH_HOSTNAME_CHARS) == strlen(host);
    char *san = xasprintf("DNS:localhost,IP:127.0.0.1,IP:::1%s%s%s%s",
                          hname ? ",DNS:" : "", hname ? host : "",
                          lip ? ",IP:" : lname ? ",DNS:" : "", lip || lname ? lhost : "");
    kh_err err = KH_ERR_INIT;
    bool made = false;
    if (kh_http_tls_self_signed(dir, san, &tls_cert_path, &tls_key_path, &made, &err) != 0)
        die("TLS certificate: %s", err.msg);
    free(san);
    free(dir);
    char *fp = kh_http_tls_fingerprint(tls_cert_path, &err);
    if (!fp)
        die("TLS certificate: %s", err.msg);
    if (o->tls_fingerprint) {
        printf("%s\n", fp);
        exit(0);
    }
    kh_log(KH_LOG_INFO, "daemon.tls", "cert=%s made=%s sha256=%s", tls_cert_path,
           made ? "yes" : "no", fp);
    free(fp);
    o->tls_cert = tls_cert_path;
    o->tls_key = tls_key_path;
}

int main(int argc, char **argv)
{
    options o;
    parse_args(argc, argv, &o);

    kh_log_level level = KH_LOG_INFO;
    if (o.log_level && kh_log_level_parse(o.log_level, &level) < 0)
        die("--log-level must be debug, info, warn or error");
    if (kh_log_init(o.log_file, level) < 0)
        die("cannot open log file %s: %s", o.log_file, strerror(errno));

    char *state_dir = absolute(o.state_dir ? o.state_dir : KH_DEFAULT_STATE_DIR);
    char *run_dir = o.run_dir ? absolute(o.run_dir)
                              : o.state_dir ? xasprintf("%s/run", state_dir)
                                            : xstrdup(KH_DEFAULT_RUN_DIR);
    char *socket_path = absolute(o.socket ? o.socket : KH_DEFAULT_SOCKET);
    kh_err err = KH_ERR_INIT;
    /* Everything we write is private unless made otherwise on purpose. The
     * state and run dirs are 0711: QEMU (another user) walks through them to
     * its own VM run dir, but cannot list them or read anything else. */
    umask(077);
    if (kh_fs_mkdir_p(state_dir, 0711, &err) < 0 || kh_fs_mkdir_p(run_dir, 0711, &err) < 0)
        die("%s", err.msg);
    if (chmod(state_dir, 0711) < 0 || chmod(run_dir, 0711) < 0)
        die("cannot set the mode of %s or %s: %s", state_dir, run_dir, strerror(errno));
    if (!o.tls_fingerprint)
        take_lock(state_dir);
    tls_setup(&o, state_dir);

    /* QEMU children reparent to us if a helper between us exits; PID 1 may
     * reap them seconds late on some hosts. */
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    signal(SIGPIPE, SIG_IGN);
    /* 1024 TCP connections (http/guard.c) need more than the usual soft
     * limit of 1024 descriptors. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max &&
        nofile.rlim_cur < 8192) {
        nofile.rlim_cur = nofile.rlim_max < 8192 ? nofile.rlim_max : 8192;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }

    d.token = load_token(state_dir);

    d.qemu_binary = kh_qemu_caps_probe(o.qemu, &d.caps, &err);
    if (!d.qemu_binary)
        die("%s", err.msg);
    char *cgroup_root = o.instance ? xasprintf("kvmhost-%s", o.instance) : NULL;
    kh_cgroups_detect(&d.cgroups, o.cgroup_mount, cgroup_root);
    if (!d.cgroups.version && !o.cgroup_mount) {
        /* /sys/fs/cgroup shows nothing, e.g. under `ip netns exec` (a fresh
         * /sys): mount the kernel's hierarchies in a mount namespace of our
         * own (before any thread starts). Not /proc/1/root/sys/fs/cgroup:
         * that needs ptrace access to PID 1 (refused for a non-dumpable
         * init, and PID 1 may not be the host's in a PID namespace). */
        kh_err cerr = KH_ERR_INIT;
        char before[sizeof(d.cgroups.reason)];
        snprintf(before, sizeof(before), "%s", d.cgroups.reason);
        if (kh_cgroups_mount_private(d.cgroups.mount, &cerr) == 0) {
            kh_cgroups_detect(&d.cgroups, NULL, cgroup_root);
            d.cgroups.mounted_private = d.cgroups.version != 0;
            kh_log(KH_LOG_INFO, "host.cgroup", "note=\"%s; mounted the hierarchies in the "
                   "daemon's own mount namespace\" version=%d", before, d.cgroups.version);
        } else {
            kh_log(KH_LOG_WARN, "host.cgroup", "reason=\"%s\" error=\"%s\"", before, cerr.msg);
        }
    }
    if (!d.cgroups.version)
        kh_log(KH_LOG_WARN, "host.cgroup", "reason=\"%s\" note=\"VMs run without cgroups; "
               "CPU, memory and NUMA limits are refused\"", d.cgroups.reason);
    else if (d.cgroups.missing[0])
        kh_log(KH_LOG_WARN, "host.cgroup", "missing=\"%s\" note=\"limits that need them are "
               "refused\"", d.cgroups.missing);

    kh_manager_config mcfg = {
        .state_dir = state_dir,
        .run_dir = run_dir,
        .qemu_binary = d.qemu_binary,
        .caps = d.caps,
        .accel = KH_ACCEL_TCG,
        .accel_pending = true,
        .cgroups = &d.cgroups,
    };
    gid_t groups[4];
    if (o.qemu_user && o.qemu_uid_range)
        die("--qemu-user and --qemu-uid-range exclude each other");
    if (o.qemu_user) {
        qemu_identity(o.qemu_user, &mcfg, groups, 4);
        if (mcfg.drop_privileges)
            kh_log(KH_LOG_WARN, "daemon.qemu_user", "user=%s uid=%u note=\"every QEMU runs as "
                   "this one uid: a QEMU escape reaches every VM's disks; leave out --qemu-user "
                   "for a uid per VM\"", o.qemu_user, (unsigned)mcfg.uid);
    } else {
        qemu_uid_range(&o, &mcfg);
    }
    /* QEMU writes its pid file and VNC socket into its run dir: a run dir
     * it cannot reach would fail every start with a riddle. */
    if (mcfg.drop_privileges) {
        uid_t quid = mcfg.uid_count ? mcfg.uid_first : mcfg.uid;
        gid_t qgid = mcfg.uid_count ? (gid_t)mcfg.uid_first : mcfg.gid;
        if (kh_confine_check_reachable("run dir", run_dir, quid, qgid, &err) < 0)
            die("%s", err.msg);
    }

    char *db = xasprintf("%s/kvmhost.db", state_dir);
    d.store = kh_store_open(db, &err);
    free(db);
    if (!d.store)
        die("%s", err.msg);
    kh_store_task_fail_unfinished(d.store, "the daemon stopped before the task finished",
                                  kh_wall_time(), NULL);
    kh_store_task_prune(d.store, 1000, NULL);

    d.loop = uv_default_loop();
    d.events = kh_events_new();
    d.tasks = kh_tasks_new(d.store, d.events);
    uv_signal_init(d.loop, &d.sigchld);
    uv_signal_start(&d.sigchld, on_chld, SIGCHLD);
    {
        /* qemu-img from the folder of the QEMU binary, else PATH's usual place. */
        char *qimg = xstrdup(d.qemu_binary);
        char *slash = strrchr(qimg, '/');
        char *cand = slash ? xasprintf("%.*s/qemu-img", (int)(slash - qimg), qimg) : NULL;
        d.qimg = kh_qimg_new(d.loop, cand && access(cand, X_OK) == 0 ? cand : "/usr/bin/qemu-img");
        free(cand);
        free(qimg);
    }
    d.storage = kh_storage_new(d.loop, d.store, d.qimg, state_dir, &err);
    if (!d.storage)
        die("%s", err.msg);
    mcfg.storage = d.storage;
    d.net = kh_netmgr_new(d.loop, d.store, state_dir, o.instance, &err);
    if (!d.net)
        die("%s", err.msg);
    mcfg.net = d.net;
    d.mgr = kh_manager_new(d.loop, d.store, d.events, d.tasks, &mcfg, &err);
    if (!d.mgr)
        die("%s", err.msg);

    d.metrics = kh_metrics_new(d.loop, d.mgr, d.tasks, &d.cgroups, o.sample_interval_ms);
    d.alerts = kh_alerts_new(d.events);
    d.webhook = kh_webhook_new(d.loop);
    kh_alerts_set_webhook(d.alerts, d.webhook);
    if (kh_alerts_open(d.alerts, d.store, o.alert_rules, &err) < 0)
        die("--alert-rules: %s", err.msg);
    kh_metrics_set_alerts(d.metrics, d.alerts);
    kh_metrics_set_host(d.metrics, state_dir, d.storage);

    /* ---- cluster (src/cluster): start-up ---- */
    kh_cluster_config ccfg = {
        .state_dir = state_dir, .host_name = o.host_name, .instance = o.instance,
        .advertise = o.advertise, .listen = o.listen, .tls = o.tls_cert != NULL, /* after tls_setup */
        .tls_cert = o.tls_cert,
        .etcd_endpoints = o.etcd_endpoints, .etcd_ca = o.etcd_ca, .etcd_cert = o.etcd_cert,
        .etcd_key = o.etcd_key, .etcd_binary = o.etcd_binary, .ttl_s = o.cluster_ttl_s,
        .usage = cluster_usage, .usage_opaque = NULL,
        .local_vms = cluster_local_vms, .tls_ready = cluster_tls_ready,
        .event = cluster_event,
    };
    d.cluster = kh_cluster_new(d.loop, d.store, &ccfg, &err);
    if (!d.cluster)
        die("%s", err.msg);
    kh_manager_set_cluster(d.mgr, &cluster_ops, d.cluster);
    /* ---- end of cluster start-up ---- */

    size_t nroutes;
    const kh_route *routes = kh_routes_table(&nroutes);
    d.api.loop = d.loop;
    d.api.mgr = d.mgr;
    d.api.net = d.net;
    d.api.tasks = d.tasks;
    d.api.events = d.events;
    d.api.storage = d.storage;
    d.api.metrics = d.metrics;
    d.api.alerts = d.alerts;
    d.api.snapshots = kh_snapshots_new(d.loop, d.mgr, d.storage, d.tasks);
    kh_snapshots_reconcile(d.api.snapshots); /* snapshots a kill -9 left unrecorded */
    if (d.storage) {
        kh_err berr = KH_ERR_INIT;
        d.api.backups = kh_backup_new(d.loop, d.store, d.mgr, d.storage, d.tasks, d.events,
                                      state_dir, &berr);
        if (!d.api.backups)
            kh_log(KH_LOG_WARN, "backup", "backups unavailable: %s", berr.msg);
    }
    d.api.disks = kh_disks_new(d.loop, d.mgr, d.storage, &d.caps);
    d.api.nics = kh_nics_new(d.loop, d.mgr, d.net, d.tasks);
    d.api.started_at = kh_wall_time();
    d.api.host = host_facts(&o, state_dir, run_dir, socket_path);
    d.api.cluster = d.cluster;
    kh_migrate_routes_restart(&d.api); /* migrations a kill -9 left pending */

    char *sock_dir = xstrdup(socket_path);
    *strrchr(sock_dir, '/') = '\0';
    if (*sock_dir && kh_fs_mkdir_p(sock_dir, 0755, &err) < 0)
        die("%s", err.msg);
    free(sock_dir);
    const char *web_dir = o.web_dir;
    struct stat st;
    if (!web_dir && stat(KH_WEB_DIR "/index.html", &st) == 0)
        web_dir = KH_WEB_DIR;
    /* Only TCP needs the token; unix-socket-only daemons never touch OpenSSL. */
    d.auth = kh_auth_new(o.listen ? d.token : NULL, o.metrics_public);
    if (kh_users_init(&err) < 0)
        die("%s", err.msg);
    kh_auth_set_store(d.auth, d.store);
    kh_auth_set_loop(d.auth, d.loop);
    kh_backup_routes_watch(d.api.backups, d.store); /* backups belong to projects */
    {
        /* security groups from before projects belong to "default" (a PUT of
         * a group without a record creates one in the caller's project) */
        json_t *sgs = kh_netmgr_sg_list_json(d.net);
        size_t i;
        json_t *g;
        json_array_foreach(sgs, i, g)
            kh_projects_object_adopt(d.store, "security-group",
                                     json_string_value(json_object_get(g, "name")), NULL);
        json_decref(sgs);
    }
    {
        const char *deflt[] = { state_dir, "/var/lib/kvmhost/images" };
        if (o.nhost_path_allow)
            kh_auth_set_policy(d.auth, o.host_path_allow, o.nhost_path_allow,
                               o.webhook_allow_internal);
        else
            kh_auth_set_policy(d.auth, deflt, KH_ARRAY_LEN(deflt), o.webhook_allow_internal);
    }
    if (o.oidc.issuer) {
        char *secret = NULL;
        if (o.oidc_secret_file) {
            secret = kh_fs_read(o.oidc_secret_file, 4096, NULL, &err);
            if (!secret)
                die("--oidc-client-secret-file: %s", err.msg);
            secret[strcspn(secret, "\r\n")] = '\0';
        }
        o.oidc.client_secret = secret;
        kh_oidc *oidc = kh_oidc_new(&o.oidc, &err);
        if (secret) {
            memset(secret, 0, strlen(secret));
            free(secret);
        }
        o.oidc.client_secret = NULL;
        if (!oidc)
            die("%s", err.msg);
        kh_auth_set_oidc(d.auth, oidc);
        kh_log(KH_LOG_INFO, "oidc", "login configured issuer=%s", o.oidc.issuer);
    }
    kh_http_config hcfg = {
        .unix_path = socket_path,
        .unix_mode = 0660,
        .tcp_listen = o.listen,
        .tls_cert = o.tls_cert,
        .tls_key = o.tls_key,
        .max_body = 1024 * 1024,
        .max_connections = 1024,
        .rate_limit = o.rate_limit,
        .rate_burst = o.rate_burst,
        .web_dir = web_dir,
        .web_skip = "/api",
        .auth = kh_auth_check,
        .auth_opaque = d.auth,
        .on_request = on_request,
        .on_request_opaque = NULL,
        .pre = kh_api_forward_pre,
        .on_reply = kh_auth_on_reply,
    };
    d.http = kh_http_server_new(d.loop, &hcfg, routes, nroutes, &d.api, &err);
    if (!d.http)
        die("%s", err.msg);
    d.serving = true;
    peer_start();

    uv_queue_work(d.loop, &accel_work, accel_probe_work, accel_probe_done);
    uv_signal_init(d.loop, &d.sigterm);
    uv_signal_start(&d.sigterm, on_term, SIGTERM);
    uv_signal_init(d.loop, &d.sigint);
    uv_signal_start(&d.sigint, on_term, SIGINT);

    unsigned total, running;
    kh_manager_counts(d.mgr, &total, &running);
    kh_log(KH_LOG_INFO, "daemon.ready",
           "version=%s pid=%d socket=%s listen=%s tls=%s state_dir=%s vms=%u running=%u",
           KH_VERSION, (int)getpid(), socket_path, o.listen ? o.listen : "none",
           o.tls_cert ? "on" : "off", state_dir, total, running);
    if (o.listen)
        kh_log(KH_LOG_INFO, "daemon.token", "file=%s/api-token", state_dir);

    /* Start-up built and freed temporaries (the store's and the probes'):
     * give that memory back before settling in. */
    malloc_trim(0);
    uv_run(d.loop, UV_RUN_DEFAULT);

    shutdown_all();
    kh_log(KH_LOG_INFO, "daemon.exit", "pid=%d", (int)getpid());
    free(cgroup_root);
    free(state_dir);
    free(run_dir);
    free(socket_path);
    free(tls_cert_path);
    free(tls_key_path);
    return 0;
}
