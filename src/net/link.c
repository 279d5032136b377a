/* link.c - rtnetlink with libmnl, and taps (see link.h). */
#include "net/link.h"

#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <net/if.h>
#include <arpa/inet.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util/mem.h"

typedef struct nl_req {
    struct mnl_socket *nl;
    unsigned seq, portid;
    char buf[32768]; /* >= MNL_SOCKET_BUFFER_SIZE (a page or 8 KiB) */
} nl_req;

static int nl_open(nl_req *r, kh_err *err)
{
    r->nl = mnl_socket_open(NETLINK_ROUTE);
    if (!r->nl || mnl_socket_bind(r->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "netlink socket");
        if (r->nl)
            mnl_socket_close(r->nl);
        r->nl = NULL;
        return -1;
    }
    r->portid = mnl_socket_get_portid(r->nl);
    r->seq = (unsigned)time(NULL);
    return 0;
}

static struct nlmsghdr *nl_msg(nl_req *r, uint16_t type, uint16_t flags)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(r->buf);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | flags;
    nlh->nlmsg_seq = ++r->seq;
    return nlh;
}

/* Send nlh and run cb over the replies until the ack / end of dump. */
static int nl_talk(nl_req *r, struct nlmsghdr *nlh, mnl_cb_t cb, void *data, const char *what,
                   kh_err *err)
{
    int rc = -1;
    if (mnl_socket_sendto(r->nl, nlh, nlh->nlmsg_len) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "netlink %s", what);
        goto out;
    }
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(r->nl, r->buf, sizeof(r->buf));
        if (n < 0) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "netlink %s", what);
            goto out;
        }
        int ret = mnl_cb_run(r->buf, (size_t)n, r->seq, r->portid, cb, data);
        if (ret < 0) {
            kh_err_errno(err, errno == EEXIST ? KH_E_CONFLICT : KH_E_INTERNAL, errno,
                         "netlink %s", what);
            goto out;
        }
        if (ret == MNL_CB_STOP)
            break;
    }
    rc = 0;
out:;
    int saved = errno;
    mnl_socket_close(r->nl);
    r->nl = NULL;
    errno = saved; /* callers may look at why it failed */
    return rc;
}

static int simple(struct nlmsghdr *(*build)(nl_req *, const void *), const void *arg,
                  const char *what, kh_err *err)
{
    nl_req *r = xcalloc(1, sizeof(*r));
    int rc = -1;
    if (nl_open(r, err) == 0)
        rc = nl_talk(r, build(r, arg), NULL, NULL, what, err);
    free(r);
    return rc;
}

/* ---- link attributes ---- */

static int link_attr_cb(const struct nlattr *attr, void *data)
{
    const struct nlattr **tb = data;
    int type = mnl_attr_get_type(attr);
    if (mnl_attr_type_valid(attr, IFLA_MAX) < 0)
        return MNL_CB_OK;
    tb[type] = attr;
    return MNL_CB_OK;
}

static int info_attr_cb(const struct nlattr *attr, void *data)
{
    const struct nlattr **tb = data;
    if (mnl_attr_type_valid(attr, IFLA_INFO_MAX) < 0)
        return MNL_CB_OK;
    tb[mnl_attr_get_type(attr)] = attr;
    return MNL_CB_OK;
}

static void link_parse(const struct nlmsghdr *nlh, kh_link_info *info, char name[IFNAMSIZ])
{
    const struct nlattr *tb[IFLA_MAX + 1];
    memset(tb, 0, sizeof(tb));
    memset(info, 0, sizeof(*info));
    const struct ifinfomsg *ifm = mnl_nlmsg_get_payload(nlh);
    info->index = ifm->ifi_index;
    info->up = (ifm->ifi_flags & IFF_UP) != 0;
    mnl_attr_parse(nlh, sizeof(*ifm), link_attr_cb, tb);
    if (name) {
        name[0] = '\0';
        if (tb[IFLA_IFNAME])
            snprintf(name, IFNAMSIZ, "%s", mnl_attr_get_str(tb[IFLA_IFNAME]));
    }
    if (tb[IFLA_MASTER])
        info->master = (int)mnl_attr_get_u32(tb[IFLA_MASTER]);
    if (tb[IFLA_IFALIAS])
        snprintf(info->alias, sizeof(info->alias), "%s", mnl_attr_get_str(tb[IFLA_IFALIAS]));
    if (tb[IFLA_LINKINFO]) {
        const struct nlattr *ti[IFLA_INFO_MAX + 1];
        memset(ti, 0, sizeof(ti));
        mnl_attr_parse_nested(tb[IFLA_LINKINFO], info_attr_cb, ti);
        if (ti[IFLA_INFO_KIND])
            snprintf(info->kind, sizeof(info->kind), "%s", mnl_attr_get_str(ti[IFLA_INFO_KIND]));
    }
}

