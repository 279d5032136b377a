/* test_net.c - the pure parts of networking: addresses, MACs, network
 * specs, dnsmasq config/hosts/leases and the nftables script. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../kh_test.h"
#include "net/dnsmasq.h"
#include "net/network.h"
#include "net/nft.h"
#include "net/secgroup.h"
#include "util/inet.h"
#include "util/mem.h"

#define ID1 "0123abcd-0000-4000-8000-000000000001"
#define ID2 "89abcdef-0000-4000-8000-000000000002"

static void test_cidr(void)
{
    uint32_t net;
    unsigned p;
    kh_err err = KH_ERR_INIT;
    CHECK(kh_inet_cidr_parse("10.0.0.0/24", &net, &p, 8, 29, "subnet", &err) == 0);
    CHECK(net == 0x0a000000 && p == 24);
    CHECK(kh_inet_cidr_parse("192.168.128.0/17", &net, &p, 8, 29, "subnet", NULL) == 0);
    CHECK(net == 0xc0a88000 && p == 17);
    static const char *const bad[] = { "10.0.0.1/24", "10.0.0.0/30", "10.0.0.0/7", "10.0.0.0",
                                       "10.0.0/24", "10.0.0.0.0/24", "256.0.0.0/8",
                                       "010.0.0.0/8", "10.0.0.0/024", "10.0.0.0/", "/24",
                                       " 10.0.0.0/24", "10.0.0.0/24 ", "10.0.0.0/2a", "",
                                       "1.2.3.4/33", "-1.0.0.0/8", "0x0a.0.0.0/8" };
    for (size_t i = 0; i < KH_ARRAY_LEN(bad); i++) {
        kh_err e = KH_ERR_INIT;
        int rc = kh_inet_cidr_parse(bad[i], &net, &p, 8, 29, "subnet", &e);
        CHECK(rc < 0 && e.code == KH_E_INVALID && strstr(e.msg, "subnet"));
        if (rc == 0)
            printf("# accepted %s\n", bad[i]);
    }
    kh_err e = KH_ERR_INIT;
    CHECK(kh_inet_cidr_parse("10.0.0.1/24", &net, &p, 8, 29, "subnet", &e) < 0);
    CHECK(strstr(e.msg, "10.0.0.0/24") != NULL); /* tells the right network */
    /* IPv6 networks (security group rules) */
    uint8_t n6[16];
    char t6[KH_IPV6_STRLEN];
    CHECK(kh_inet_cidr6_parse("2001:db8::/32", n6, &p, "cidr", &e) == 0 && p == 32);
    kh_inet_ipv6_format(n6, t6);
    CHECK_STR(t6, "2001:db8::");
    CHECK(kh_inet_cidr6_parse("::/0", n6, &p, "cidr", &e) == 0 && p == 0);
    CHECK(kh_inet_cidr6_parse("fd00:1:2:2::/63", n6, &p, "cidr", &e) == 0 && p == 63);
    CHECK(kh_inet_cidr6_parse("fe80::1/128", n6, &p, "cidr", &e) == 0 && p == 128);
    static const char *const bad6[] = { "2001:db8::1/32", "fd00:1:2:3::/62", "2001:db8::/129",
                                        "2001:db8::", "/32", "2001:db8::/", "2001:db8::/032",
                                        "2001:db8::/3a", "2001:gb8::/32", ":::/0", "",
                                        "10.0.0.0/8", "2001:db8::/1000" };
    for (size_t i = 0; i < KH_ARRAY_LEN(bad6); i++) {
        kh_err e6 = KH_ERR_INIT;
        int rc = kh_inet_cidr6_parse(bad6[i], n6, &p, "cidr", &e6);
        CHECK(rc < 0 && e6.code == KH_E_INVALID && strstr(e6.msg, "cidr"));
        if (rc == 0)
            printf("# accepted %s\n", bad6[i]);
    }
    CHECK(kh_inet_cidr_overlap(0x0a000000, 24, 0x0a000080, 25));
    CHECK(kh_inet_cidr_overlap(0x0a000000, 8, 0x0a010000, 16));
    CHECK(!kh_inet_cidr_overlap(0x0a000000, 24, 0x0a000100, 24));
    CHECK(kh_inet_mask(24) == 0xffffff00u && kh_inet_mask(0) == 0 && kh_inet_mask(32) == ~0u);
    char out[KH_IPV4_STRLEN];
    kh_inet_ipv4_format(0xc0a80001, out);
    CHECK_STR(out, "192.168.0.1");
}

