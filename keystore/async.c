/*
 * Operations on worker threads: the context's pool of workers that run
 * mks_key_sign / mks_key_decrypt for a caller that must not wait for the
 * token (an OpenSSL ASYNC job that the provider pauses, provider/async.c).
 *
 * An operation belongs to two parties until both let go of it: the worker
 * that runs it and the caller that started it (mks_async_op_finish or
 * mks_async_op_abandon). Its state word says who has let go and whether
 * notify is running, so the two hand it over without a lock, and a caller
 * that gives up waits for a notify call in progress before it frees what
 * notify uses (the provider's eventfd). Whoever lets go last frees it.
 *
 * Locking: pool->lock guards the queue, the list of operations in flight
 * and the thread counts. No lock is held while a worker waits for the token.
 *
 * Fork: atfork handlers, registered with the first pool, take every pool's
 * lock before fork(), so the child inherits a consistent copy. The child has
 * none of the threads: its pools start with no workers, and the operations
 * that were in flight end with an error (their worker is in the parent).
 */
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

/* Bits of mks_async_op.state. */
#define OP_DONE 1u        /* the result is in op */
#define OP_NOTIFYING 2u   /* the worker is calling notify */
#define OP_RELEASED 4u    /* the caller has let go */
#define OP_WORKER_GONE 8u /* the worker has let go */

/* As long as mks_last_error()'s buffer. */
#define OP_MSG 1024

struct mks_async_op {
    atomic_uint state;
    struct mks_async *pool;
    mks_key *key; /* one reference */
    int decrypt;
    mks_mech_params p; /* p.label points into the allocation */
    const unsigned char *in;
    size_t inlen;
    unsigned char *out;
    size_t outsize, outlen;
    mks_rv rv;
    mks_async_notify_fn *notify;
    void *arg;
    mks_async_op *next_queued;
    mks_async_op *prev_live, *next_live; /* in flight: queued or running */
    char msg[OP_MSG];
    unsigned char buf[]; /* in, label, out */
};

struct mks_async {
    pthread_mutex_t lock;
    pthread_cond_t work; /* an operation was queued, or stop */
    pthread_cond_t done; /* an operation finished */
    int max_workers;     /* 0: none */
    int nthreads, nidle;
    pthread_t *threads; /* MKS_ASYNC_WORKERS_MAX slots, allocated with the first */
    mks_async_op *head, *tail;
    unsigned long nqueued;
    mks_async_op *live;
    /* Operations a child inherited that their caller had given up on: freed
     * at the next start or at free (not in the atfork handler). */
    mks_async_op *graveyard;
    int stop;
    int orphaned; /* freed from one of its own workers: the last one out frees it */
    struct mks_async *next_registered;
};

static atomic_ulong live_ops;
static atomic_ulong live_workers;

/* The pool whose worker this thread is (NULL elsewhere). */
static _Thread_local struct mks_async *current_pool;

/* ---- fork -------------------------------------------------------------------- */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mks_async *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void)
{
    struct mks_async *a;

    pthread_mutex_lock(&registry_lock);
    for (a = registry; a != NULL; a = a->next_registered)
        pthread_mutex_lock(&a->lock);
}

static void atfork_parent(void)
{
    struct mks_async *a;

    for (a = registry; a != NULL; a = a->next_registered)
        pthread_mutex_unlock(&a->lock);
    pthread_mutex_unlock(&registry_lock);
}

/* The child: no workers; what was in flight is over, with an error. */
static void pool_after_fork(struct mks_async *a)
{
    mks_async_op *op, *next;

    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->work, NULL);
    pthread_cond_init(&a->done, NULL);
    a->nthreads = 0;
    a->nidle = 0;
    a->head = a->tail = NULL;
    a->nqueued = 0;
    for (op = a->live; op != NULL; op = next) {
        unsigned st = atomic_load(&op->state);

        next = op->next_live;
        if (!(st & OP_DONE)) {
            op->rv = MKS_ERR_GENERAL;
            snprintf(op->msg, sizeof(op->msg),
                     "the token operation was started before fork() and its worker thread is in "
                     "the parent process");
        }
        /* A caller that had let go is in the parent too: nobody here frees
         * op but the pool. */
        atomic_store(&op->state, (st & ~OP_NOTIFYING) | OP_DONE | OP_WORKER_GONE);
        if (st & OP_RELEASED) {
            op->next_queued = a->graveyard;
            a->graveyard = op;
        }
    }
    a->live = NULL;
}

static void atfork_child(void)
{
    struct mks_async *a;

    atomic_store(&live_workers, 0);
    for (a = registry; a != NULL; a = a->next_registered)
        pool_after_fork(a);
    pthread_mutex_init(&registry_lock, NULL);
}