static int get_cb(const struct nlmsghdr *nlh, void *data)
{
    kh_link_info *info = data;
    link_parse(nlh, info, NULL);
    return MNL_CB_OK;
}

int kh_link_get(const char *name, kh_link_info *out, kh_err *err)
{
    if (strlen(name) >= IFNAMSIZ) {
        kh_err_set(err, KH_E_INVALID, "interface name %s is too long", name);
        return -1;
    }
    unsigned idx = if_nametoindex(name);
    if (!idx)
        return 0;
    nl_req *r = xcalloc(1, sizeof(*r));
    int rc = -1;
    if (nl_open(r, err) < 0)
        goto out;
    struct nlmsghdr *nlh = nl_msg(r, RTM_GETLINK, NLM_F_ACK);
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
    ifm->ifi_family = AF_UNSPEC;
    ifm->ifi_index = (int)idx;
    kh_link_info info;
    memset(&info, 0, sizeof(info));
    if (nl_talk(r, nlh, get_cb, &info, "get link", err) < 0) {
        if (errno == ENODEV) { /* gone since if_nametoindex */
            kh_err_clear(err);
            rc = 0;
        }
        goto out;
    }
    if (out)
        *out = info;
    rc = info.index > 0 ? 1 : 0;
out:
    free(r);
    return rc;
}

static struct nlmsghdr *build_bridge(nl_req *r, const void *arg)
{
    const char *const *a = arg;
    struct nlmsghdr *nlh = nl_msg(r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK);
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
    ifm->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, a[0]);
    if (a[1])
        mnl_attr_put_strz(nlh, IFLA_IFALIAS, a[1]);
    struct nlattr *li = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "bridge");
    mnl_attr_nest_end(nlh, li);
    return nlh;
}

typedef struct link_set {
    int index;
    int master; /* -1: leave */
    bool up;
    const char *alias;
} link_set;

static struct nlmsghdr *build_set(nl_req *r, const void *arg)
{
    const link_set *s = arg;
    struct nlmsghdr *nlh = nl_msg(r, RTM_NEWLINK, NLM_F_ACK);
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
    ifm->ifi_family = AF_UNSPEC;
    ifm->ifi_index = s->index;
    if (s->up) {
        ifm->ifi_change = IFF_UP;
        ifm->ifi_flags = IFF_UP;
    }
    if (s->master >= 0)
        mnl_attr_put_u32(nlh, IFLA_MASTER, (uint32_t)s->master);
    if (s->alias)
        mnl_attr_put_strz(nlh, IFLA_IFALIAS, s->alias);
    return nlh;
}

int kh_link_set_up(int index, kh_err *err)
{
    link_set s = { index, -1, true, NULL };
    return simple(build_set, &s, "set link up", err);
}

int kh_link_set_master(int index, int master, kh_err *err)
{
    link_set s = { index, master, false, NULL };
    return simple(build_set, &s, "set link master", err);
}

int kh_link_bridge_add(const char *name, const char *alias, kh_err *err)
{
    const char *a[2] = { name, NULL };
    if (simple(build_bridge, a, "create bridge", err) < 0)
        return -1;
    /* the kernel takes IFLA_IFALIAS on a change, not on creation */
    unsigned idx = if_nametoindex(name);
    link_set s = { (int)idx, -1, false, alias };
    if (!idx || (alias && simple(build_set, &s, "set link alias", err) < 0)) {
        kh_err_set(err, KH_E_INTERNAL, "bridge %s: cannot mark it as kvmhost's", name);
        if (idx)
            kh_link_del((int)idx, NULL);
        return -1;
    }
    return 0;
}

typedef struct addr_set {
    int index;
    uint32_t addr;
    unsigned prefix;
} addr_set;

