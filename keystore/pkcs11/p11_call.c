/*
 * The thin layer around the module's C_* functions: CKR names for errors a
 * person can read, call counting for tests and benchmarks, tracing
 * (MTLSKS_DEBUG=1 prints each call and its result to stderr), and the fork
 * guard every call holds.
 */
#include "p11.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ckr_name {
    CK_RV rv;
    const char *name;
};

#define CKR(x)                                                                                     \
    {                                                                                              \
        x, #x                                                                                      \
    }
static const struct ckr_name ckr_names[] = {
    CKR(CKR_OK),
    CKR(CKR_CANCEL),
    CKR(CKR_HOST_MEMORY),
    CKR(CKR_SLOT_ID_INVALID),
    CKR(CKR_GENERAL_ERROR),
    CKR(CKR_FUNCTION_FAILED),
    CKR(CKR_ARGUMENTS_BAD),
    CKR(CKR_ATTRIBUTE_READ_ONLY),
    CKR(CKR_ATTRIBUTE_SENSITIVE),
    CKR(CKR_ATTRIBUTE_TYPE_INVALID),
    CKR(CKR_ATTRIBUTE_VALUE_INVALID),
    CKR(CKR_DATA_INVALID),
    CKR(CKR_DATA_LEN_RANGE),
    CKR(CKR_DEVICE_ERROR),
    CKR(CKR_DEVICE_MEMORY),
    CKR(CKR_DEVICE_REMOVED),
    CKR(CKR_ENCRYPTED_DATA_INVALID),
    CKR(CKR_ENCRYPTED_DATA_LEN_RANGE),
    CKR(CKR_FUNCTION_CANCELED),
    CKR(CKR_FUNCTION_NOT_SUPPORTED),
    CKR(CKR_KEY_HANDLE_INVALID),
    CKR(CKR_KEY_SIZE_RANGE),
    CKR(CKR_KEY_TYPE_INCONSISTENT),
    CKR(CKR_KEY_FUNCTION_NOT_PERMITTED),
    CKR(CKR_MECHANISM_INVALID),
    CKR(CKR_MECHANISM_PARAM_INVALID),
    CKR(CKR_OBJECT_HANDLE_INVALID),
    CKR(CKR_OPERATION_ACTIVE),
    CKR(CKR_OPERATION_NOT_INITIALIZED),
    CKR(CKR_PIN_INCORRECT),
    CKR(CKR_PIN_INVALID),
    CKR(CKR_PIN_LEN_RANGE),
    CKR(CKR_PIN_EXPIRED),
    CKR(CKR_PIN_LOCKED),
    CKR(CKR_SESSION_CLOSED),
    CKR(CKR_SESSION_COUNT),
    CKR(CKR_SESSION_HANDLE_INVALID),
    CKR(CKR_SESSION_READ_ONLY),
    CKR(CKR_SESSION_EXISTS),
    CKR(CKR_SIGNATURE_INVALID),
    CKR(CKR_SIGNATURE_LEN_RANGE),
    CKR(CKR_TEMPLATE_INCOMPLETE),
    CKR(CKR_TEMPLATE_INCONSISTENT),
    CKR(CKR_TOKEN_NOT_PRESENT),
    CKR(CKR_TOKEN_NOT_RECOGNIZED),
    CKR(CKR_TOKEN_WRITE_PROTECTED),
    CKR(CKR_USER_ALREADY_LOGGED_IN),
    CKR(CKR_USER_NOT_LOGGED_IN),
    CKR(CKR_USER_PIN_NOT_INITIALIZED),
    CKR(CKR_USER_TYPE_INVALID),
    CKR(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
    CKR(CKR_USER_TOO_MANY_TYPES),
    CKR(CKR_BUFFER_TOO_SMALL),
    CKR(CKR_CRYPTOKI_NOT_INITIALIZED),
    CKR(CKR_CRYPTOKI_ALREADY_INITIALIZED),
    CKR(CKR_FUNCTION_REJECTED),
};

const char *p11_ckr_name(CK_RV rv)
{
    static _Thread_local char unknown[32];
    size_t i;

    for (i = 0; i < sizeof(ckr_names) / sizeof(ckr_names[0]); i++)
        if (ckr_names[i].rv == rv)
            return ckr_names[i].name;
    snprintf(unknown, sizeof(unknown), "CKR_0x%08lx", (unsigned long)rv);
    return unknown;
}

mks_rv p11_rv_map(CK_RV rv)
{
    switch (rv) {
    case CKR_OK:
        return MKS_OK;
    case CKR_HOST_MEMORY:
        return MKS_ERR_NOMEM;
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
        return MKS_ERR_PIN_INCORRECT;
    case CKR_PIN_LOCKED:
    case CKR_PIN_EXPIRED:
        return MKS_ERR_PIN_LOCKED;
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
        return MKS_ERR_TOKEN_ABSENT;
    case CKR_DEVICE_MEMORY:
        return MKS_ERR_NO_SPACE;
    case CKR_MECHANISM_INVALID:
    case CKR_MECHANISM_PARAM_INVALID:
    case CKR_KEY_SIZE_RANGE:
    case CKR_KEY_TYPE_INCONSISTENT:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
    case CKR_FUNCTION_NOT_SUPPORTED:
        return MKS_ERR_UNSUPPORTED;
    case CKR_USER_NOT_LOGGED_IN:
        return MKS_ERR_PIN_REQUIRED;
    case CKR_SLOT_ID_INVALID:
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_HANDLE_INVALID:
        return MKS_ERR_NOT_FOUND;
    case CKR_DATA_LEN_RANGE:
    case CKR_DATA_INVALID:
    case CKR_ENCRYPTED_DATA_INVALID:
    case CKR_ENCRYPTED_DATA_LEN_RANGE:
    case CKR_BUFFER_TOO_SMALL:
    case CKR_ARGUMENTS_BAD:
        return MKS_ERR_ARG;
    default:
        return MKS_ERR_TOKEN;
    }
}

/* The CKR of this thread's last p11_fail, for callers that see only an mks_rv. */
static _Thread_local CK_RV last_fail = CKR_OK;

CK_RV p11_take_fail(void)
{
    CK_RV rv = last_fail;

    last_fail = CKR_OK;
    return rv;
}

mks_rv p11_fail(CK_RV rv, const char *call, const p11_token *tok)
{
    last_fail = rv;
    if (tok != NULL)
        return mks_error(p11_rv_map(rv), "%s failed: %s (token '%s')", call, p11_ckr_name(rv),
                         tok->label);
    return mks_error(p11_rv_map(rv), "%s failed: %s", call, p11_ckr_name(rv));
}

/* Per-function call counters, indexed by p11_fn. */
#define P11_FN_NAME(fn) #fn,
static const char *const counted[P11_FN_COUNT] = {P11_COUNTED(P11_FN_NAME)};
#undef P11_FN_NAME
static atomic_ulong counts[P11_FN_COUNT];

static int debug_level = -1;

static size_t counter_index(const char *name)
{
    size_t i;

    for (i = 0; i < P11_FN_COUNT; i++)
        if (strcmp(counted[i], name) == 0)
            return i;
    return P11_FN_COUNT;
}

CK_RV p11_trace(p11_fn fn, CK_RV rv)
{
    atomic_fetch_add_explicit(&counts[fn], 1, memory_order_relaxed);
    if (debug_level < 0) {
        const char *e = getenv("MTLSKS_DEBUG");
        debug_level = (e != NULL && *e != '\0' && strcmp(e, "0") != 0) ? 1 : 0;
    }
    if (debug_level > 0)
        fprintf(stderr, "mtlsks: %s -> %s\n", counted[fn], p11_ckr_name(rv));
    return rv;
}

unsigned long p11_call_count(const char *name)
{
    size_t i = counter_index(name);

    return i < P11_FN_COUNT ? atomic_load(&counts[i]) : 0;
}

unsigned long mks_pkcs11_call_count(const char *name)
{
    return p11_call_count(name);
}

/*
 * The fork guard: every call into the module holds it for reading, fork()
 * takes it for writing. A thread forking while another is inside C_Sign
 * would otherwise hand the child the module's internal locks held, and the
 * child would deadlock in its first call. Writers are preferred, so a busy
 * signing loop cannot starve a fork.
 */
static pthread_rwlock_t fork_guard;

void p11_fork_guard_init(void)
{
    pthread_rwlockattr_t attr;

    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&fork_guard, &attr);
    pthread_rwlockattr_destroy(&attr);
}

void p11_fork_guard_enter(void)
{
    pthread_rwlock_rdlock(&fork_guard);
}

CK_RV p11_fork_guard_leave(CK_RV rv)
{
    pthread_rwlock_unlock(&fork_guard);
    return rv;
}

void p11_fork_prepare(void)
{
    pthread_rwlock_wrlock(&fork_guard);
}

void p11_fork_parent(void)
{
    pthread_rwlock_unlock(&fork_guard);
}
