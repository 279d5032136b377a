/* jsontext.c - owns the cached text of each VM's JSON view (kh_manager_json
 * serialised): building it is most of the cost of a list of many VMs
 * (hundreds of small jansson values per VM, then the dump), and a VM's view
 * rarely changes between two lists.
 *
 * Validity: each call takes a stamp of everything kh_manager_json reads -
 * the spec (its address and updated_at: a spec is only ever replaced, with
 * a new updated_at, never changed in place), state, reason, pid,
 * accelerator, times, console viewers, the template flag, what the running
 * QEMU booted with (disk nodes, boot NICs), the guest agent's view (held by
 * reference, so its address cannot be reused while cached) and each NIC's
 * addresses as the network manager knows them now - and serialises again
 * when any differs. Nothing else has to remember to invalidate it.
 */
#include "instance/jsontext.h"

#include <stdlib.h>
#include <string.h>

#include "instance/console.h"
#include "instance/instance_int.h"
#include "net/netmgr.h"
#include "storage/storage.h"
#include "util/mem.h"

typedef struct stamp_pod {
    const kh_vm_spec *spec;
    double created_at, updated_at, started_at;
    kh_inst_state state;
    pid_t pid;
    kh_accel accel;
    unsigned viewers;
    int tmpl;
    int boot_disks, boot_nics;
    int disk_node[KH_VM_DISKS_MAX];
    char boot_macs[KH_VM_NICS_MAX][KH_MAC_STRLEN];
} stamp_pod;

struct kh_jsontext {
    stamp_pod pod;
    char *reason;
    json_t *guest;  /* held */
    json_t *addrs;  /* per NIC: its addresses now (null: none) */
    char *text;
    size_t len;
};

void kh_jsontext_free(struct kh_jsontext *t)
{
    if (!t)
        return;
    free(t->reason);
    json_decref(t->guest);
    json_decref(t->addrs);
    free(t->text);
    free(t);
}

static void pod_of(const kh_inst *v, stamp_pod *p)
{
    memset(p, 0, sizeof(*p)); /* boot_macs past boot_nics too: compared whole */
    p->spec = v->spec;
    p->created_at = v->created_at;
    p->updated_at = v->updated_at;
    p->started_at = v->started_at;
    p->state = v->state;
    p->pid = v->pid;
    p->accel = v->accel;
    p->viewers = v->console ? kh_console_viewer_count(v->console) : 0;
    p->tmpl = kh_storage_is_template(v->mgr->cfg.storage, v->id);
    p->boot_disks = v->boot_disks;
    p->boot_nics = v->boot_nics;
    memcpy(p->disk_node, v->disk_node, sizeof(p->disk_node));
    for (int i = 0; i < v->boot_nics && i < KH_VM_NICS_MAX; i++)
        memcpy(p->boot_macs[i], v->boot_macs[i], KH_MAC_STRLEN);
}

static bool pod_same(const stamp_pod *a, const stamp_pod *b)
{
    return a->spec == b->spec && a->created_at == b->created_at &&
           a->updated_at == b->updated_at && a->started_at == b->started_at &&
           a->state == b->state && a->pid == b->pid && a->accel == b->accel &&
           a->viewers == b->viewers && a->tmpl == b->tmpl && a->boot_disks == b->boot_disks &&
           a->boot_nics == b->boot_nics &&
           memcmp(a->disk_node, b->disk_node, sizeof(a->disk_node)) == 0 &&
           memcmp(a->boot_macs, b->boot_macs, sizeof(a->boot_macs)) == 0;
}

static json_t *addrs_of(const kh_inst *v)
{
    kh_netmgr *net = v->mgr->cfg.net;
    if (!net || !v->spec->nnics)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; i < v->spec->nnics; i++) {
        const kh_nic_spec *n = &v->spec->nics[i];
        json_array_append_new(a, n->mac ? kh_netmgr_addresses_of(net, n->network, n->mac)
                                        : json_null());
    }
    return a;
}

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool same_json(const json_t *a, const json_t *b)
{
    return a == b || (a && b && json_equal(a, b));
}

/* The VM's text (borrowed until its next call), built again if stale. */
static const char *text_of(kh_inst *v, size_t *len)
{
    stamp_pod pod;
    pod_of(v, &pod);
    json_t *addrs = addrs_of(v);
    struct kh_jsontext *t = v->jtext;
    if (t && pod_same(&t->pod, &pod) && same_str(t->reason, v->reason) &&
        t->guest == v->guest && same_json(t->addrs, addrs)) {
        json_decref(addrs);
        *len = t->len;
        return t->text;
    }
    if (!t)
        t = v->jtext = xcalloc(1, sizeof(*t));
    json_t *j = kh_manager_json(v);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    free(t->text);
    free(t->reason);
    json_decref(t->guest);
    json_decref(t->addrs);
    t->pod = pod;
    t->reason = v->reason ? xstrdup(v->reason) : NULL;
    t->guest = json_incref(v->guest);
    t->addrs = addrs;
    t->text = text ? text : xstrdup("{}");
    t->len = strlen(t->text);
    *len = t->len;
    return t->text;
}

size_t kh_jsontext_list(kh_manager *mgr, const char *host, kh_buf *b)
{
    json_t *h = json_string(host);
    char *hq = json_dumps(h, JSON_ENCODE_ANY);
    json_decref(h);
    size_t n = 0;
    for (kh_inst *v = mgr->vms; v; v = v->next) {
        size_t len = 0;
        const char *text = text_of(v, &len);
        if (len < 2 || text[len - 1] != '}')
            continue;
        if (n++)
            kh_buf_add(b, ",", 1);
        kh_buf_add(b, text, len - 1); /* without its '}': "host" goes in */
        if (len > 2)
            kh_buf_add(b, ",", 1);
        kh_buf_add(b, "\"host\":", 7);
        kh_buf_add(b, hq, strlen(hq));
        kh_buf_add(b, "}", 1);
    }
    free(hq);
    return n;
}
