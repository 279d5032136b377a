/* privs.c - the privilege names, the built-in roles, and the syntax of
 * names, ACL paths and ACL subjects (see auth.h). Pure functions. */
#include "auth/auth.h"

#include <string.h>

#include "util/mem.h"

static const char *const priv_names[KH_PRIV_COUNT] = {
    "Sys.Audit",       "Sys.Modify",       "Sys.HostPath",       "Permissions.Modify",
    "VM.Audit",        "VM.PowerMgmt",     "VM.Console",         "VM.Allocate",
    "VM.Config",       "VM.Snapshot",      "VM.Migrate",         "Datastore.Audit",
    "Datastore.Allocate", "Datastore.AllocateSpace", "Network.Audit", "Network.Allocate",
    "Datastore.Backup",
};

#define AUDIT_PRIVS                                                                        \
    (KH_PRIV_SYS_AUDIT | KH_PRIV_VM_AUDIT | KH_PRIV_DATASTORE_AUDIT | KH_PRIV_NETWORK_AUDIT)

static const struct {
    const char *name;
    kh_privs privs;
} builtin[] = {
    { "Administrator", KH_PRIV_ALL },
    { "Operator", KH_PRIV_VM_AUDIT | KH_PRIV_VM_POWERMGMT | KH_PRIV_VM_CONSOLE |
                      KH_PRIV_DATASTORE_AUDIT | KH_PRIV_NETWORK_AUDIT },
    { "Auditor", AUDIT_PRIVS },
};

const char *kh_privs_name(kh_privs one)
{
    for (unsigned i = 0; i < KH_PRIV_COUNT; i++)
        if (one == (1u << i))
            return priv_names[i];
    return NULL;
}

kh_privs kh_privs_parse(const char *name)
{
    for (unsigned i = 0; name && i < KH_PRIV_COUNT; i++)
        if (strcmp(name, priv_names[i]) == 0)
            return 1u << i;
    return 0;
}

json_t *kh_privs_json(kh_privs p)
{
    json_t *a = json_array();
    for (unsigned i = 0; i < KH_PRIV_COUNT; i++)
        if (p & (1u << i))
            json_array_append_new(a, json_string(priv_names[i]));
    return a;
}

int kh_privs_from_json(const json_t *arr, kh_privs *out, kh_err *err)
{
    *out = 0;
    size_t i;
    const json_t *v;
    json_array_foreach(arr, i, v) {
        kh_privs b = kh_privs_parse(json_string_value(v));
        if (!b) {
            kh_err_set(err, KH_E_INVALID, "privileges[%zu]: unknown privilege \"%s\"", i,
                       json_string_value(v) ? json_string_value(v) : "");
            return -1;
        }
        *out |= b;
    }
    return 0;
}

bool kh_privs_builtin(const char *role, kh_privs *out)
{
    for (size_t i = 0; role && i < KH_ARRAY_LEN(builtin); i++)
        if (strcmp(role, builtin[i].name) == 0) {
            *out = builtin[i].privs;
            return true;
        }
    return false;
}

json_t *kh_privs_builtin_json(void)
{
    json_t *a = json_array();
    for (size_t i = 0; i < KH_ARRAY_LEN(builtin); i++)
        json_array_append_new(a, json_pack("{s:s,s:o,s:b}", "name", builtin[i].name,
                                           "privileges", kh_privs_json(builtin[i].privs),
                                           "builtin", 1));
    return a;
}

static bool name_char(char c, bool first)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')
        return true;
    return !first && (c == '.' || c == '-');
}

static bool name_ok_n(const char *s, size_t n)
{
    if (n == 0 || n > KH_AUTH_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!name_char(s[i], i == 0))
            return false;
    return true;
}

bool kh_privs_name_ok(const char *s)
{
    return s && name_ok_n(s, strlen(s));
}

bool kh_privs_path_ok(const char *path)
{
    if (!path || path[0] != '/' || strlen(path) >= KH_AUTH_PATH_MAX)
        return false;
    if (strcmp(path, "/") == 0)
        return true;
    const char *p = path + 1;
    for (;;) {
        size_t n = strcspn(p, "/");
        if (!name_ok_n(p, n))
            return false;
        if (!p[n])
            return true;
        p += n + 1;
    }
}

bool kh_privs_subject_ok(const char *subject)
{
    if (!subject)
        return false;
    if (subject[0] == '@')
        return kh_privs_name_ok(subject + 1);
    const char *bang = strchr(subject, '!');
    if (!bang)
        return kh_privs_name_ok(subject);
    return name_ok_n(subject, (size_t)(bang - subject)) && kh_privs_name_ok(bang + 1);
}
