/*
 * TPM 2.0 backend internals.
 *
 * One tpm2_state per keystore context: a TCTI, an ESYS context and the lock
 * every ESYS call runs under (ESYS contexts are not thread-safe, and a bare
 * TPM without a resource manager must see one command at a time). Only
 * tpm2_call.c and tpm2_key.c call Esys_*.
 */
#ifndef MTLSKS_TPM2_H
#define MTLSKS_TPM2_H

#include "../internal.h"

#include <pthread.h>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>

typedef struct tpm2_state {
    pthread_mutex_t lock;
    char *tcti_conf;
    int tcti_default; /* no TCTI was configured: tcti_conf is the default */
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
    unsigned long fork_gen; /* generation the connection was opened in */
    unsigned long gen;      /* bumped when transient handles become invalid */
} tpm2_state;

/* Creates the state (no connection yet). */
mks_rv tpm2_state_new(const char *tcti_conf, tpm2_state **out);
void tpm2_state_free(tpm2_state *st, int touch_tpm);
/* Atfork child handler part: new lock, connection marked stale. */
void tpm2_state_after_fork(tpm2_state *st);

/*
 * Takes the lock and makes sure the connection is open in this process
 * (opens it again in a child after fork, bumping st->gen). On success the
 * caller holds the lock and releases it with tpm2_unlock. While the lock is
 * held, OpenSSL's default library context of this thread is the keystore's
 * own, so ESYS's crypto never reaches our provider.
 */
mks_rv tpm2_lock(mks_ctx *ctx, tpm2_state **st);
void tpm2_unlock(tpm2_state *st);

/* Counts one TPM command; records "<call> failed: <decoded rc>" on failure. */
TSS2_RC tpm2_trace(const char *name, TSS2_RC rc);
#define TPM2(fn, ...) tpm2_trace(#fn, fn(__VA_ARGS__))

/* Maps a TSS2_RC to an mks_rv with a message naming the call. */
mks_rv tpm2_fail(TSS2_RC rc, const char *call);

#endif
