#include "lifecycle.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "parse.h"

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n > m && strcmp(s + n - m, suffix) == 0;
}

cli_role cli_label_role(const char *label)
{
    if (label == NULL)
        return CLI_ROLE_CURRENT;
    if (has_suffix(label, CLI_SUFFIX_NEXT))
        return CLI_ROLE_PENDING;
    if (has_suffix(label, CLI_SUFFIX_OLD))
        return CLI_ROLE_RETIRED;
    if (has_suffix(label, CLI_SUFFIX_CHAIN))
        return CLI_ROLE_CHAIN;
    return CLI_ROLE_CURRENT;
}

const char *cli_role_name(cli_role role)
{
    switch (role) {
    case CLI_ROLE_PENDING:
        return "pending";
    case CLI_ROLE_RETIRED:
        return "retired";
    case CLI_ROLE_CHAIN:
        return "chain";
    case CLI_ROLE_CURRENT:
        break;
    }
    return "current";
}

char *cli_label_join(const char *name, const char *suffix)
{
    size_t n = strlen(name) + strlen(suffix) + 1;
    char *s = malloc(n);

    if (s != NULL)
        snprintf(s, n, "%s%s", name, suffix);
    return s;
}

char *cli_uri_object(const char *cmd, const char *token_uri, const char *label,
                     const unsigned char *id, size_t id_len, unsigned type)
{
    char *uri = NULL;
    mks_rv rv = mks_uri_object(token_uri, label, id, id_len, type, &uri);

    if (rv == MKS_OK)
        return uri;
    if (rv == MKS_ERR_NOMEM)
        cli_fail(cmd, "out of memory");
    else
        cli_fail_ks(cmd, rv, "cannot name the objects labelled '%s' in a pkcs11: URI",
                    label != NULL ? label : "");
    return NULL;
}

int cli_same_id(const mks_object *o, const unsigned char *id, size_t id_len)
{
    return o->id_len == id_len && (id_len == 0 || memcmp(o->id, id, id_len) == 0);
}

int cli_find_objects(cli_session *s, const char *token_uri, const char *label,
                     const unsigned char *id, size_t id_len, unsigned type, unsigned classes,
                     mks_object **out, size_t *n)
{
    char *uri = cli_uri_object(s->cmd, token_uri, label, id, id_len, type);
    mks_rv rv;

    *out = NULL;
    *n = 0;
    if (uri == NULL)
        return 0;
    rv = mks_objects_find(s->ks, uri, classes, &s->pin_ui, out, n);
    if (rv != MKS_OK) {
        cli_fail_ks(s->cmd, rv, "cannot search %s", uri);
        *out = NULL;
        *n = 0;
    }
    mks_free(uri);
    return rv == MKS_OK;
}

int cli_relabel(cli_session *s, const char *token_uri, const char *label, const unsigned char *id,
                size_t id_len, unsigned type, const char *new_label)
{
    char *uri = cli_uri_object(s->cmd, token_uri, label, id, id_len, type);
    mks_rv rv;

    if (uri == NULL)
        return 0;
    if (new_label != NULL)
        rv = mks_objects_set_label(s->ks, uri, MKS_OBJ_ANY, new_label, &s->pin_ui, NULL);
    else
        rv = mks_objects_destroy(s->ks, uri, MKS_OBJ_ANY, &s->pin_ui, NULL);
    if (rv != MKS_OK)
        cli_fail_ks(s->cmd, rv, "cannot %s %s (run import-cert again to continue)",
                    new_label != NULL ? "relabel" : "destroy", uri);
    mks_free(uri);
    return rv == MKS_OK;
}

/* 1 when objs[i] has an id other than the new key's, and is the first with it. */
static int first_old_id(const mks_object *objs, size_t i, const unsigned char *new_id,
                        size_t new_len)
{
    size_t j;

    if (objs[i].id_len == 0 || cli_same_id(&objs[i], new_id, new_len))
        return 0;
    for (j = 0; j < i; j++)
        if (cli_same_id(&objs[j], objs[i].id, objs[i].id_len))
            return 0;
    return 1;
}

