#include "csr.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

int cli_csr_args_add_san(cli_csr_args *a, const char *san)
{
    const char **n = realloc(a->sans, (a->nsans + 1) * sizeof(*a->sans));

    if (n == NULL)
        return 0;
    a->sans = n;
    a->sans[a->nsans++] = san;
    return 1;
}

void cli_csr_args_clear(cli_csr_args *a)
{
    free(a->sans);
    memset(a, 0, sizeof(*a));
}

int cli_csr_req_from_args(const cli_csr_args *a, cli_csr_req *req, cli_err *err)
{
    cli_err sub;
    size_t i;

    memset(req, 0, sizeof(*req));
    req->usage = CLI_USAGE_BOTH;
    if (a->subject == NULL) {
        cli_err_set(err, "--subject is required (e.g. --subject \"CN=web.example,O=Example\")");
        return 0;
    }
    if (!cli_parse_subject(a->subject, &req->subject, &sub)) {
        cli_err_set(err, "--subject: %s", sub.msg);
        goto fail;
    }
    if (a->usage != NULL && !cli_parse_usage(a->usage, &req->usage, &sub)) {
        cli_err_set(err, "--usage: %s", sub.msg);
        goto fail;
    }
    for (i = 0; i < a->nsans; i++) {
        GENERAL_NAME *gn = NULL;

        if (!cli_parse_san(a->sans[i], &gn, &sub)) {
            cli_err_set(err, "--san: %s", sub.msg);
            goto fail;
        }
        if (req->sans == NULL)
            req->sans = sk_GENERAL_NAME_new_null();
        if (req->sans == NULL || !sk_GENERAL_NAME_push(req->sans, gn)) {
            GENERAL_NAME_free(gn);
            cli_err_set(err, "out of memory");
            goto fail;
        }
    }
    return 1;
fail:
    cli_csr_req_clear(req);
    return 0;
}

void cli_csr_req_clear(cli_csr_req *req)
{
    X509_NAME_free(req->subject);
    sk_GENERAL_NAME_pop_free(req->sans, GENERAL_NAME_free);
    memset(req, 0, sizeof(*req));
}

const char *cli_csr_digest(mks_key_type type, const char *curve)
{
    if (type == MKS_KEY_EC && curve != NULL) {
        if (strcmp(curve, "P-384") == 0)
            return "SHA384";
        if (strcmp(curve, "P-521") == 0)
            return "SHA512";
    }
    return "SHA256";
}

static int add_extensions(X509_REQ *x, const cli_csr_req *req, int is_rsa, cli_err *err)
{
    STACK_OF(X509_EXTENSION) *exts = NULL;
    ASN1_BIT_STRING *ku = NULL;
    EXTENDED_KEY_USAGE *eku = NULL;
    BASIC_CONSTRAINTS *bc = NULL;
    int ok = 0;

    if (req->sans != NULL && sk_GENERAL_NAME_num(req->sans) > 0 &&
        X509V3_add1_i2d(&exts, NID_subject_alt_name, req->sans, 0, X509V3_ADD_DEFAULT) != 1) {
        cli_err_set_ossl(err, "cannot encode subjectAltName");
        goto done;
    }

    /* TLS 1.2 RSA key exchange decrypts with a server's key: keyEncipherment. */
    ku = ASN1_BIT_STRING_new();
    if (ku == NULL || !ASN1_BIT_STRING_set_bit(ku, 0, 1) ||
        (is_rsa && (req->usage & CLI_USAGE_SERVER) && !ASN1_BIT_STRING_set_bit(ku, 2, 1)) ||
        X509V3_add1_i2d(&exts, NID_key_usage, ku, 1, X509V3_ADD_DEFAULT) != 1) {
        cli_err_set_ossl(err, "cannot encode keyUsage");
        goto done;
    }

    eku = sk_ASN1_OBJECT_new_null();
    if (eku == NULL ||
        ((req->usage & CLI_USAGE_SERVER) &&
         !sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth))) ||
        ((req->usage & CLI_USAGE_CLIENT) &&
         !sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth))) ||
        X509V3_add1_i2d(&exts, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT) != 1) {
        cli_err_set_ossl(err, "cannot encode extendedKeyUsage");
        goto done;
    }

    bc = BASIC_CONSTRAINTS_new();
    if (bc == NULL ||
        X509V3_add1_i2d(&exts, NID_basic_constraints, bc, 0, X509V3_ADD_DEFAULT) != 1) {
        cli_err_set_ossl(err, "cannot encode basicConstraints");
        goto done;
    }

    if (!X509_REQ_add_extensions(x, exts)) {
        cli_err_set_ossl(err, "cannot add the requested extensions");
        goto done;
    }
    ok = 1;
