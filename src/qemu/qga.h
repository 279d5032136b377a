/* qga.h - a client of qemu-guest-agent (QGA) over the VM's virtio-serial
 * channel org.qemu.guest_agent.0 (RUN/vms/<id>/qga.sock, qemu/argv.h).
 *
 * Blocking, with a deadline: meant for the libuv thread pool (instance/
 * guest.c), never the loop thread - an agent that is not running inside the
 * guest simply never answers. Each session starts with guest-sync-delimited
 * (a 0xFF byte, then the sync id echoed after a 0xFF), which also drops
 * whatever a previous client left unread in the channel. */
#ifndef KH_QEMU_QGA_H
#define KH_QEMU_QGA_H

#include <jansson.h>

#include "util/err.h"

typedef struct kh_qga kh_qga;

/* Connect and sync within timeout_ms; NULL with err (KH_E_CONFLICT "the
 * guest agent does not answer" on timeout). */
kh_qga *kh_qga_open(const char *sock_path, unsigned timeout_ms, kh_err *err);
void kh_qga_close(kh_qga *q);
/* A new deadline for what follows: timeout_ms from now (a command that may
 * take longer than the sync, guest-fsfreeze-freeze). */
void kh_qga_deadline(kh_qga *q, unsigned timeout_ms);
/* One command (args stolen, may be NULL): its "return" value (a new
 * reference, json null when the agent returns nothing), or NULL with err
 * (KH_E_QEMU with the agent's error text). no_reply: the command has none
 * on success (guest-shutdown): returns json null once it is sent. */
json_t *kh_qga_call(kh_qga *q, const char *cmd, json_t *args, bool no_reply, kh_err *err);

/* What the VM view shows of a guest, from one session: {"os": {"id",
 * "name", "version", "kernel"}, "hostname", "interfaces": [{"name", "mac",
 * "addresses": [{"ip", "prefix", "family": "ipv4"|"ipv6"}]}]} (the loopback
 * interface left out). NULL with err. */
json_t *kh_qga_guest_info(const char *sock_path, unsigned timeout_ms, kh_err *err);

#endif