int cli_handover(cli_session *s, const char *token_uri, const char *name, const unsigned char *id,
                 size_t id_len, cli_handover_files_fn *files, void *arg, size_t *nretired)
{
    char *next_label = cli_label_join(name, CLI_SUFFIX_NEXT);
    char *old_label = cli_label_join(name, CLI_SUFFIX_OLD);
    mks_object *objs = NULL;
    size_t n = 0, nold = 0, i;
    int ok = 0;

    *nretired = 0;
    if (next_label == NULL || old_label == NULL) {
        cli_fail(s->cmd, "out of memory");
        goto done;
    }
    if (!cli_relabel(s, token_uri, next_label, id, id_len, 0, name) || !files(arg))
        goto done;
    if (!cli_find_objects(s, token_uri, name, NULL, 0, 0, MKS_OBJ_ANY, &objs, &n))
        goto done;
    for (i = 0; i < n; i++)
        nold += first_old_id(objs, i, id, id_len);
    if (nold > 0 && !cli_relabel(s, token_uri, old_label, NULL, 0, 0, NULL))
        goto done;
    for (i = 0; i < n; i++)
        if (first_old_id(objs, i, id, id_len) &&
            !cli_relabel(s, token_uri, name, objs[i].id, objs[i].id_len, 0, old_label))
            goto done;
    *nretired = nold;
    ok = 1;
done:
    mks_objects_free(objs, n);
    free(next_label);
    free(old_label);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Certificates                                                              */

static int strlist_add(cli_strlist *l, const char *s)
{
    char **v = realloc(l->v, (l->n + 1) * sizeof(*v));

    if (v == NULL)
        return 0;
    l->v = v;
    if ((v[l->n] = strdup(s)) == NULL)
        return 0;
    l->n++;
    return 1;
}

static void strlist_clear(cli_strlist *l)
{
    size_t i;

    for (i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static char *name_string(const X509_NAME *name)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *s = NULL;
    long n;

    if (bio == NULL)
        return NULL;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        n = BIO_get_mem_data(bio, &data);
        s = strndup(data, (size_t)n);
    }
    BIO_free(bio);
    return s;
}

static int time_iso(const ASN1_TIME *t, char buf[24], time_t *out)
{
    struct tm tm;

    if (!ASN1_TIME_to_tm(t, &tm))
        return 0;
    strftime(buf, 24, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (out != NULL)
        *out = timegm(&tm);
    return 1;
}

static int san_string(const GENERAL_NAME *gn, char *buf, size_t size)
{
    const unsigned char *p;
    int len;
    char ip[INET6_ADDRSTRLEN];

    switch (gn->type) {
    case GEN_DNS:
    case GEN_URI:
    case GEN_EMAIL:
        p = ASN1_STRING_get0_data(gn->d.ia5);
        len = ASN1_STRING_length(gn->d.ia5);
        snprintf(buf, size, "%s:%.*s",
                 gn->type == GEN_DNS   ? "DNS"
                 : gn->type == GEN_URI ? "URI"
                                       : "email",
                 len, (const char *)p);
        return 1;
    case GEN_IPADD:
        p = ASN1_STRING_get0_data(gn->d.ip);
        len = ASN1_STRING_length(gn->d.ip);
        if ((len == 4 && inet_ntop(AF_INET, p, ip, sizeof(ip)) != NULL) ||
            (len == 16 && inet_ntop(AF_INET6, p, ip, sizeof(ip)) != NULL)) {
            snprintf(buf, size, "IP:%s", ip);
            return 1;
        }
        snprintf(buf, size, "IP:?");
        return 1;
    case GEN_DIRNAME: {
        char *dn = name_string(gn->d.dirn);

        snprintf(buf, size, "dirName:%s", dn != NULL ? dn : "?");
        free(dn);
        return 1;
    }
    default:
        snprintf(buf, size, "other:%d", gn->type);
        return 1;
    }
}

static const char *const ku_names[] = {
    "digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment", "keyAgreement",
    "keyCertSign",      "cRLSign",        "encipherOnly",    "decipherOnly",
};

static int cert_extensions(X509 *x, cli_cert_info *ci)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(x, NID_key_usage, NULL, NULL);
    char buf[512];
    int i, ok = 1;

    for (i = 0; ok && sans != NULL && i < sk_GENERAL_NAME_num(sans); i++)
        ok = san_string(sk_GENERAL_NAME_value(sans, i), buf, sizeof(buf)) &&
             strlist_add(&ci->sans, buf);
    for (i = 0; ok && ku != NULL && i < (int)(sizeof(ku_names) / sizeof(ku_names[0])); i++)
        if (ASN1_BIT_STRING_get_bit(ku, i))
            ok = strlist_add(&ci->key_usage, ku_names[i]);
    for (i = 0; ok && eku != NULL && i < sk_ASN1_OBJECT_num(eku); i++) {
        const ASN1_OBJECT *o = sk_ASN1_OBJECT_value(eku, i);
        int nid = OBJ_obj2nid(o);

        if (nid != NID_undef)
            snprintf(buf, sizeof(buf), "%s", OBJ_nid2sn(nid));
        else
            OBJ_obj2txt(buf, sizeof(buf), o, 1);
        ok = strlist_add(&ci->ext_key_usage, buf);
    }
    GENERAL_NAMES_free(sans);
    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
    ASN1_BIT_STRING_free(ku);
    return ok;
}

static void cert_key(X509 *x, cli_cert_info *ci)
{
    EVP_PKEY *pk = X509_get0_pubkey(x);
    char group[64];

    if (pk == NULL)
        return;
    ci->key_bits = EVP_PKEY_get_bits(pk);
    if (EVP_PKEY_is_a(pk, "RSA")) {
        snprintf(ci->key_type, sizeof(ci->key_type), "rsa");
    } else if (EVP_PKEY_is_a(pk, "EC")) {
        snprintf(ci->key_type, sizeof(ci->key_type), "ec");
        if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                           NULL)) {
            const char *nist = EC_curve_nid2nist(OBJ_sn2nid(group));

            snprintf(ci->curve, sizeof(ci->curve), "%.15s", nist != NULL ? nist : group);
        }
    }
    ERR_clear_error();
}

