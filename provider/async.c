/*
 * Token calls inside OpenSSL ASYNC jobs. With SSL_MODE_ASYNC, libssl runs a
 * handshake in an ASYNC job; when it signs (or decrypts) with one of our
 * keys, the token call goes to a keystore worker thread (keystore/async.c),
 * the job registers a wait fd (an eventfd the worker makes readable) on its
 * ASYNC_WAIT_CTX and pauses, and the application's event loop runs other
 * connections until the fd says the result is in. Where the application set
 * an ASYNC_WAIT_CTX callback, the worker calls it too. Outside a job, and
 * when the context has no workers (async-workers = 0), the token is called
 * in the caller's thread as always.
 *
 * The wait fd belongs to the ASYNC_WAIT_CTX (one per connection), not to an
 * operation: applications keep it registered in their poller for the
 * connection's life (HAProxy does), so a new fd per signature would make
 * them add and remove it each time. The ASYNC_WAIT_CTX's cleanup, run when
 * the application frees the connection, closes it; a connection freed while
 * its job waits gives its operation up there (the worker drops the result
 * when the token answers).
 */
#include "prov.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include <openssl/async.h>

/* What our wait fd is filed under in an ASYNC_WAIT_CTX: an address of ours. */
static const char wait_key;

/* The custom data of our wait fd: one per ASYNC_WAIT_CTX. */
typedef struct job_wait {
    int fd;               /* eventfd, nonblocking */
    mks_async_op *op;     /* in flight, or NULL */
    ASYNC_callback_fn cb; /* the application's callback for op, or NULL */
    void *cb_arg;
} job_wait;

/* On the worker: the result is in. */
static void job_notify(void *arg)
{
    job_wait *w = arg;
    uint64_t one = 1;

    while (write(w->fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
    if (w->cb != NULL)
        w->cb(w->cb_arg);
}

/* Run by ASYNC_WAIT_CTX_free: the connection is gone, maybe while a job of
 * it was paused waiting for the token. */
static void job_wait_cleanup(ASYNC_WAIT_CTX *wctx, const void *key, OSSL_ASYNC_FD fd, void *data)
{
    job_wait *w = data;

    /* After this returns, the worker no longer touches w or the fd. */
    mks_async_op_abandon(w->op);
    close(fd);
    free(w);
}

/* The wait fd of this ASYNC_WAIT_CTX, made at its first use. */
static job_wait *job_wait_get(ASYNC_WAIT_CTX *wctx)
{
    OSSL_ASYNC_FD fd;
    void *data = NULL;
    job_wait *w;

    if (ASYNC_WAIT_CTX_get_fd(wctx, &wait_key, &fd, &data) && data != NULL)
        return data;
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->fd < 0 || !ASYNC_WAIT_CTX_set_wait_fd(wctx, &wait_key, w->fd, w, job_wait_cleanup)) {
        if (w->fd >= 0)
            close(w->fd);
        free(w);
        return NULL;
    }
    return w;
}

static void fd_drain(int fd)
{
    uint64_t n;

    while (read(fd, &n, sizeof(n)) < 0 && errno == EINTR)
        ;
}

/*
 * Hands the operation to a worker and pauses the job until the result is
 * in. Returns 0, with nothing done, when it cannot: no worker
 * (async-workers = 0, or none could be started), no wait fd; the caller
 * then calls the token itself.
 */
static int run_in_job(ASYNC_JOB *job, mks_key *key, int decrypt, const mks_mech_params *p,
                      const unsigned char *in, size_t inlen, unsigned char *out, size_t *outlen,
                      mks_rv *rv)
{
    ASYNC_WAIT_CTX *wctx = ASYNC_get_wait_ctx(job);
    job_wait *w;
    mks_async_op *op = NULL;

    /* async-workers = 0: no wait fd either, the application polls nothing. */
    if (wctx == NULL || !mks_key_async_possible(key) || (w = job_wait_get(wctx)) == NULL)
        return 0;
    if (!ASYNC_WAIT_CTX_get_callback(wctx, &w->cb, &w->cb_arg))
        w->cb = NULL;
    if ((decrypt ? mks_key_decrypt_start(key, p, in, inlen, *outlen, job_notify, w, &op)
                 : mks_key_sign_start(key, p, in, inlen, *outlen, job_notify, w, &op)) != MKS_OK)
        return 0;
    w->op = op;
    if (w->cb != NULL)
        ASYNC_WAIT_CTX_set_status(wctx, ASYNC_STATUS_OK);
    ASYNC_pause_job();
    /*
     * Resumed: normally because the fd said the result is in. When the job
     * could not pause (ASYNC_block_pause) or the application resumes jobs
     * without waiting for their fds, finish waits for it, as the
     * synchronous path would.
     */
    w->op = NULL;
    *rv = mks_async_op_finish(op, out, outlen);
    /* notify has written to the fd when finish returns. */
    fd_drain(w->fd);
    return 1;
}

static mks_rv run(mks_key *key, int decrypt, const mks_mech_params *p, const unsigned char *in,
                  size_t inlen, unsigned char *out, size_t *outlen)
{
    ASYNC_JOB *job = ASYNC_get_current_job();
    mks_rv rv;

    if (job != NULL && out != NULL && run_in_job(job, key, decrypt, p, in, inlen, out, outlen, &rv))
        return rv;
    return decrypt ? mks_key_decrypt(key, p, in, inlen, out, outlen)
                   : mks_key_sign(key, p, in, inlen, out, outlen);
}

mks_rv mks_prov_key_sign(mks_key *key, const mks_mech_params *p, const unsigned char *in,
                         size_t inlen, unsigned char *sig, size_t *siglen)
{
    return run(key, 0, p, in, inlen, sig, siglen);
}

mks_rv mks_prov_key_decrypt(mks_key *key, const mks_mech_params *p, const unsigned char *in,
                            size_t inlen, unsigned char *out, size_t *outlen)
{
    return run(key, 1, p, in, inlen, out, outlen);
}