static void atfork_register(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* ---- operations ---------------------------------------------------------------- */

static void op_free(mks_async_op *op)
{
    mks_key *key = op->key;

    mks_cleanse(op->buf, op->inlen + op->p.label_len + op->outsize);
    mks_cleanse(op->msg, sizeof(op->msg));
    free(op);
    atomic_fetch_sub(&live_ops, 1);
    /* Last: the key may hold the last reference on the context, and so on
     * the pool this op came from. */
    mks_key_free(key);
}

static void graveyard_free(mks_async_op *list)
{
    mks_async_op *next;

    for (; list != NULL; list = next) {
        next = list->next_queued;
        op_free(list);
    }
}

static void live_remove_locked(struct mks_async *a, mks_async_op *op)
{
    if (op->prev_live != NULL)
        op->prev_live->next_live = op->next_live;
    else
        a->live = op->next_live;
    if (op->next_live != NULL)
        op->next_live->prev_live = op->prev_live;
    op->prev_live = op->next_live = NULL;
}

/*
 * Runs op on this worker, hands the result over and lets go of op. An
 * operation stays on the list of those in flight until notify has
 * returned, so that a forked child, which has no worker to finish the
 * call, can end it (pool_after_fork).
 */
static void op_run(struct mks_async *a, mks_async_op *op)
{
    size_t len = op->outsize;
    unsigned st, add;
    mks_rv rv;
    int notify;

    mks_error_clear();
    rv = op->decrypt ? mks_key_decrypt(op->key, &op->p, op->in, op->inlen, op->out, &len)
                     : mks_key_sign(op->key, &op->p, op->in, op->inlen, op->out, &len);
    /* The token and OpenSSL leave errors on this thread's queue; nobody
     * reads them here. */
    ERR_clear_error();
    op->rv = rv;
    op->outlen = len;
    if (rv != MKS_OK)
        snprintf(op->msg, sizeof(op->msg), "%s", mks_last_error());

    pthread_mutex_lock(&a->lock);
    st = atomic_load(&op->state);
    do {
        /* No notify for a caller that has given up already. */
        notify = !(st & OP_RELEASED) && op->notify != NULL;
        add = OP_DONE | (notify ? OP_NOTIFYING : OP_WORKER_GONE);
    } while (!atomic_compare_exchange_weak(&op->state, &st, st | add));
    if (!notify)
        live_remove_locked(a, op);
    pthread_cond_broadcast(&a->done);
    pthread_mutex_unlock(&a->lock);
    if (!notify) {
        if (st & OP_RELEASED)
            op_free(op);
        return;
    }

    op->notify(op->arg);
    /* A caller that let go while notify ran waits for this and frees op. */
    pthread_mutex_lock(&a->lock);
    live_remove_locked(a, op);
    st = atomic_load(&op->state);
    while (!atomic_compare_exchange_weak(&op->state, &st, (st & ~OP_NOTIFYING) | OP_WORKER_GONE))
        ;
    pthread_mutex_unlock(&a->lock);
}

/* The caller lets go of op; frees it when the worker has let go too. */
static void op_release(mks_async_op *op)
{
    unsigned st = atomic_fetch_or(&op->state, OP_RELEASED);

    if (st & OP_NOTIFYING) {
        while (atomic_load(&op->state) & OP_NOTIFYING)
            sched_yield();
        op_free(op);
    } else if (st & OP_WORKER_GONE) {
        op_free(op);
    }
}

int mks_key_async_possible(const mks_key *key)
{
    struct mks_async *a = mks_ctx_async(key->ctx);
    int yes;

    pthread_mutex_lock(&a->lock);
    yes = a->max_workers > 0;
    pthread_mutex_unlock(&a->lock);
    return yes;
}

int mks_async_op_done(const mks_async_op *op)
{
    return (atomic_load(&((mks_async_op *)op)->state) & OP_DONE) != 0;
}

mks_rv mks_async_op_finish(mks_async_op *op, unsigned char *out, size_t *outlen)
{
    struct mks_async *a = op->pool;
    mks_rv rv;

    if (!mks_async_op_done(op)) {
        pthread_mutex_lock(&a->lock);
        while (!mks_async_op_done(op))
            pthread_cond_wait(&a->done, &a->lock);
        pthread_mutex_unlock(&a->lock);
    }
    rv = op->rv;
    if (rv == MKS_OK && op->outlen > *outlen)
        rv = mks_error(MKS_ERR_ARG, "the result (%zu bytes) does not fit in %zu bytes", op->outlen,
                       *outlen);
    else if (rv == MKS_OK)
        memcpy(out, op->out, (*outlen = op->outlen));
    else
        mks_error(rv, "%s", op->msg);
    if (rv == MKS_OK)
        mks_error_clear();
    op_release(op);
    return rv;
}

void mks_async_op_abandon(mks_async_op *op)
{
    if (op != NULL)
        op_release(op);
}

void mks_async_counts(unsigned long *ops, unsigned long *workers)
{
    *ops = atomic_load(&live_ops);
    *workers = atomic_load(&live_workers);
}

/* ---- workers ------------------------------------------------------------------- */

static void pool_destroy(struct mks_async *a)
{
    graveyard_free(a->graveyard);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->work);
    pthread_cond_destroy(&a->done);
    free(a->threads);
    free(a);
}

