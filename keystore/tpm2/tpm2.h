/*
 * TPM 2.0 backend internals.
 *
 * One tpm2_state per keystore context: a TCTI, an ESYS context and the lock
 * every ESYS call runs under (ESYS contexts are not thread-safe, and a bare
 * TPM without a resource manager must see one command at a time). Only the
 * files of keystore/tpm2/ call Esys_*: tpm2_call.c (connection, lock,
 * errors), tpm2_objects.c (what stays loaded), tpm2_session.c (HMAC
 * sessions), tpm2_key.c (keys).
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
    /* 1: a loaded key stays loaded between operations (behind a resource
     * manager, which flushes it when the process goes). 0: a bare TPM keeps
     * what a dead process left loaded, so each operation loads the key from
     * its saved context, uses it and flushes it. */
    int hold;
    int sessions_always; /* HMAC sessions for keys without a password too */
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
    unsigned long fork_gen; /* generation the connection was opened in */
    unsigned long gen;      /* bumped when transient handles become invalid */
    /* hold == 0: the storage primary's saved context, so that a session
     * needs no TPM2_CreatePrimary per operation. Valid in any process on
     * this TPM until the TPM is reset (then made again). */
    TPMS_CONTEXT *primary_ctx;
    /* hold == 1: the HMAC session held for keys with a password, started
     * once per connection (valid while session_gen == gen). */
    ESYS_TR session;
    unsigned long session_gen;
} tpm2_state;

/* The TPM part of a key. */
typedef struct tpm2_key {
    mks_tss2_key file;   /* set for keys from a file: loaded again when needed */
    uint32_t persistent; /* set for keys at a persistent handle */
    TPMT_PUBLIC pub;
    ESYS_TR handle; /* valid while gen == the state's gen */
    unsigned long gen;
    int loaded;          /* hold == 1: a transient object we loaded, flushed on free */
    TPMS_CONTEXT *saved; /* hold == 0: the key's saved context (ESYS-allocated) */
    char auth[128];
    size_t auth_len;
} tpm2_key;

/* Creates the state from the TPM part of the configuration (no connection
 * yet). Errors: MKS_ERR_ARG for a value tpm2-hold-objects or tpm2-sessions
 * does not take, MKS_ERR_NOMEM. */
mks_rv tpm2_state_new(const mks_config *cfg, tpm2_state **out);
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

/* The last failure tpm2_trace saw on this thread (TSS2_RC_SUCCESS when none
 * since tpm2_clear_last_rc). Failed flushes do not count: they are clean-up,
 * never the reason an operation failed. */
TSS2_RC tpm2_last_rc(void);
void tpm2_clear_last_rc(void);

/* 1 when rc says the TPM is short of room or busy for a moment (object or
 * session slots taken, TPM_RC_RETRY): worth trying again shortly. */
int tpm2_rc_is_transient(TSS2_RC rc);

/* ---- objects: what stays loaded (tpm2_objects.c) ---------------------------- */

/* 1 when the TCTI reaches the TPM through a resource manager (tabrmd,
 * /dev/tpmrmN; a pcap TCTI counts as the TCTI it wraps). */
int tpm2_tcti_has_rm(const char *conf);

/* tpm2-hold-objects: "auto" (or NULL: hold behind a resource manager),
 * "yes", "no". */
mks_rv tpm2_hold_parse(const char *value, const char *tcti_conf, int *hold);

/* The storage primary, loaded (from its saved context when there is one);
 * *h must be ESYS_TR_NONE or a primary loaded before, which is kept. With
 * save set and objects not held, its context is saved for later operations.
 * The caller flushes it with tpm2_primary_put_locked. */
mks_rv tpm2_primary_get_locked(tpm2_state *st, int save, ESYS_TR *h);
void tpm2_primary_put_locked(tpm2_state *st, ESYS_TR *h);

/* Flushes a transient object (errors ignored: nothing to do about them). */
void tpm2_flush_locked(tpm2_state *st, ESYS_TR h);