int cli_cert_info_get(const unsigned char *der, size_t len, time_t now, cli_cert_info *ci,
                      cli_err *err)
{
    const unsigned char *p = der;
    X509 *x = NULL;
    BIGNUM *bn = NULL;
    unsigned char md[32];
    unsigned int mdlen = 0;
    time_t not_after = 0;
    char *hex;
    int ok = 0;
    size_t i;

    memset(ci, 0, sizeof(*ci));
    if (der == NULL || (x = d2i_X509(NULL, &p, (long)len)) == NULL) {
        cli_err_set(err, "not an X.509 certificate");
        goto done;
    }
    ci->subject = name_string(X509_get_subject_name(x));
    ci->issuer = name_string(X509_get_issuer_name(x));
    bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    hex = bn != NULL ? BN_bn2hex(bn) : NULL;
    if (hex != NULL) {
        ci->serial = strdup(hex);
        OPENSSL_free(hex);
        for (i = 0; ci->serial != NULL && ci->serial[i] != '\0'; i++)
            ci->serial[i] =
                (char)(ci->serial[i] >= 'A' && ci->serial[i] <= 'F' ? ci->serial[i] - 'A' + 'a'
                                                                    : ci->serial[i]);
    }
    if (ci->subject == NULL || ci->issuer == NULL || ci->serial == NULL) {
        cli_err_set(err, "cannot read the certificate's names (out of memory?)");
        goto done;
    }
    if (!time_iso(X509_get0_notBefore(x), ci->not_before, NULL) ||
        !time_iso(X509_get0_notAfter(x), ci->not_after, &not_after)) {
        cli_err_set(err, "the certificate's validity is malformed");
        goto done;
    }
    ci->seconds_left = (long long)not_after - (long long)now;
    /*
     * Rounded up: a day that has begun counts, so 2 days less 1 s is 2 days,
     * 1 s is 1 day, and a certificate is due within N days exactly when
     * days_left <= N. Expired: 0 for the first day, then -1, -2...
     */
    ci->days_left =
        ci->seconds_left > 0 ? (ci->seconds_left + 86399) / 86400 : -(-ci->seconds_left / 86400);
    if (!cert_extensions(x, ci)) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    ci->is_ca = X509_check_ca(x) != 0;
    cert_key(x, ci);
    if (!EVP_Digest(der, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != sizeof(md)) {
        cli_err_set_ossl(err, "cannot hash the certificate");
        goto done;
    }
    for (i = 0; i < sizeof(md); i++)
        snprintf(ci->sha256 + 2 * i, 3, "%02x", md[i]);
    ok = 1;
done:
    BN_free(bn);
    X509_free(x);
    ERR_clear_error();
    if (!ok)
        cli_cert_info_clear(ci);
    return ok;
}

const char *cli_days_word(long long days)
{
    return days == 1 || days == -1 ? "day" : "days";
}

void cli_cert_info_clear(cli_cert_info *ci)
{
    free(ci->subject);
    free(ci->issuer);
    free(ci->serial);
    strlist_clear(&ci->sans);
    strlist_clear(&ci->key_usage);
    strlist_clear(&ci->ext_key_usage);
    memset(ci, 0, sizeof(*ci));
}

static void json_strlist(cli_json *j, const char *key, const cli_strlist *l)
{
    size_t i;

    cli_json_arr_begin(j, key);
    for (i = 0; i < l->n; i++)
        cli_json_string(j, NULL, l->v[i]);
    cli_json_arr_end(j);
}

void cli_cert_info_json(cli_json *j, const cli_cert_info *ci)
{
    cli_json_string(j, "subject", ci->subject);
    cli_json_string(j, "issuer", ci->issuer);
    cli_json_string(j, "serial", ci->serial);
    cli_json_string(j, "not_before", ci->not_before);
    cli_json_string(j, "not_after", ci->not_after);
    cli_json_int(j, "days_left", ci->days_left);
    cli_json_int(j, "seconds_left", ci->seconds_left);
    json_strlist(j, "sans", &ci->sans);
    json_strlist(j, "key_usage", &ci->key_usage);
    json_strlist(j, "extended_key_usage", &ci->ext_key_usage);
    cli_json_bool(j, "ca", ci->is_ca);
    cli_json_key_type(j, ci->key_type[0] != '\0' ? ci->key_type : NULL, ci->curve, ci->key_bits);
    cli_json_string(j, "sha256", ci->sha256);
}

int cli_read_certs(const char *path, STACK_OF(X509) * *out, cli_err *err)
{
    unsigned char *data = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    STACK_OF(X509) *sk = NULL;
    X509 *x;
    int ok = 0;

    *out = NULL;
    if (!cli_read_file(path, 1 << 20, &data, &len, err))
        return 0;
    sk = sk_X509_new_null();
    bio = BIO_new_mem_buf(data, (int)len);
    if (sk == NULL || bio == NULL) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            cli_err_set(err, "out of memory");
            goto done;
        }
    }
    ERR_clear_error();
    if (sk_X509_num(sk) == 0) {
        const unsigned char *p = data;

        x = d2i_X509(NULL, &p, (long)len);
        ERR_clear_error();
        if (x == NULL || !sk_X509_push(sk, x)) {
            X509_free(x);
            cli_err_set(err, "%s holds no X.509 certificate (PEM or DER)", path);
            goto done;
        }
    }
    *out = sk;
    sk = NULL;
    ok = 1;
