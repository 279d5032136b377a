/* curl_lazy.c - owns the daemon's lazy libcurl: the curl_* functions the
 * daemon's libraries call, defined here and forwarded to a libcurl that is
 * dlopen'ed on first use. Linked (kh_curl_lazy) instead of libcurl into
 * what runs in kvmhostd, so a daemon that never sends a webhook or talks
 * to etcd does not map libcurl and the two dozen libraries it pulls in
 * (Kerberos, LDAP, SSH, RTMP, HTTP/2, OpenSSL's libssl): about 1.8 MiB
 * of its idle resident memory. Programs that always use curl (the CLI)
 * link libcurl itself.
 *
 * When libcurl cannot be loaded, the constructors return NULL and the
 * calls CURLE_FAILED_INIT / CURLM_INTERNAL_ERROR / CURLUE_OUT_OF_MEMORY,
 * which the callers already handle as a failed request. */
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#define CURL_FUNCS(X)                                                                         \
    X(curl_global_init) X(curl_free) X(curl_slist_append) X(curl_slist_free_all)              \
    X(curl_easy_init) X(curl_easy_setopt) X(curl_easy_perform) X(curl_easy_cleanup)          \
    X(curl_easy_getinfo) X(curl_easy_reset) X(curl_easy_strerror) X(curl_url)                 \
    X(curl_url_cleanup) X(curl_url_set) X(curl_url_get) X(curl_multi_init)                    \
    X(curl_multi_cleanup) X(curl_multi_add_handle) X(curl_multi_remove_handle)                \
    X(curl_multi_setopt) X(curl_multi_assign) X(curl_multi_socket_action)                     \
    X(curl_multi_info_read)

static struct {
#define FIELD(name) __typeof__(name) *(name);
    CURL_FUNCS(FIELD)
#undef FIELD
} fn;
static bool loaded;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void)
{
    void *h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return;
#define SYM(name)                                                                              \
    {                                                                                          \
        void *sym = dlsym(h, #name);                                                           \
        if (!sym)                                                                              \
            return;                                                                            \
        memcpy(&fn.name, &sym, sizeof(sym));                                                   \
    }
    CURL_FUNCS(SYM)
#undef SYM
    loaded = true; /* the handle stays open for the process's life */
}

static bool ready(void)
{
    pthread_once(&once, load);
    return loaded;
}

/* The one variadic argument of a setopt, by the option's type range. */
typedef struct opt_arg {
    long l;
    void *p;
    curl_off_t o;
} opt_arg;

static int opt_kind(int option)
{
    if (option < CURLOPTTYPE_OBJECTPOINT)
        return 0;
    if (option >= CURLOPTTYPE_OFF_T && option < CURLOPTTYPE_BLOB)
        return 2;
    return 1; /* object, string, list, callback data, function, blob */
}

/* Take the setopt argument of its kind from ap (curl_easy_setopt and
 * curl_multi_setopt share the option type ranges). */
static int opt_take(int option, va_list ap, opt_arg *a)
{
    int kind = opt_kind(option);
    if (kind == 0)
        a->l = va_arg(ap, long);
    else if (kind == 2)
        a->o = va_arg(ap, curl_off_t);
    else
        a->p = va_arg(ap, void *);
    return kind;
}

CURLcode curl_global_init(long flags)
{
    return ready() ? fn.curl_global_init(flags) : CURLE_FAILED_INIT;
}

void curl_free(void *p)
{
    if (p && ready())
        fn.curl_free(p);
}

struct curl_slist *curl_slist_append(struct curl_slist *list, const char *data)
{
    return ready() ? fn.curl_slist_append(list, data) : NULL;
}

void curl_slist_free_all(struct curl_slist *list)
{
    if (list && ready())
        fn.curl_slist_free_all(list);
}

CURL *curl_easy_init(void)
{
    return ready() ? fn.curl_easy_init() : NULL;
}

CURLcode curl_easy_setopt(CURL *curl, CURLoption option, ...)
{
    if (!ready() || !curl)
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, option);
    opt_arg a = { 0, NULL, 0 };
    int kind = opt_take((int)option, ap, &a);
    va_end(ap);
    return kind == 0 ? fn.curl_easy_setopt(curl, option, a.l)
           : kind == 2 ? fn.curl_easy_setopt(curl, option, a.o)
                       : fn.curl_easy_setopt(curl, option, a.p);
}