static void test_mac(void)
{
    uint8_t m[6];
    char out[KH_MAC_STRLEN];
    CHECK(kh_inet_mac_parse("52:54:00:AB:cd:0F", m, "mac", NULL) == 0);
    kh_inet_mac_format(m, out);
    CHECK_STR(out, "52:54:00:ab:cd:0f");
    static const char *const bad[] = { "01:00:5e:00:00:01", "00:00:00:00:00:00",
                                       "52:54:00:ab:cd", "52:54:00:ab:cd:0f:11",
                                       "52-54-00-ab-cd-0f", "52:54:00:ab:cd:0g",
                                       "5:54:00:ab:cd:0f0", "", "ff:ff:ff:ff:ff:ff" };
    for (size_t i = 0; i < KH_ARRAY_LEN(bad); i++) {
        kh_err e = KH_ERR_INIT;
        CHECK(kh_inet_mac_parse(bad[i], m, "nics[0].mac", &e) < 0 && e.code == KH_E_INVALID &&
              strstr(e.msg, "nics[0].mac"));
    }
    /* generated: QEMU's OUI, unicast, stable, different per index and salt */
    char a[KH_MAC_STRLEN], b[KH_MAC_STRLEN], c[KH_MAC_STRLEN], d[KH_MAC_STRLEN];
    kh_inet_mac_generate(ID1, 0, 0, a);
    kh_inet_mac_generate(ID1, 0, 0, b);
    kh_inet_mac_generate(ID1, 1, 0, c);
    kh_inet_mac_generate(ID1, 0, 1, d);
    CHECK_STR(a, b);
    CHECK(strcmp(a, c) != 0 && strcmp(a, d) != 0);
    CHECK(strncmp(a, "52:54:00:", 9) == 0);
    CHECK(kh_inet_mac_parse(a, m, "mac", NULL) == 0);
    /* spread: 2000 VMs' first NICs give (almost) no collisions */
    char seen[2000][KH_MAC_STRLEN];
    int dup = 0;
    for (int i = 0; i < 2000; i++) {
        char id[40];
        snprintf(id, sizeof(id), "%08x-0000-4000-8000-%012x", (unsigned)i * 7919u, (unsigned)i);
        kh_inet_mac_generate(id, 0, 0, seen[i]);
        for (int j = 0; j < i; j++)
            dup += strcmp(seen[i], seen[j]) == 0;
    }
    CHECK(dup <= 2);
}

static json_t *J(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    if (!j)
        abort();
    return j;
}

static kh_network *net_from(const char *text, const char *id, kh_err *err)
{
    json_t *j = J(text);
    kh_network *n = kh_network_from_json(j, id, err);
    json_decref(j);
    return n;
}