done:
    sk_X509_pop_free(sk, X509_free);
    BIO_free(bio);
    free(data);
    return ok;
}

int cli_write_certs(const char *cmd, const char *path, X509 *x, STACK_OF(X509) * chain)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    long len;
    int k, ok;

    ok = bio != NULL && PEM_write_bio_X509(bio, x);
    for (k = 0; ok && k < sk_X509_num(chain); k++)
        ok = PEM_write_bio_X509(bio, sk_X509_value(chain, k));
    if (!ok) {
        cli_fail_ossl(cmd, "cannot write the certificate as PEM");
    } else {
        len = BIO_get_mem_data(bio, &data);
        ok = cli_write_replacing(cmd, path, data, (size_t)len, 0644);
    }
    BIO_free(bio);
    return ok;
}

int cli_x509_der(X509 *x, unsigned char **der, size_t *len)
{
    int n;

    *der = NULL;
    *len = 0;
    n = i2d_X509(x, der);
    if (n <= 0) {
        *der = NULL;
        return 0;
    }
    *len = (size_t)n;
    return 1;
}

int cli_same_public_key(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
    const unsigned char *pa = a, *pb = b;
    EVP_PKEY *ka, *kb;
    int same;

    if (a == NULL || b == NULL)
        return 0;
    if (alen == blen && memcmp(a, b, alen) == 0)
        return 1;
    ka = d2i_PUBKEY(NULL, &pa, (long)alen);
    kb = d2i_PUBKEY(NULL, &pb, (long)blen);
    same = ka != NULL && kb != NULL && EVP_PKEY_eq(ka, kb) == 1;
    EVP_PKEY_free(ka);
    EVP_PKEY_free(kb);
    ERR_clear_error();
    return same;
}

int cli_cert_certifies(X509 *x, const unsigned char *spki, size_t len)
{
    unsigned char *der = NULL;
    int n = x != NULL ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der) : 0;
    int same = n > 0 && cli_same_public_key(der, (size_t)n, spki, len);

    OPENSSL_free(der);
    return same;
}

const char *cli_key_desc(const mks_object *o, char *buf, size_t size)
{
    const char *t = o->key_type == MKS_KEY_RSA ? "rsa" : o->key_type == MKS_KEY_EC ? "ec" : "?";

    if (o->curve[0] != '\0')
        snprintf(buf, size, "%s %s", t, o->curve);
    else if (o->bits > 0)
        snprintf(buf, size, "%s %d", t, o->bits);
    else
        snprintf(buf, size, "%s", t);
    return buf;
}