/* This worker leaves the pool's thread slots and detaches: nobody joins it. */
static void retire_locked(struct mks_async *a)
{
    pthread_t self = pthread_self();
    int i;

    for (i = 0; i < a->nthreads; i++)
        if (pthread_equal(a->threads[i], self)) {
            a->threads[i] = a->threads[--a->nthreads];
            break;
        }
    pthread_detach(self);
}

static void *worker_main(void *arg)
{
    struct mks_async *a = arg;
    mks_async_op *op;
    int last;

    current_pool = a;
    pthread_mutex_lock(&a->lock);
    for (;;) {
        while (a->head == NULL && !a->stop && a->nthreads <= a->max_workers) {
            a->nidle++;
            pthread_cond_wait(&a->work, &a->lock);
            a->nidle--;
        }
        /* Above a lowered limit: leave, unless the last one with work queued. */
        if (!a->stop && a->nthreads > a->max_workers && (a->head == NULL || a->nthreads > 1)) {
            retire_locked(a);
            pthread_mutex_unlock(&a->lock);
            atomic_fetch_sub(&live_workers, 1);
            return NULL;
        }
        /* Stopping drains the queue first. */
        if (a->head == NULL)
            break;
        op = a->head;
        a->head = op->next_queued;
        if (a->head == NULL)
            a->tail = NULL;
        a->nqueued--;
        pthread_mutex_unlock(&a->lock);
        op_run(a, op); /* may free the context, and free (orphan) this pool */
        pthread_mutex_lock(&a->lock);
    }
    a->nthreads--;
    last = a->orphaned && a->nthreads == 0;
    pthread_mutex_unlock(&a->lock);
    atomic_fetch_sub(&live_workers, 1);
    if (last)
        pool_destroy(a);
    return NULL;
}

/* One more worker; a->lock held. Signals stay with the application's
 * threads: a server's handlers must not run on ours. */
static int spawn_locked(struct mks_async *a)
{
    sigset_t all, old;
    int rc;

    if (a->threads == NULL &&
        (a->threads = calloc(MKS_ASYNC_WORKERS_MAX, sizeof(pthread_t))) == NULL)
        return 0;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&a->threads[a->nthreads], NULL, worker_main, a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return 0;
    pthread_setname_np(a->threads[a->nthreads], "mtlsks-async");
    a->nthreads++;
    atomic_fetch_add(&live_workers, 1);
    return 1;
}

static mks_async_op *op_new(mks_key *key, int decrypt, const mks_mech_params *p,
                            const unsigned char *in, size_t inlen, size_t outsize)
{
    size_t label_len = p->label != NULL ? p->label_len : 0;
    mks_async_op *op = calloc(1, sizeof(*op) + inlen + label_len + outsize);

    if (op == NULL)
        return NULL;
    atomic_init(&op->state, 0);
    op->decrypt = decrypt;
    op->p = *p;
    memcpy(op->buf, in, inlen);
    op->in = op->buf;
    op->inlen = inlen;
    op->p.label = NULL;
    op->p.label_len = label_len;
    if (label_len > 0) {
        memcpy(op->buf + inlen, p->label, label_len);
        op->p.label = op->buf + inlen;
    }
    op->out = op->buf + inlen + label_len;
    op->outsize = outsize;
    atomic_fetch_add(&live_ops, 1);
    return op;
}