static void test_network_spec(void)
{
    kh_err err = KH_ERR_INIT;
    kh_network *n = net_from("{\"name\":\"lan\",\"type\":\"nat\",\"subnet\":\"10.9.0.0/24\"}",
                             ID1, &err);
    CHECK(n != NULL);
    if (!n)
        return;
    CHECK_STR(n->bridge, "khbr0123abcd");
    CHECK(kh_network_gateway(n) == 0x0a090001);
    uint32_t f, l;
    kh_network_dhcp_range(n, &f, &l);
    CHECK(f == 0x0a090002 && l == 0x0a0900fe);
    json_t *api = kh_network_api_json(n);
    CHECK_STR(json_string_value(json_object_get(api, "gateway")), "10.9.0.1");
    CHECK_STR(json_string_value(json_object_get(api, "subnet")), "10.9.0.0/24");
    json_decref(api);
    /* stored form round-trips, forwards included */
    json_t *fw = J("{\"proto\":\"udp\",\"host_port\":53,\"vm\":\"web1\",\"vm_port\":5353,"
                   "\"ip\":\"10.9.0.7\"}");
    n->forwards = xcalloc(1, sizeof(*n->forwards));
    CHECK(kh_net_forward_parse(fw, &n->forwards[0], &err) == 0);
    n->nforwards = 1;
    json_decref(fw);
    json_t *st = kh_network_to_json(n);
    kh_network *back = kh_network_from_stored(st, ID1, &err);
    CHECK(back && back->nforwards == 1 && back->forwards[0].host_port == 53 &&
          strcmp(back->forwards[0].ip, "10.9.0.7") == 0 && back->subnet == n->subnet);
    json_t *st2 = back ? kh_network_to_json(back) : NULL;
    CHECK(st2 && json_equal(st, st2));
    json_decref(st);
    json_decref(st2);
    kh_network_free(back);
    kh_network_free(n);

    n = net_from("{\"name\":\"up\",\"type\":\"bridged\",\"bridge\":\"br0\"}", ID2, &err);
    CHECK(n && strcmp(n->bridge, "br0") == 0 && !kh_network_owns_bridge(n));
    kh_network_free(n);

    static const char *const bad[] = {
        "{\"type\":\"nat\"}",
        "{\"name\":\"a/b\"}",
        "{\"name\":\"x\",\"type\":\"routed\"}",
        "{\"name\":\"x\",\"subnet\":24}",
        "{\"name\":\"x\",\"subnet\":\"10.0.0.0/30\"}",
        "{\"name\":\"x\",\"type\":\"bridged\"}",
        "{\"name\":\"x\",\"type\":\"bridged\",\"bridge\":\"br0\",\"subnet\":\"10.0.0.0/24\"}",
        "{\"name\":\"x\",\"type\":\"bridged\",\"bridge\":\"0123456789abcdef\"}",
        "{\"name\":\"x\",\"type\":\"bridged\",\"bridge\":\"br 0\"}",
        "{\"name\":\"x\",\"bridge\":\"br0\"}",
        "{\"name\":\"x\",\"forwards\":[]}",
        "[]",
    };
    for (size_t i = 0; i < KH_ARRAY_LEN(bad); i++) {
        kh_err e = KH_ERR_INIT;
        n = net_from(bad[i], ID1, &e);
        CHECK(!n && e.code == KH_E_INVALID);
        if (n)
            printf("# accepted %s\n", bad[i]);
        kh_network_free(n);
    }
    static const char *const bad_fw[] = {
        "{\"host_port\":0,\"vm\":\"a\",\"vm_port\":1}",
        "{\"host_port\":65536,\"vm\":\"a\",\"vm_port\":1}",
        "{\"host_port\":80,\"vm\":\"a\",\"vm_port\":\"80\"}",
        "{\"host_port\":80,\"vm_port\":80}",
        "{\"host_port\":80,\"vm\":\"a\",\"vm_port\":80,\"proto\":\"sctp\"}",
        "{\"host_port\":80,\"vm\":\"a b\",\"vm_port\":80}",
        "{\"host_port\":80,\"vm\":\"a\",\"vm_port\":80,\"x\":1}",
    };
    for (size_t i = 0; i < KH_ARRAY_LEN(bad_fw); i++) {
        kh_err e = KH_ERR_INIT;
        kh_net_forward fwd;
        json_t *j = J(bad_fw[i]);
        CHECK(kh_net_forward_parse(j, &fwd, &e) < 0 && e.code == KH_E_INVALID);
        json_decref(j);
    }
}

