/* nbdserve.h - a read-only NBD server of one backup disk for one client
 * over a connected socket, on its own thread (live-restore). */
#ifndef KH_BACKUP_NBDSERVE_H
#define KH_BACKUP_NBDSERVE_H

#include <stdbool.h>
#include <stdint.h>

#include "backup/chunks.h"
#include "backup/nbd.h"
#include "util/err.h"

typedef struct kh_nbdserve kh_nbdserve;

/* Serve ix (copied) from chunks over fd (owned from the call on). chunks
 * must outlive the server. The thread ends when the client disconnects. */
kh_nbdserve *kh_nbdserve_start(const kh_chunks *chunks, const kh_index *ix, int fd, kh_err *err);
/* The client has gone (the thread is ending or ended). */
bool kh_nbdserve_done(const kh_nbdserve *s);
/* Bytes served so far. */
uint64_t kh_nbdserve_bytes(const kh_nbdserve *s);
/* Disconnect, join the thread, free (NULL accepted). */
void kh_nbdserve_free(kh_nbdserve *s);

#endif
