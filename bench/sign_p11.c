/*
 * The ceiling: what the token itself does per second. The module is loaded
 * with dlopen, each thread has its own session, and the loop is
 * C_SignInit + C_Sign on the same key and the same input, no hashing, no
 * pool, no locks of ours. Two keys: "raw" signs with a session-object copy
 * of the key (C_CopyObject with CKA_TOKEN=FALSE, as a cache of keys in
 * sessions does: SoftHSM re-reads a token object's file on every use, a
 * session object it does not), "raw-token" with the token object itself.
 * The provider can only approach the first.
 */
#include "bench.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

/* The module, its sessions and the key: shared by both raw paths, which
 * take turns and never sign on one session at once. */
typedef struct raw_token {
    CK_FUNCTION_LIST *fl;
    CK_OBJECT_HANDLE key, copy;
    CK_MECHANISM mech;
    CK_RSA_PKCS_PSS_PARAMS pss;
    unsigned char in[64];
    CK_ULONG inlen;
    int threads;
    CK_SESSION_HANDLE session[BENCH_MAX_THREADS];
} raw_token;

typedef struct raw_arg {
    raw_token *t;
    CK_OBJECT_HANDLE key;
} raw_arg;

/* DigestInfo prefix of SHA-256 (RFC 8017, 9.2 note 1): CKM_RSA_PKCS signs
 * DigestInfo || hash. */
static const unsigned char sha256_prefix[19] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                                0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                                0x01, 0x05, 0x00, 0x04, 0x20};

static int raw_op(void *p, int thread)
{
    raw_arg *a = p;
    raw_token *t = a->t;
    unsigned char sig[512];
    CK_ULONG siglen = sizeof(sig);

    if (t->fl->C_SignInit(t->session[thread], &t->mech, a->key) != CKR_OK)
        return 0;
    return t->fl->C_Sign(t->session[thread], t->in, t->inlen, sig, &siglen) == CKR_OK;
}

/* The first slot whose token matches the URI. */
static int find_slot(CK_FUNCTION_LIST *fl, P11KitUri *uri, CK_SLOT_ID *out)
{
    CK_SLOT_ID slots[64];
    CK_ULONG n = 64, i;
    CK_TOKEN_INFO ti;

    if (fl->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
        return 0;
    for (i = 0; i < n; i++)
        if (fl->C_GetTokenInfo(slots[i], &ti) == CKR_OK && p11_kit_uri_match_token_info(uri, &ti)) {
            *out = slots[i];
            return 1;
        }
    return 0;
}

static void set_mechanism(raw_token *t, bench_alg alg)
{
    memset(t->in, 0x5a, sizeof(t->in));
    t->inlen = 32; /* a SHA-256 hash */
    switch (alg) {
    case BENCH_EC:
        t->mech.mechanism = CKM_ECDSA;
        break;
    case BENCH_RSA_PKCS1:
        t->mech.mechanism = CKM_RSA_PKCS;
        memcpy(t->in, sha256_prefix, sizeof(sha256_prefix));
        t->inlen = sizeof(sha256_prefix) + 32;
        break;
    case BENCH_RSA_PSS:
        t->pss.hashAlg = CKM_SHA256;
        t->pss.mgf = CKG_MGF1_SHA256;
        t->pss.sLen = 32;
        t->mech.mechanism = CKM_RSA_PKCS_PSS;
        t->mech.pParameter = &t->pss;
        t->mech.ulParameterLen = sizeof(t->pss);
        break;
    }
}

/* The module by dlopen, a session per thread, the login, the key by URI
 * and its session-object copy. */
static int open_token(const bench_opts *o, raw_token *t)
{
    CK_C_GetFunctionList get_list;
    CK_C_INITIALIZE_ARGS init = {.flags = CKF_OS_LOCKING_OK};
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE cls_attr = {CKA_CLASS, &cls, sizeof(cls)}, *tmpl;
    CK_ATTRIBUTE session_obj = {CKA_TOKEN, &no, sizeof(no)};
    P11KitUri *uri = p11_kit_uri_new();
    CK_SLOT_ID slot;
    CK_ULONG n = 0, nattrs = 0;
    CK_RV rv;
    char pin[256];
    void *dl;
    int i, ok = 0;

    if (o->module == NULL || o->key == NULL || !bench_read_pin(o->pin_file, pin, sizeof(pin)) ||
        uri == NULL || p11_kit_uri_parse(o->key, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, uri) != 0 ||
        p11_kit_uri_set_attribute(uri, &cls_attr) != 0) {
        fprintf(stderr, "mtlsks-bench: raw needs --module, --key pkcs11:URI, --pin-file\n");
        goto done;
    }
    tmpl = p11_kit_uri_get_attributes(uri, &nattrs);
    dl = dlopen(o->module, RTLD_NOW | RTLD_LOCAL);
    get_list = dl != NULL ? (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList") : NULL;
    /* Already initialised when another path in this process (the provider,
     * the engine) loaded the same module first. */
    if (get_list == NULL || get_list(&t->fl) != CKR_OK ||
        ((rv = t->fl->C_Initialize(&init)) != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) ||
        !find_slot(t->fl, uri, &slot)) {
        fprintf(stderr, "mtlsks-bench: no token matching %s in %s\n", o->key, o->module);
        goto done;
    }
    for (i = 0; i < o->threads; i++)
        if (t->fl->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &t->session[i]) != CKR_OK)
            goto done;
    t->threads = o->threads;
    rv = t->fl->C_Login(t->session[0], CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
    if ((rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) ||
        t->fl->C_FindObjectsInit(t->session[0], tmpl, nattrs) != CKR_OK ||
        t->fl->C_FindObjects(t->session[0], &t->key, 1, &n) != CKR_OK ||
        t->fl->C_FindObjectsFinal(t->session[0]) != CKR_OK || n != 1) {
        fprintf(stderr, "mtlsks-bench: no private key %s (or the login failed)\n", o->key);
        goto done;
    }
    /* A session object is visible to every session of the process; it
     * lives as long as the session that made it. */
    rv = t->fl->C_CopyObject(t->session[0], t->key, &session_obj, 1, &t->copy);
    if (rv != CKR_OK) {
        fprintf(stderr, "mtlsks-bench: C_CopyObject of %s failed: 0x%lx\n", o->key,
                (unsigned long)rv);
        goto done;
    }
    set_mechanism(t, o->alg);
    ok = 1;
done:
    p11_kit_uri_free(uri);
    memset(pin, 0, sizeof(pin));
    return ok;
}

/* The ceiling's paths: impl "raw" (the session copy) or "raw-token". */
int raw_path_setup(const bench_opts *o, const char *impl, bench_path *path)
{
    static raw_token t;
    static raw_arg copy_arg, token_arg;
    raw_arg *a = strcmp(impl, "raw-token") == 0 ? &token_arg : &copy_arg;

    if (t.fl == NULL && !open_token(o, &t))
        return 0;
    a->t = &t;
    a->key = a == &token_arg ? t.key : t.copy;
    if (!raw_op(a, 0)) {
        fprintf(stderr, "mtlsks-bench: raw C_SignInit/C_Sign failed (%s)\n", impl);
        return 0;
    }
    path->name = impl;
    path->op = raw_op;
    path->arg = a;
    /* Sessions and the module stay as they are until the process exits. */
    return 1;
}