static void test_dnsmasq(void)
{
    kh_err err = KH_ERR_INIT;
    kh_network *n = net_from("{\"name\":\"lan\",\"type\":\"nat\",\"subnet\":\"10.9.0.0/24\"}",
                             ID1, &err);
    kh_network *iso = net_from("{\"name\":\"lab\",\"type\":\"isolated\","
                               "\"subnet\":\"172.16.0.0/16\"}", ID2, &err);
    if (!n || !iso) {
        CHECK(0);
        return;
    }
    char *conf = kh_dnsmasq_conf(n, "/var/lib/kvmhost/networks/" ID1);
    CHECK(strstr(conf, "\ninterface=khbr0123abcd\n") && strstr(conf, "\nbind-interfaces\n"));
    CHECK(strstr(conf, "\nlisten-address=10.9.0.1\n"));
    CHECK(strstr(conf, "\ndhcp-range=10.9.0.2,10.9.0.254,255.255.255.0,1h\n"));
    CHECK(strstr(conf, "\ndhcp-leasefile=/var/lib/kvmhost/networks/" ID1 "/leases\n"));
    CHECK(strstr(conf, "\ndhcp-hostsfile=/var/lib/kvmhost/networks/" ID1 "/hosts\n"));
    CHECK(strstr(conf, "\npid-file=/var/lib/kvmhost/networks/" ID1 "/dnsmasq.pid\n"));
    CHECK(strstr(conf, "\ndhcp-lease-max=253\n"));
    CHECK(!strstr(conf, "dhcp-option=3") && !strstr(conf, "no-resolv"));
    free(conf);
    conf = kh_dnsmasq_conf(iso, "/d");
    CHECK(strstr(conf, "\ndhcp-option=3\n") && strstr(conf, "\nno-resolv\n"));
    CHECK(strstr(conf, "\ndhcp-range=172.16.0.2,172.16.255.254,255.255.0.0,1h\n"));
    free(conf);

    kh_dhcp_host hosts[] = { { "52:54:00:00:00:01", "10.9.0.5", "web1" },
                             { "52:54:00:00:00:02", "10.9.0.6", NULL } };
    char *h = kh_dnsmasq_hosts(hosts, 2);
    CHECK_STR(h, "52:54:00:00:00:01,10.9.0.5,web1\n52:54:00:00:00:02,10.9.0.6\n");
    free(h);
    h = kh_dnsmasq_hosts(NULL, 0);
    CHECK_STR(h, "");
    free(h);

    json_t *l = kh_dnsmasq_leases_parse(
        "1795340263 52:54:00:4C:87:50 10.9.0.191 web1 01:52:54:00:4c:87:50\n"
        "garbage line\n"
        "1795340264 52:54:00:4c:87:51 10.9.0.192 * *\n"
        "x 52:54:00:4c:87:52 10.9.0.193 * *\n"
        "1795340265 01:00:5e:00:00:01 10.9.0.194 * *\n"
        "1795340266 52:54:00:4c:87:53 10.9.0.999 * *\n"
        "\n"
        "1795340267 52:54:00:4c:87:54 10.9.0.195");
    CHECK(json_array_size(l) == 3);
    json_t *e0 = json_array_get(l, 0);
    CHECK(json_integer_value(json_object_get(e0, "expires")) == 1795340263);
    CHECK_STR(json_string_value(json_object_get(e0, "mac")), "52:54:00:4c:87:50");
    CHECK_STR(json_string_value(json_object_get(e0, "hostname")), "web1");
    CHECK(json_object_get(json_array_get(l, 1), "hostname") == NULL);
    CHECK_STR(json_string_value(json_object_get(json_array_get(l, 2), "ip")), "10.9.0.195");
    json_decref(l);
    l = kh_dnsmasq_leases_parse("");
    CHECK(json_array_size(l) == 0);
    json_decref(l);
    kh_network_free(n);
    kh_network_free(iso);
}