/* Frees what a key keeps between operations: flushes its held object (when
 * this process loaded it), frees its saved context. */
void tpm2_key_forget(mks_ctx *ctx, tpm2_key *tk);

/*
 * One TPM command on a key, run by tpm2_key_run once the key is loaded and
 * authorised: `key` is its handle and `session` the session that carries
 * its authorisation (ESYS_TR_PASSWORD for keys without a password).
 */
typedef TSS2_RC tpm2_key_op(ESYS_CONTEXT *esys, ESYS_TR key, ESYS_TR session, void *arg);

/*
 * Runs op on the key under the ESYS lock. With objects held, the key is
 * loaded once and stays; otherwise it is loaded (from its saved context once
 * there is one) before op and flushed after, with termination signals held
 * back in between so that a signal cannot leave it loaded. `attrs` are the
 * parameter-encryption attributes op's command wants from an HMAC session
 * (TPMA_SESSION_DECRYPT, _ENCRYPT), used when the key has a password or
 * sessions are always on. While the TPM has no free slot (other processes'
 * objects) the whole operation is tried again for up to 2 s; a key handle
 * that went stale is loaded again once; a rejected password is never tried
 * again. `what` names op's command in errors.
 */
mks_rv tpm2_key_run(mks_ctx *ctx, tpm2_key *tk, TPMA_SESSION attrs, tpm2_key_op *op, void *arg,
                    const char *what);

/*
 * Runs attempt under the ESYS lock, and again while it fails because the
 * TPM is short of room for a moment (other processes' objects in its slots,
 * TPM_RC_RETRY): for up to 2 s, waiting a little longer each time with the
 * lock released. An attempt flushes whatever it loaded before it returns;
 * when objects are not held, termination signals wait meanwhile.
 */
typedef mks_rv tpm2_attempt(tpm2_state *st, void *arg);
mks_rv tpm2_run(mks_ctx *ctx, tpm2_attempt *attempt, void *arg);

/* TPM2_Create of a key from tmpl under the storage primary (its password
 * in sens) and, with persist set, TPM2_EvictControl of it to that handle.
 * The password goes encrypted in an HMAC session (tpm2_create.c). */
mks_rv tpm2_create_key(mks_ctx *ctx, const TPM2B_SENSITIVE_CREATE *sens, const TPM2B_PUBLIC *tmpl,
                       uint32_t persist, TPM2B_PRIVATE **priv, TPM2B_PUBLIC **pub);

/* ---- sessions (tpm2_session.c) ---------------------------------------------- */

/* tpm2-sessions: "auto" (or NULL: HMAC sessions for keys with a password),
 * "always". */
mks_rv tpm2_sessions_parse(const char *value, int *always);

/*
 * An HMAC session salted with the storage primary (its ECDH with the TPM
 * makes the session key, so the password is never sent, and parameters
 * encrypted with AES-128-CFB are unreadable on the bus), with `attrs`
 * (TPMA_SESSION_DECRYPT / _ENCRYPT). With objects held, one session per
 * connection is kept and reused; otherwise one is started for this
 * operation's one command, after which the TPM closes it. *primary is the
 * primary loaded for the salt (ESYS_TR_NONE: loaded here when needed; the
 * caller flushes it).
 */
mks_rv tpm2_session_get_locked(tpm2_state *st, ESYS_TR *primary, TPMA_SESSION attrs, ESYS_TR *s);
/* Ends the use of s: a session of this operation is closed (flushed unless
 * the TPM closed it after the successful last command, ok = 1); a held one
 * is kept, or flushed and forgotten when the command failed (ok = 0). */
void tpm2_session_put_locked(tpm2_state *st, ESYS_TR *s, int ok);
/* Forgets the held session; flushes it when touch_tpm is set. */
void tpm2_session_forget_locked(tpm2_state *st, int touch_tpm);

#endif