CURLcode curl_easy_perform(CURL *curl)
{
    return ready() && curl ? fn.curl_easy_perform(curl) : CURLE_FAILED_INIT;
}

void curl_easy_cleanup(CURL *curl)
{
    if (curl && ready())
        fn.curl_easy_cleanup(curl);
}

CURLcode curl_easy_getinfo(CURL *curl, CURLINFO info, ...)
{
    if (!ready() || !curl)
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, info);
    void *out = va_arg(ap, void *); /* every CURLINFO takes a pointer */
    va_end(ap);
    return fn.curl_easy_getinfo(curl, info, out);
}

void curl_easy_reset(CURL *curl)
{
    if (curl && ready())
        fn.curl_easy_reset(curl);
}

const char *curl_easy_strerror(CURLcode code)
{
    return ready() ? fn.curl_easy_strerror(code) : "libcurl could not be loaded";
}

CURLU *curl_url(void)
{
    return ready() ? fn.curl_url() : NULL;
}

void curl_url_cleanup(CURLU *handle)
{
    if (handle && ready())
        fn.curl_url_cleanup(handle);
}

CURLUcode curl_url_set(CURLU *handle, CURLUPart what, const char *part, unsigned int flags)
{
    return ready() && handle ? fn.curl_url_set(handle, what, part, flags) : CURLUE_OUT_OF_MEMORY;
}

CURLUcode curl_url_get(CURLU *handle, CURLUPart what, char **part, unsigned int flags)
{
    return ready() && handle ? fn.curl_url_get(handle, what, part, flags) : CURLUE_OUT_OF_MEMORY;
}

CURLM *curl_multi_init(void)
{
    return ready() ? fn.curl_multi_init() : NULL;
}

CURLMcode curl_multi_cleanup(CURLM *multi)
{
    return ready() && multi ? fn.curl_multi_cleanup(multi) : CURLM_BAD_HANDLE;
}

CURLMcode curl_multi_add_handle(CURLM *multi, CURL *curl)
{
    return ready() && multi ? fn.curl_multi_add_handle(multi, curl) : CURLM_BAD_HANDLE;
}

CURLMcode curl_multi_remove_handle(CURLM *multi, CURL *curl)
{
    return ready() && multi ? fn.curl_multi_remove_handle(multi, curl) : CURLM_BAD_HANDLE;
}

CURLMcode curl_multi_setopt(CURLM *multi, CURLMoption option, ...)
{
    if (!ready() || !multi)
        return CURLM_BAD_HANDLE;
    va_list ap;
    va_start(ap, option);
    opt_arg a = { 0, NULL, 0 };
    int kind = opt_take((int)option, ap, &a);
    va_end(ap);
    return kind == 0 ? fn.curl_multi_setopt(multi, option, a.l)
           : kind == 2 ? fn.curl_multi_setopt(multi, option, a.o)
                       : fn.curl_multi_setopt(multi, option, a.p);
}

CURLMcode curl_multi_assign(CURLM *multi, curl_socket_t sockfd, void *sockp)
{
    return ready() && multi ? fn.curl_multi_assign(multi, sockfd, sockp) : CURLM_BAD_HANDLE;
}

CURLMcode curl_multi_socket_action(CURLM *multi, curl_socket_t s, int ev_bitmask,
                                   int *running_handles)
{
    return ready() && multi ? fn.curl_multi_socket_action(multi, s, ev_bitmask, running_handles)
                            : CURLM_BAD_HANDLE;
}

CURLMsg *curl_multi_info_read(CURLM *multi, int *msgs_in_queue)
{
    return ready() && multi ? fn.curl_multi_info_read(multi, msgs_in_queue) : NULL;
}