static void test_nft_render(void)
{
    kh_err err = KH_ERR_INIT;
    kh_network *n = net_from("{\"name\":\"lan\",\"type\":\"nat\",\"subnet\":\"10.9.0.0/24\"}",
                             ID1, &err);
    kh_network *iso = net_from("{\"name\":\"lab\",\"type\":\"isolated\","
                               "\"subnet\":\"10.8.0.0/24\"}", ID2, &err);
    kh_network *br = net_from("{\"name\":\"up\",\"type\":\"bridged\",\"bridge\":\"br0\"}",
                              "00000000-0000-4000-8000-000000000003", &err);
    if (!n || !iso || !br) {
        CHECK(0);
        return;
    }
    n->forwards = xcalloc(1, sizeof(*n->forwards));
    json_t *fw = J("{\"host_port\":8080,\"vm\":\"web1\",\"vm_port\":80,\"ip\":\"10.9.0.5\"}");
    CHECK(kh_net_forward_parse(fw, &n->forwards[0], &err) == 0);
    json_decref(fw);
    n->nforwards = 1;
    const kh_network *v[] = { n, iso, br };
    kh_net_binding binds[] = {
        { "web1", "lan", "52:54:00:00:00:01", "10.9.0.5", "kh0000aaaa0", "web,nosuch", 0, 0 },
        { "web2", "lab", "52:54:00:00:00:02", NULL, "kh0000bbbb0", NULL, 250000, 131072 },
        { "web3", "up", "52:54:00:00:00:03", NULL, "kh0000cccc0", NULL, 0, 0 },
        { "web4", "gone", "52:54:00:00:00:04", NULL, "kh0000dddd0", NULL, 0, 0 },
    };
    json_t *gj = J("{\"name\":\"web\",\"rules\":[{\"proto\":\"tcp\",\"ports\":\"80\"},"
                   "{\"proto\":\"udp\",\"ports\":\"5000-5010\",\"cidr\":\"10.0.0.0/8\"},"
                   "{\"proto\":\"icmp\"},"
                   "{\"proto\":\"tcp\",\"ports\":\"22\",\"cidr\":\"2001:db8::/32\"},"
                   "{\"proto\":\"any\",\"cidr\":\"fd00:1::/64\"},"
                   "{\"proto\":\"udp\",\"cidr\":\"192.168.0.0/16\"}]}");
    kh_secgroup *web = kh_secgroup_from_json(gj, &err);
    json_decref(gj);
    CHECK(web && web->nrules == 6);
    const kh_secgroup *groups[] = { web };
    char *s = kh_nft_render(v, 3, binds, 4, groups, web ? 1 : 0);
    /* security groups: inbound per the rules, then drop; only NICs with groups */
    CHECK(strstr(s, "oifname \"kh0000aaaa0\" ip saddr 0.0.0.0/0 tcp dport 80 accept\n"));
    CHECK(strstr(s, "oifname \"kh0000aaaa0\" ip saddr 10.0.0.0/8 udp dport 5000-5010 accept\n"));
    CHECK(strstr(s, "oifname \"kh0000aaaa0\" ip saddr 0.0.0.0/0 ip protocol icmp accept\n"));
    CHECK(strstr(s, "oifname \"kh0000aaaa0\" tcp flags & (syn | ack) != syn accept\n"));
    /* IPv6 too: a rule without a cidr is rendered for both families, one
     * with a cidr for its own family only */
    CHECK(strstr(s, "oifname \"kh0000aaaa0\" ip6 saddr ::/0 tcp dport 80 accept\n"));
    CHECK(strstr(s, "oifname \"kh0000aaaa0\" ip6 saddr ::/0 meta l4proto ipv6-icmp accept\n"));
    CHECK(!strstr(s, "ip6 saddr ::/0 udp dport 5000-5010"));
    CHECK(strstr(s, "oifname \"kh0000aaaa0\" ip6 saddr 2001:db8::/32 tcp dport 22 accept\n"));
    CHECK(!strstr(s, "ip saddr 0.0.0.0/0 tcp dport 22"));
    CHECK(strstr(s, "oifname \"kh0000aaaa0\" ip6 saddr fd00:1::/64 accept\n"));
    CHECK(strstr(s, "oifname \"kh0000aaaa0\" ip saddr 192.168.0.0/16 ip protocol udp accept\n"));
    CHECK(!strstr(s, "ip6 saddr ::/0 meta l4proto udp"));
    /* the default drop covers IPv6: only non-IP frames skip the rules, and
     * ND/RA (133-137), ICMPv6 errors and echo replies always pass */
    CHECK(strstr(s, "oifname \"kh0000aaaa0\" ether type != { ip, ip6 } accept\n"));
    CHECK(!strstr(s, "ether type != ip accept"));
    CHECK(strstr(s, "oifname \"kh0000aaaa0\" icmpv6 type { echo-reply, destination-unreachable, "
                    "packet-too-big, time-exceeded, parameter-problem, nd-router-solicit, "
                    "nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } "
                    "accept\n"));
    CHECK(strstr(s, "oifname \"kh0000aaaa0\" udp sport 547 udp dport 546 accept\n"));
    CHECK(strstr(s, "oifname \"kh0000aaaa0\" drop\n"));
    CHECK(strstr(s, "chain sg_forward {") && strstr(s, "chain sg_output {"));
    CHECK(!strstr(s, "oifname \"kh0000bbbb0\""));
    /* one transaction that replaces both tables */
    const char *head = "table inet kvmhost\ndelete table inet kvmhost\n"
                       "table bridge kvmhost\ndelete table bridge kvmhost\n";
    CHECK(strncmp(s, head, strlen(head)) == 0);
    /* anti-spoofing per tap: MAC always; IPv4/ARP to the reservation or the subnet */
    CHECK(strstr(s, "iifname \"kh0000aaaa0\" ether saddr != 52:54:00:00:00:01 drop\n"));
    CHECK(strstr(s, "iifname \"kh0000aaaa0\" ip saddr != { 0.0.0.0, 10.9.0.5 } drop\n"));
    CHECK(strstr(s, "iifname \"kh0000aaaa0\" arp saddr ether != 52:54:00:00:00:01 drop\n"));
    CHECK(strstr(s, "iifname \"kh0000aaaa0\" arp saddr ip != { 0.0.0.0, 10.9.0.5 } drop\n"));
    CHECK(strstr(s, "iifname \"kh0000bbbb0\" ip saddr != { 0.0.0.0, 10.8.0.0/24 } drop\n"));
    CHECK(strstr(s, "iifname \"kh0000cccc0\" ether saddr != 52:54:00:00:00:03 drop\n"));
    CHECK(!strstr(s, "iifname \"kh0000cccc0\" ip saddr")); /* bridged: not our subnet */
    CHECK(!strstr(s, "kh0000dddd0")); /* a network that does not exist */
    /* limits.nic outbound_bps: policed as the guest's frames enter the bridge */
    CHECK(strstr(s, "iifname \"kh0000bbbb0\" limit rate over 250000 bytes/second burst 131072 "
                    "bytes drop\n"));
    CHECK(!strstr(s, "iifname \"kh0000aaaa0\" limit"));
    CHECK(strstr(s, "iifname \"khbr0123abcd\" ip saddr 10.9.0.0/24 accept\n"));
    CHECK(strstr(s, "ip saddr 10.9.0.0/24 ip daddr != 10.9.0.0/24 oifname != \"khbr0123abcd\" "
                    "masquerade\n"));
    /* forwards answer the host itself on 127.0.0.1 too: the DNATed
     * loopback source is masqueraded on the bridge, and only replies may
     * reach 127/8 from it (route_localnet is on there) */
    CHECK(strstr(s, "ip saddr 127.0.0.0/8 oifname \"khbr0123abcd\" ct status dnat "
                    "masquerade\n"));
    CHECK(strstr(s, "iifname \"khbr0123abcd\" ip daddr 127.0.0.0/8 ct state != { established, "
                    "related } drop\n"));
    CHECK(!strstr(s, "oifname \"khbr89abcdef\" ct status dnat masquerade"));
    CHECK(!strstr(s, "iifname \"khbr89abcdef\" ip daddr 127.0.0.0/8"));
    CHECK(!strstr(s, "ip saddr 10.8.0.0/24")); /* isolated: no way out */
    CHECK(strstr(s, "iifname \"khbr89abcdef\" drop\n"));
    CHECK(strstr(s, "iifname \"khbr89abcdef\" ip daddr != { 10.8.0.1, 255.255.255.255 } drop"));
    CHECK(!strstr(s, "\"br0\"")); /* bridged networks are the admin's */
    const char *dnat = "fib daddr type local tcp dport 8080 dnat ip to 10.9.0.5:80\n";
    const char *p1 = strstr(s, dnat);
    CHECK(p1 && strstr(p1 + 1, dnat) && !strstr(strstr(p1 + 1, dnat) + 1, dnat));
    /* exactly one body per table */
    CHECK(strstr(strstr(s, "table inet kvmhost {") + 1, "table inet") == NULL);
    CHECK(strstr(strstr(s, "table bridge kvmhost {") + 1, "table bridge") == NULL);
    free(s);
    s = kh_nft_render(NULL, 0, NULL, 0, NULL, 0);
    CHECK_STR(s, head);
    free(s);
    const kh_network *only_br[] = { br };
    s = kh_nft_render(only_br, 1, binds + 2, 1, NULL, 0);
    CHECK(strncmp(s, head, strlen(head)) == 0 && strstr(s, "table bridge kvmhost {") &&
          !strstr(s, "table inet kvmhost {"));
    free(s);
    /* a daemon instance's own tables: the same rules under kvmhost-NAME, and
     * nothing that names the default tables */
    char table[64];
    kh_nft_table_name(NULL, table, sizeof(table));
    CHECK_STR(table, "kvmhost");
    kh_nft_table_name("", table, sizeof(table));
    CHECK_STR(table, "kvmhost");
    kh_nft_table_name("h2", table, sizeof(table));
    CHECK_STR(table, "kvmhost-h2");
    s = kh_nft_render_table(table, only_br, 1, binds + 2, 1, NULL, 0);
    CHECK(strncmp(s, "table inet kvmhost-h2\ndelete table inet kvmhost-h2\n"
                     "table bridge kvmhost-h2\ndelete table bridge kvmhost-h2\n", 106) == 0);
    CHECK(strstr(s, "table bridge kvmhost-h2 {") && !strstr(s, "kvmhost "));
    free(s);
    kh_network_free(n);
    kh_network_free(iso);
    kh_network_free(br);
    kh_secgroup_free(web);
}

