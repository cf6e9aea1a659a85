/*
 * The keystore API without the provider: hash in software, mks_key_sign.
 * The row between the ceiling (raw C_Sign) and the provider, so that a gap
 * can be placed on the keystore or on the provider; and the way TPM keys
 * are measured when the provider cannot load them. Also makes the TPM keys
 * the TPM rows use (mks_tpm_keygen: TSS2 PRIVATE KEY files).
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <mtlsks/keystore.h>

static const unsigned char message[128] = "mtlsks-bench message to sign";

typedef struct ks_arg {
    mks_key *key;
    EVP_MD *md;
    mks_mech_params mp;
} ks_arg;

static int ks_op(void *p, int thread)
{
    ks_arg *a = p;
    unsigned char hash[32], sig[1024];
    size_t siglen = sizeof(sig);

    /* PKCS#1 v1.5 too signs the hash: the keystore builds the DigestInfo. */
    if (!EVP_Digest(message, sizeof(message), hash, NULL, a->md, NULL))
        return 0;
    if (mks_key_sign(a->key, &a->mp, hash, sizeof(hash), sig, &siglen) != MKS_OK) {
        static int reported;
        if (!reported++)
            fprintf(stderr, "mtlsks-bench: mks_key_sign: %s\n", mks_last_error());
        return 0;
    }
    return 1;
}

/* The DER of the first PEM block labelled `label` in a file. */
static unsigned char *read_pem(const char *path, const char *label, long *len)
{
    FILE *f = fopen(path, "r");
    char *name = NULL, *header = NULL;
    unsigned char *data = NULL;

    if (f == NULL)
        return NULL;
    while (PEM_read(f, &name, &header, &data, len) == 1) {
        int match = strcmp(name, label) == 0;
        OPENSSL_free(name);
        OPENSSL_free(header);
        if (match)
            break;
        OPENSSL_free(data);
        data = NULL;
    }
    fclose(f);
    return data;
}

/* A TPM key's password from --pass-file. */
static int pass_from_file(char *buf, size_t size, size_t *len, const char *what, void *file)
{
    int n = bench_read_pass(file, buf, (int)size);

    (void)what;
    if (n <= 0)
        return 0;
    *len = (size_t)n;
    return 1;
}

static mks_rv open_key(mks_ctx *ctx, const char *spec, const char *pass_file, mks_key **key)
{
    mks_pin_ui ui = {pass_from_file, (void *)pass_file};
    const mks_pin_ui *pin = pass_file != NULL ? &ui : NULL;
    unsigned char *der;
    long len = 0;
    mks_rv rv;

    if (strncmp(spec, "pkcs11:", 7) == 0)
        return mks_key_open(ctx, spec, NULL, key);
    if (strncmp(spec, MKS_TPM_URI_SCHEME, strlen(MKS_TPM_URI_SCHEME)) == 0)
        return mks_tpm_key_open_uri(ctx, spec, pin, key);
    der = read_pem(spec, MKS_TSS2_PEM_LABEL, &len);
    if (der == NULL) {
        fprintf(stderr, "mtlsks-bench: no %s in %s\n", MKS_TSS2_PEM_LABEL, spec);
        return MKS_ERR_IO;
    }
    rv = mks_tpm_key_open_der(ctx, der, (size_t)len, pin, key);
    OPENSSL_free(der);
    return rv;
}

static mks_rv new_ctx(const bench_opts *o, mks_ctx **ctx)
{
    char pin_source[4096];
    mks_config cfg = {.pkcs11_module = o->module, .tpm2_tcti = o->tcti};

    if (o->pin_file != NULL) {
        snprintf(pin_source, sizeof(pin_source), "file:%s", o->pin_file);
        cfg.pin_source = pin_source;
    }
    return mks_ctx_new(&cfg, ctx);
}

static ks_arg ks;
static mks_ctx *ks_ctx;

int keystore_path_setup(const bench_opts *o, bench_path *path)
{
    mks_rv rv;

    if (o->key == NULL) {
        fprintf(stderr, "mtlsks-bench: keystore needs --key (pkcs11: URI or TSS2 key file)\n");
        return 0;
    }
    rv = new_ctx(o, &ks_ctx);
    if (rv == MKS_OK)
        rv = open_key(ks_ctx, o->key, o->pass_file, &ks.key);
    if (rv != MKS_OK) {
        fprintf(stderr, "mtlsks-bench: keystore: %s\n", mks_last_error());
        return 0;
    }
    ks.md = EVP_MD_fetch(NULL, "SHA256", "provider=default");
    ks.mp.mech = o->alg == BENCH_EC          ? MKS_MECH_ECDSA
                 : o->alg == BENCH_RSA_PKCS1 ? MKS_MECH_RSA_PKCS1
                                             : MKS_MECH_RSA_PSS;
    ks.mp.hash = ks.mp.mgf1_hash = MKS_HASH_SHA256;
    ks.mp.salt_len = 32;
    if (ks.md == NULL || !ks_op(&ks, 0))
        return 0;
    path->name = "keystore";
    path->op = ks_op;
    path->arg = &ks;
    return 1;
}

void keystore_path_free(void)
{
    /* A TPM key left loaded would hold one of the TPM's transient slots. */
    mks_key_free(ks.key);
    mks_ctx_free(ks_ctx);
    EVP_MD_free(ks.md);
    ks.key = NULL;
    ks_ctx = NULL;
    ks.md = NULL;
}

int cmd_tpm_keygen(const bench_opts *o)
{
    mks_tpm_keygen_params p;
    mks_ctx *ctx = NULL;
    mks_key *key = NULL;
    char *pem = NULL, pass[128];
    size_t len = 0;
    FILE *f;
    mks_rv rv;
    int ok, n = 0;

    if (o->out == NULL || o->tcti == NULL) {
        fprintf(stderr, "mtlsks-bench: tpm-keygen needs --tcti and --out\n");
        return 0;
    }
    memset(&p, 0, sizeof(p));
    p.key.type = o->alg == BENCH_EC ? MKS_KEY_EC : MKS_KEY_RSA;
    p.key.bits = 2048;
    p.key.curve = "P-256";
    if (o->pass_file != NULL && (n = bench_read_pass(o->pass_file, pass, sizeof(pass))) < 0)
        return 0;
    p.auth = n > 0 ? pass : NULL;
    p.auth_len = (size_t)n;
    rv = new_ctx(o, &ctx);
    if (rv == MKS_OK)
        rv = mks_tpm_keygen(ctx, &p, &pem, &len, &key);
    if (rv != MKS_OK) {
        fprintf(stderr, "mtlsks-bench: tpm-keygen: %s\n", mks_last_error());
        return 0;
    }
    umask(077);
    f = fopen(o->out, "w");
    ok = f != NULL && fwrite(pem, 1, len, f) == len;
    if (f != NULL && fclose(f) != 0)
        ok = 0;
    if (!ok)
        fprintf(stderr, "mtlsks-bench: cannot write %s\n", o->out);
    free(pem);
    mks_key_free(key);
    mks_ctx_free(ctx);
    OPENSSL_cleanse(pass, sizeof(pass));
    return ok;
}