static mks_rv op_start(mks_key *key, int decrypt, const mks_mech_params *p, const unsigned char *in,
                       size_t inlen, size_t outsize, mks_async_notify_fn *notify, void *arg,
                       mks_async_op **out)
{
    struct mks_async *a = mks_ctx_async(key->ctx);
    mks_async_op *op, *dead;

    *out = NULL;
    if (a == NULL)
        return mks_error(MKS_ERR_UNSUPPORTED, "no worker threads");
    if (outsize == 0)
        return mks_error(MKS_ERR_ARG, "no room for the result");
    op = op_new(key, decrypt, p, in, inlen, outsize);
    if (op == NULL)
        return mks_error(MKS_ERR_NOMEM, "out of memory");
    op->notify = notify;
    op->arg = arg;
    op->pool = a;
    op->key = key;
    if (mks_key_up_ref(key) != MKS_OK) {
        op->key = NULL;
        free(op);
        atomic_fetch_sub(&live_ops, 1);
        return mks_error(MKS_ERR_GENERAL, "cannot take a reference on the key");
    }

    pthread_mutex_lock(&a->lock);
    dead = a->graveyard;
    a->graveyard = NULL;
    if (a->nqueued + 1 > (unsigned long)a->nidle && a->nthreads < a->max_workers)
        spawn_locked(a); /* when it fails, the running workers take op */
    if (a->nthreads == 0 || a->max_workers == 0) {
        int none = a->max_workers == 0;

        pthread_mutex_unlock(&a->lock);
        graveyard_free(dead);
        op_free(op);
        return mks_error(MKS_ERR_UNSUPPORTED, "%s",
                         none ? "no worker threads (async-workers = 0)"
                              : "cannot start a worker thread");
    }
    if (a->tail != NULL)
        a->tail->next_queued = op;
    else
        a->head = op;
    a->tail = op;
    a->nqueued++;
    op->next_live = a->live;
    if (a->live != NULL)
        a->live->prev_live = op;
    a->live = op;
    pthread_cond_signal(&a->work);
    pthread_mutex_unlock(&a->lock);
    graveyard_free(dead);
    *out = op;
    return MKS_OK;
}

mks_rv mks_key_sign_start(mks_key *key, const mks_mech_params *p, const unsigned char *in,
                          size_t inlen, size_t outsize, mks_async_notify_fn *notify, void *arg,
                          mks_async_op **out)
{
    return op_start(key, 0, p, in, inlen, outsize, notify, arg, out);
}

mks_rv mks_key_decrypt_start(mks_key *key, const mks_mech_params *p, const unsigned char *in,
                             size_t inlen, size_t outsize, mks_async_notify_fn *notify, void *arg,
                             mks_async_op **out)
{
    return op_start(key, 1, p, in, inlen, outsize, notify, arg, out);
}

/* ---- the pool ------------------------------------------------------------------- */

mks_rv mks_async_new(struct mks_async **out)
{
    struct mks_async *a = calloc(1, sizeof(*a));

    *out = NULL;
    if (a == NULL)
        return mks_error(MKS_ERR_NOMEM, "out of memory");
    a->max_workers = MKS_ASYNC_WORKERS_DEFAULT;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->work, NULL);
    pthread_cond_init(&a->done, NULL);
    pthread_once(&atfork_once, atfork_register);
    pthread_mutex_lock(&registry_lock);
    a->next_registered = registry;
    registry = a;
    pthread_mutex_unlock(&registry_lock);
    *out = a;
    return MKS_OK;
}

mks_rv mks_ctx_set_async_workers(mks_ctx *ctx, int workers)
{
    struct mks_async *a = mks_ctx_async(ctx);

    if (workers < 0 || workers > MKS_ASYNC_WORKERS_MAX)
        return mks_error(MKS_ERR_ARG, "async-workers must be 0 (none) to %d, not %d",
                         MKS_ASYNC_WORKERS_MAX, workers);
    pthread_mutex_lock(&a->lock);
    a->max_workers = workers;
    /* Idle workers above the limit leave. */
    pthread_cond_broadcast(&a->work);
    pthread_mutex_unlock(&a->lock);
    return MKS_OK;
}

static void registry_remove(struct mks_async *a)
{
    struct mks_async **pp;

    pthread_mutex_lock(&registry_lock);
    for (pp = &registry; *pp != NULL; pp = &(*pp)->next_registered)
        if (*pp == a) {
            *pp = a->next_registered;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
}

/*
 * Called when the context goes: no operation is in flight then (each holds
 * a reference on the context through its key), so the workers are idle.
 * From one of the pool's own workers (it dropped the last reference) the
 * threads cannot be joined: they are detached, and the last to leave frees
 * the pool.
 */
void mks_async_free(struct mks_async *a)
{
    int i, n;

    if (a == NULL)
        return;
    registry_remove(a);
    pthread_mutex_lock(&a->lock);
    a->stop = 1;
    pthread_cond_broadcast(&a->work);
    n = a->nthreads;
    if (current_pool == a) {
        a->orphaned = 1;
        for (i = 0; i < n; i++)
            pthread_detach(a->threads[i]);
        pthread_mutex_unlock(&a->lock);
        return;
    }
    pthread_mutex_unlock(&a->lock);
    for (i = 0; i < n; i++)
        pthread_join(a->threads[i], NULL);
    pool_destroy(a);
}