static void test_secgroup(void)
{
    static const char *const bad[] = {
        "{\"rules\":[]}",
        "{\"name\":\"a b\"}",
        "{\"name\":\"g\",\"rules\":[{\"direction\":\"out\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"proto\":\"gre\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"proto\":\"icmp\",\"ports\":\"80\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"ports\":\"0\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"ports\":\"90-80\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"ports\":\"80-65536\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"ports\":\"8x\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"cidr\":\"10.0.0.1/8\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"cidr\":\"2001:db8::1/32\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"cidr\":\"2001:db8::/129\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"cidr\":\"2001:db8::\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"cidr\":\"2001:zz8::/32\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"cidr\":\"::/01\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"cidr\":\"fe80::/-1\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"cidr\":\"::ffff:10.0.0.0/200\"}]}",
        "{\"name\":\"g\",\"rules\":[{\"cidr\":8}]}",
        "{\"name\":\"g\",\"rules\":[{\"x\":1}]}",
        "{\"name\":\"g\",\"rules\":{}}",
        "{\"name\":\"g\",\"x\":1}",
    };
    for (size_t i = 0; i < KH_ARRAY_LEN(bad); i++) {
        kh_err e = KH_ERR_INIT;
        json_t *j = J(bad[i]);
        kh_secgroup *g = kh_secgroup_from_json(j, &e);
        CHECK(!g && e.code == KH_E_INVALID);
        if (g)
            printf("# accepted %s\n", bad[i]);
        kh_secgroup_free(g);
        json_decref(j);
    }
    kh_err err = KH_ERR_INIT;
    json_t *j = J("{\"name\":\"g\",\"rules\":[{\"ports\":443},{\"proto\":\"any\","
                  "\"cidr\":\"192.168.0.0/16\"},{\"proto\":\"icmp\",\"cidr\":\"2001:DB8:0::/32\"},"
                  "{\"proto\":\"any\",\"cidr\":\"::/0\"},{\"cidr\":\"2001:db8::/127\"}]}");
    kh_secgroup *g = kh_secgroup_from_json(j, &err);
    json_decref(j);
    CHECK(g != NULL);
    if (!g)
        return;
    CHECK(g->rules[0].family == 0 && g->rules[1].family == 4 && g->rules[2].family == 6);
    json_t *out = kh_secgroup_to_json(g);
    json_t *want = J("{\"name\":\"g\",\"rules\":[{\"direction\":\"in\",\"proto\":\"tcp\","
                     "\"ports\":\"443\"},{\"direction\":\"in\","
                     "\"proto\":\"any\",\"cidr\":\"192.168.0.0/16\"},{\"direction\":\"in\","
                     "\"proto\":\"icmp\",\"cidr\":\"2001:db8::/32\"},{\"direction\":\"in\","
                     "\"proto\":\"any\",\"cidr\":\"::/0\"},{\"direction\":\"in\","
                     "\"proto\":\"tcp\",\"cidr\":\"2001:db8::/127\"}]}");
    CHECK(json_equal(out, want));
    json_decref(out);
    json_decref(want);
    kh_secgroup_free(g);
}

int main(void)
{
    RUN(test_cidr);
    RUN(test_mac);
    RUN(test_network_spec);
    RUN(test_dnsmasq);
    RUN(test_nft_render);
    RUN(test_secgroup);
    TEST_DONE();
}
