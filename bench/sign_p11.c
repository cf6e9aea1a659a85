/*
 * The ceiling: what the token itself does per second. The module is loaded
 * with dlopen, each thread has its own session, and the loop is
 * C_SignInit + C_Sign on the same key and the same input, no hashing, no
 * pool, no locks of ours. Row 2 (the provider) can only approach this.
 */
#include "bench.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

typedef struct raw_arg {
    CK_FUNCTION_LIST *fl;
    CK_OBJECT_HANDLE key;
    CK_MECHANISM mech;
    CK_RSA_PKCS_PSS_PARAMS pss;
    unsigned char in[64];
    CK_ULONG inlen;
    CK_SESSION_HANDLE session[BENCH_MAX_THREADS];
} raw_arg;

/* DigestInfo prefix of SHA-256 (RFC 8017, 9.2 note 1): CKM_RSA_PKCS signs
 * DigestInfo || hash. */
static const unsigned char sha256_prefix[19] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                                0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                                0x01, 0x05, 0x00, 0x04, 0x20};

static int raw_op(void *p, int thread)
{
    raw_arg *a = p;
    unsigned char sig[512];
    CK_ULONG siglen = sizeof(sig);

    if (a->fl->C_SignInit(a->session[thread], &a->mech, a->key) != CKR_OK)
        return 0;
    return a->fl->C_Sign(a->session[thread], a->in, a->inlen, sig, &siglen) == CKR_OK;
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

int raw_path_setup(const bench_opts *o, bench_path *path)
{
    static raw_arg a;
    CK_C_GetFunctionList get_list;
    CK_C_INITIALIZE_ARGS init = {.flags = CKF_OS_LOCKING_OK};
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE cls_attr = {CKA_CLASS, &cls, sizeof(cls)}, *tmpl;
    P11KitUri *uri = p11_kit_uri_new();
    CK_SLOT_ID slot;
    CK_ULONG n = 0, nattrs = 0;
    CK_RV rv;
    char pin[256];
    void *dl;
    int i;

    if (o->module == NULL || o->key == NULL || !bench_read_pin(o->pin_file, pin, sizeof(pin)) ||
        uri == NULL || p11_kit_uri_parse(o->key, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, uri) != 0 ||
        p11_kit_uri_set_attribute(uri, &cls_attr) != 0) {
        fprintf(stderr, "mtlsks-bench: raw needs --module, --key pkcs11:URI, --pin-file\n");
        return 0;
    }
    tmpl = p11_kit_uri_get_attributes(uri, &nattrs);
    dl = dlopen(o->module, RTLD_NOW | RTLD_LOCAL);
    get_list = dl != NULL ? (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList") : NULL;
    /* Already initialised when another path in this process (the provider,
     * the engine) loaded the same module first. */
    if (get_list == NULL || get_list(&a.fl) != CKR_OK ||
        ((rv = a.fl->C_Initialize(&init)) != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) ||
        !find_slot(a.fl, uri, &slot)) {
        fprintf(stderr, "mtlsks-bench: no token matching %s in %s\n", o->key, o->module);
        return 0;
    }
    for (i = 0; i < o->threads; i++)
        if (a.fl->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &a.session[i]) != CKR_OK)
            return 0;
    rv = a.fl->C_Login(a.session[0], CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
    if ((rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) ||
        a.fl->C_FindObjectsInit(a.session[0], tmpl, nattrs) != CKR_OK ||
        a.fl->C_FindObjects(a.session[0], &a.key, 1, &n) != CKR_OK ||
        a.fl->C_FindObjectsFinal(a.session[0]) != CKR_OK || n != 1) {
        fprintf(stderr, "mtlsks-bench: no private key %s (or the login failed)\n", o->key);
        return 0;
    }
    p11_kit_uri_free(uri);
    memset(pin, 0, sizeof(pin));
    memset(a.in, 0x5a, sizeof(a.in));
    a.inlen = 32; /* a SHA-256 hash */
    switch (o->alg) {
    case BENCH_EC:
        a.mech.mechanism = CKM_ECDSA;
        break;
    case BENCH_RSA_PKCS1:
        a.mech.mechanism = CKM_RSA_PKCS;
        memcpy(a.in, sha256_prefix, sizeof(sha256_prefix));
        a.inlen = sizeof(sha256_prefix) + 32;
        break;
    case BENCH_RSA_PSS:
        a.pss.hashAlg = CKM_SHA256;
        a.pss.mgf = CKG_MGF1_SHA256;
        a.pss.sLen = 32;
        a.mech.mechanism = CKM_RSA_PKCS_PSS;
        a.mech.pParameter = &a.pss;
        a.mech.ulParameterLen = sizeof(a.pss);
        break;
    }
    if (!raw_op(&a, 0)) {
        fprintf(stderr, "mtlsks-bench: raw C_SignInit/C_Sign failed\n");
        return 0;
    }
    path->name = "raw";
    path->op = raw_op;
    path->arg = &a;
    /* Sessions and the module stay as they are until the process exits. */
    return 1;
}