done:
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    ASN1_BIT_STRING_free(ku);
    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
    BASIC_CONSTRAINTS_free(bc);
    return ok;
}

int cli_csr_make(OSSL_LIB_CTX *libctx, const cli_csr_req *req, const unsigned char *spki,
                 size_t spki_len, EVP_PKEY *signer, const char *digest, char **pem, size_t *pem_len,
                 cli_err *err)
{
    /* The software copy of the public key comes from the default provider. */
    static const char *const soft = "?provider=default";
    const unsigned char *p = spki;
    unsigned char *reenc = NULL;
    EVP_PKEY *pub = NULL;
    X509_REQ *x = NULL;
    EVP_MD_CTX *mdctx = NULL;
    BIO *bio = NULL;
    char *data;
    long n;
    int reenc_len, ok = 0;

    *pem = NULL;
    *pem_len = 0;
    pub = d2i_PUBKEY_ex(NULL, &p, (long)spki_len, libctx, soft);
    if (pub == NULL || p != spki + spki_len) {
        cli_err_set_ossl(err, "the key's public half (SubjectPublicKeyInfo) cannot be decoded");
        goto done;
    }

    x = X509_REQ_new_ex(libctx, NULL);
    if (x == NULL || !X509_REQ_set_version(x, 0L) || !X509_REQ_set_subject_name(x, req->subject) ||
        !X509_REQ_set_pubkey(x, pub)) {
        cli_err_set_ossl(err, "cannot build the request");
        goto done;
    }
    /* The request must carry the key exactly as the token reports it (named curve). */
    reenc_len = i2d_X509_PUBKEY(X509_REQ_get_X509_PUBKEY(x), &reenc);
    if (reenc_len < 0 || (size_t)reenc_len != spki_len || memcmp(reenc, spki, spki_len) != 0) {
        cli_err_set(err, "the public key changed when put into the request; refusing");
        goto done;
    }
    if (!add_extensions(x, req, EVP_PKEY_is_a(pub, "RSA"), err))
        goto done;

    mdctx = EVP_MD_CTX_new();
    if (mdctx == NULL ||
        EVP_DigestSignInit_ex(mdctx, NULL, digest, libctx, NULL, signer, NULL) != 1) {
        cli_err_set_ossl(err, "cannot start signing with the key (%s)", digest);
        goto done;
    }
    if (X509_REQ_sign_ctx(x, mdctx) <= 0) {
        cli_err_set_ossl(err, "signing the request with the key failed");
        goto done;
    }
    if (X509_REQ_verify_ex(x, pub, libctx, soft) <= 0) {
        cli_err_set_ossl(err, "the signed request does not verify with the key's public half");
        goto done;
    }

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || !PEM_write_bio_X509_REQ(bio, x)) {
        cli_err_set_ossl(err, "cannot write the request as PEM");
        goto done;
    }
    n = BIO_get_mem_data(bio, &data);
    *pem = malloc((size_t)n + 1);
    if (*pem == NULL) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    memcpy(*pem, data, (size_t)n);
    (*pem)[n] = '\0';
    *pem_len = (size_t)n;
    ok = 1;
done:
    BIO_free(bio);
    EVP_MD_CTX_free(mdctx);
    X509_REQ_free(x);
    OPENSSL_free(reenc);
    EVP_PKEY_free(pub);
    return ok;
}