static struct nlmsghdr *build_addr(nl_req *r, const void *arg)
{
    const addr_set *a = arg;
    struct nlmsghdr *nlh = nl_msg(r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK);
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = (unsigned char)a->prefix;
    ifa->ifa_index = (unsigned)a->index;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    uint32_t be = htonl(a->addr);
    uint32_t mask = a->prefix ? ~((1u << (32 - a->prefix)) - 1) : 0;
    uint32_t bcast = htonl(a->addr | ~mask);
    mnl_attr_put_u32(nlh, IFA_LOCAL, be);
    mnl_attr_put_u32(nlh, IFA_ADDRESS, be);
    mnl_attr_put_u32(nlh, IFA_BROADCAST, bcast);
    return nlh;
}

int kh_link_addr_add(int index, uint32_t addr, unsigned prefix, kh_err *err)
{
    addr_set a = { index, addr, prefix };
    return simple(build_addr, &a, "add address", err);
}

typedef struct addr6_set {
    int index;
    const unsigned char *addr;
    unsigned prefix;
} addr6_set;

static struct nlmsghdr *build_addr6(nl_req *r, const void *arg)
{
    const addr6_set *a = arg;
    struct nlmsghdr *nlh = nl_msg(r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK);
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
    ifa->ifa_family = AF_INET6;
    ifa->ifa_prefixlen = (unsigned char)a->prefix;
    ifa->ifa_index = (unsigned)a->index;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_flags = IFA_F_NODAD; /* usable at once: dnsmasq announces it */
    mnl_attr_put(nlh, IFA_LOCAL, 16, a->addr);
    mnl_attr_put(nlh, IFA_ADDRESS, 16, a->addr);
    mnl_attr_put_u32(nlh, IFA_FLAGS, IFA_F_NODAD);
    return nlh;
}

int kh_link_addr6_add(int index, const unsigned char addr[16], unsigned prefix, kh_err *err)
{
    addr6_set a = { index, addr, prefix };
    return simple(build_addr6, &a, "add IPv6 address", err);
}

static struct nlmsghdr *build_del(nl_req *r, const void *arg)
{
    struct nlmsghdr *nlh = nl_msg(r, RTM_DELLINK, NLM_F_ACK);
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
    ifm->ifi_family = AF_UNSPEC;
    ifm->ifi_index = *(const int *)arg;
    return nlh;
}

int kh_link_del(int index, kh_err *err)
{
    return simple(build_del, &index, "delete link", err);
}

typedef struct dump_ctx {
    int (*cb)(const char *name, const kh_link_info *info, void *opaque);
    void *opaque;
    int stop;
} dump_ctx;

static int dump_cb(const struct nlmsghdr *nlh, void *data)
{
    dump_ctx *d = data;
    if (d->stop)
        return MNL_CB_OK;
    kh_link_info info;
    char name[IFNAMSIZ];
    link_parse(nlh, &info, name);
    d->stop = d->cb(name, &info, d->opaque);
    return MNL_CB_OK;
}

int kh_link_foreach(int (*cb)(const char *name, const kh_link_info *info, void *opaque),
                    void *opaque, kh_err *err)
{
    nl_req *r = xcalloc(1, sizeof(*r));
    int rc = -1;
    if (nl_open(r, err) == 0) {
        struct nlmsghdr *nlh = nl_msg(r, RTM_GETLINK, NLM_F_DUMP);
        struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
        ifm->ifi_family = AF_UNSPEC;
        dump_ctx d = { cb, opaque, 0 };
        rc = nl_talk(r, nlh, dump_cb, &d, "list links", err);
    }
    free(r);
    return rc;
}

int kh_link_tap_open(const char *name, unsigned queues, int *fds, kh_err *err)
{
    struct ifreq ifr;
    if (strlen(name) >= IFNAMSIZ) {
        kh_err_set(err, KH_E_INTERNAL, "tap name %s is too long", name);
        return -1;
    }
    if (queues < 1 || queues > KH_LINK_TAP_QUEUES_MAX) {
        kh_err_set(err, KH_E_INTERNAL, "tap %s: %u queues (1..%d)", name, queues,
                   KH_LINK_TAP_QUEUES_MAX);
        return -1;
    }
    for (unsigned q = 0; q < queues; q++) {
        int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            kh_err_errno(err, KH_E_UNAVAILABLE, errno, "open /dev/net/tun");
            goto fail;
        }
        memset(&ifr, 0, sizeof(ifr));
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if (queues > 1)
            ifr.ifr_flags |= IFF_MULTI_QUEUE;
        if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
            kh_err_errno(err, errno == EBUSY ? KH_E_CONFLICT : KH_E_INTERNAL, errno,
                         "create tap %s (queue %u)", name, q);
            close(fd);
            goto fail;
        }
        fds[q] = fd;
        continue;
    fail:
        for (unsigned j = 0; j < q; j++)
            close(fds[j]);
        return -1;
    }
    return 0;
}

