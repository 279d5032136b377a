/* later.c - a reply that comes later, from an asynchronous call's
 * callback (api.h: kh_api_later). A client that goes away meanwhile does
 * not stop the call; its result is then dropped. */
#include <stdlib.h>

#include "api/api.h"
#include "util/mem.h"

struct kh_api_later {
    kh_http_req *req; /* NULL once the client went away */
    int status;       /* on success */
};

static void on_gone(kh_http_req *req, void *opaque)
{
    (void)req;
    kh_api_later *l = opaque;
    l->req = NULL;
}

kh_api_later *kh_api_later_new(kh_http_req *req, int status)
{
    kh_api_later *l = xcalloc(1, sizeof(*l));
    l->req = req;
    l->status = status;
    return l;
}

void kh_api_later_started(kh_api_later *l, int rc, const kh_err *err)
{
    kh_http_req *req = l->req;
    if (rc < 0) {
        free(l);
        kh_http_reply_error(req, err);
        return;
    }
    kh_http_req_on_abort(req, on_gone, l);
}

kh_http_req *kh_api_later_req(const kh_api_later *l)
{
    return l->req;
}

kh_http_req *kh_api_later_take(kh_api_later *l)
{
    kh_http_req *req = l->req;
    if (req)
        kh_http_req_on_abort(req, NULL, NULL);
    free(l);
    return req;
}

void kh_api_later_done(kh_api_later *l, json_t *result, const kh_err *err)
{
    if (l->req) {
        kh_http_req_on_abort(l->req, NULL, NULL);
        if (result)
            kh_http_reply_json(l->req, l->status, result);
        else
            kh_http_reply_error(l->req, err);
    } else {
        json_decref(result);
    }
    free(l);
}