/* ---- traffic control: a tbf qdisc at the root of a link ---- */

typedef struct tbf_arg {
    int index;
    uint64_t bps, burst;
} tbf_arg;

static struct nlmsghdr *build_tbf(nl_req *r, const void *arg)
{
    const tbf_arg *a = arg;
    struct nlmsghdr *nlh = nl_msg(r, RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK);
    struct tcmsg *tcm = mnl_nlmsg_put_extra_header(nlh, sizeof(*tcm));
    tcm->tcm_family = AF_UNSPEC;
    tcm->tcm_ifindex = a->index;
    tcm->tcm_handle = 0x10000; /* 1: */
    tcm->tcm_parent = TC_H_ROOT;
    mnl_attr_put_strz(nlh, TCA_KIND, "tbf");
    struct nlattr *opts = mnl_attr_nest_start(nlh, TCA_OPTIONS);
    struct tc_tbf_qopt q;
    memset(&q, 0, sizeof(q));
    q.rate.rate = a->bps >= UINT32_MAX ? UINT32_MAX : (uint32_t)a->bps;
    q.rate.linklayer = TC_LINKLAYER_ETHERNET;
    /* bytes that may wait: 50 ms at the rate, plus the bucket */
    uint64_t limit = a->bps / 20 + a->burst;
    q.limit = limit > UINT32_MAX ? UINT32_MAX : (uint32_t)limit;
    /* the bucket as time at the rate, in psched ticks (64 ns) */
    uint64_t ticks = a->burst * 1000000000ULL / a->bps / 64;
    q.buffer = ticks > UINT32_MAX ? UINT32_MAX : (uint32_t)ticks;
    mnl_attr_put(nlh, TCA_TBF_PARMS, sizeof(q), &q);
    if (a->bps >= UINT32_MAX)
        mnl_attr_put_u64(nlh, TCA_TBF_RATE64, a->bps);
    mnl_attr_put_u32(nlh, TCA_TBF_BURST, (uint32_t)a->burst);
    mnl_attr_nest_end(nlh, opts);
    return nlh;
}

static struct nlmsghdr *build_root_del(nl_req *r, const void *arg)
{
    const tbf_arg *a = arg;
    struct nlmsghdr *nlh = nl_msg(r, RTM_DELQDISC, NLM_F_ACK);
    struct tcmsg *tcm = mnl_nlmsg_put_extra_header(nlh, sizeof(*tcm));
    tcm->tcm_family = AF_UNSPEC;
    tcm->tcm_ifindex = a->index;
    tcm->tcm_parent = TC_H_ROOT;
    return nlh;
}

static int link_index(const char *name, kh_err *err)
{
    kh_link_info li;
    int have = kh_link_get(name, &li, err);
    if (have == 0)
        kh_err_set(err, KH_E_NOTFOUND, "link %s does not exist", name);
    return have == 1 ? li.index : -1;
}

int kh_link_rate_set(const char *name, uint64_t bps, uint64_t burst, kh_err *err)
{
    if (bps == 0 || burst == 0 || burst > UINT32_MAX) {
        kh_err_set(err, KH_E_INVALID, "%s: rate %llu B/s with burst %llu B cannot be shaped",
                   name, (unsigned long long)bps, (unsigned long long)burst);
        return -1;
    }
    tbf_arg a = { link_index(name, err), bps, burst };
    if (a.index < 0)
        return -1;
    if (simple(build_tbf, &a, "tbf qdisc", err) < 0) {
        kh_err_prefix(err, "%s", name);
        return -1;
    }
    return 0;
}

int kh_link_rate_clear(const char *name, kh_err *err)
{
    kh_err e = KH_ERR_INIT;
    tbf_arg a = { link_index(name, &e), 0, 0 };
    if (a.index < 0)
        return 0; /* no link, no qdisc */
    if (simple(build_root_del, &a, "delete root qdisc", &e) < 0 && errno != ENOENT &&
        errno != EINVAL) {
        kh_err_copy(err, &e);
        kh_err_prefix(err, "%s", name);
        return -1;
    }
    return 0;
}
