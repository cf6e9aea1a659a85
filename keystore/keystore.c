/*
 * The backend-neutral front of the keystore: error reporting, PIN sources and
 * small helpers every backend uses.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>

#define MKS_ERRBUF 1024

static _Thread_local char last_error[MKS_ERRBUF];

const char *mks_rv_name(mks_rv rv)
{
    switch (rv) {
    case MKS_OK:
        return "MKS_OK";
    case MKS_ERR_GENERAL:
        return "MKS_ERR_GENERAL";
    case MKS_ERR_NOMEM:
        return "MKS_ERR_NOMEM";
    case MKS_ERR_ARG:
        return "MKS_ERR_ARG";
    case MKS_ERR_NOT_FOUND:
        return "MKS_ERR_NOT_FOUND";
    case MKS_ERR_AMBIGUOUS:
        return "MKS_ERR_AMBIGUOUS";
    case MKS_ERR_EXISTS:
        return "MKS_ERR_EXISTS";
    case MKS_ERR_MISMATCH:
        return "MKS_ERR_MISMATCH";
    case MKS_ERR_PIN_REQUIRED:
        return "MKS_ERR_PIN_REQUIRED";
    case MKS_ERR_PIN_INCORRECT:
        return "MKS_ERR_PIN_INCORRECT";
    case MKS_ERR_PIN_LOCKED:
        return "MKS_ERR_PIN_LOCKED";
    case MKS_ERR_TOKEN:
        return "MKS_ERR_TOKEN";
    case MKS_ERR_TOKEN_ABSENT:
        return "MKS_ERR_TOKEN_ABSENT";
    case MKS_ERR_NO_SPACE:
        return "MKS_ERR_NO_SPACE";
    case MKS_ERR_UNSUPPORTED:
        return "MKS_ERR_UNSUPPORTED";
    case MKS_ERR_IO:
        return "MKS_ERR_IO";
    }
    return "MKS_ERR_?";
}

const char *mks_last_error(void)
{
    return last_error;
}

void mks_error_clear(void)
{
    last_error[0] = '\0';
}

mks_rv mks_error(mks_rv rv, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
    return rv;
}

void mks_error_prefix(const char *fmt, ...)
{
    char prefix[MKS_ERRBUF];
    char old[MKS_ERRBUF];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof(old));
    if (snprintf(last_error, sizeof(last_error), "%s: %s", prefix, old) >= MKS_ERRBUF)
        memcpy(last_error + MKS_ERRBUF - 4, "...", 4); /* truncated: say so */
}

void mks_copy_padded(char *dst, size_t dstsize, const unsigned char *src, size_t srclen)
{
    size_t n = srclen;

    while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '\0'))
        n--;
    if (n >= dstsize)
        n = dstsize - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void mks_cleanse(void *p, size_t len)
{
    if (p != NULL && len > 0)
        OPENSSL_cleanse(p, len);
}

/*
 * The PIN is still used (refusing would stop a running service at its next
 * restart), but whoever reads the file has it: say so, and the fix.
 */
static void warn_pin_file_mode(int fd, const char *path)
{
    struct stat st;

    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & (S_IRWXG | S_IRWXO)) == 0)
        return;
    fprintf(stderr,
            "mtlsks: warning: PIN file '%s' is open to group or others (mode %04o): "
            "whoever can read it has the PIN; restrict it with chmod 600 '%s'\n",
            path, (unsigned)(st.st_mode & 07777), path);
}

mks_rv mks_pin_from_source(const char *source, char *buf, size_t bufsize, size_t *len)
{
    mks_rv rv = MKS_ERR_IO;
    const char *path = source;
    size_t n = 0;
    int fd = -1;

    if (source == NULL || buf == NULL || bufsize < 2)
        return mks_error(MKS_ERR_ARG, "no PIN source given");
    if (strncmp(source, "file:", 5) == 0)
        path = source + 5;
    else if (strchr(source, ':') != NULL && source[0] != '/' && source[0] != '.')
        return mks_error(MKS_ERR_ARG, "unsupported PIN source '%s' (expected file:PATH)", source);
    if (*path == '\0')
        return mks_error(MKS_ERR_ARG, "empty path in PIN source '%s'", source);

    /* read(2) straight into buf: stdio would leave a copy in its own buffer. */
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rv = mks_error(MKS_ERR_IO, "cannot read PIN file '%s': %s", path, strerror(errno));
        goto done;
    }
    warn_pin_file_mode(fd, path);
    while (n < bufsize - 1) {
        ssize_t r = read(fd, buf + n, bufsize - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rv = mks_error(MKS_ERR_IO, "cannot read PIN file '%s': %s", path, strerror(errno));
            goto done;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    n = strcspn(buf, "\r\n");
    mks_cleanse(buf + n, bufsize - n); /* anything after the first line */
    if (n == 0) {
        rv = mks_error(MKS_ERR_IO, "PIN file '%s' is empty", path);
        goto done;
    }
    *len = n;
    rv = MKS_OK;
done:
    if (fd >= 0)
        close(fd);
    if (rv != MKS_OK)
        mks_cleanse(buf, bufsize);
    return rv;
}

/* ---- keys: the backend-neutral part ---------------------------------------- */

mks_key *mks_key_alloc(mks_ctx *ctx, const mks_key_ops *ops)
{
    mks_key *key = calloc(1, sizeof(*key));

    if (key == NULL)
        return NULL;
    atomic_init(&key->refs, 1);
    key->ctx = ctx;
    key->ops = ops;
    mks_ctx_up_ref(ctx);
    return key;
}

mks_rv mks_key_up_ref(mks_key *key)
{
    atomic_fetch_add(&key->refs, 1);
    return MKS_OK;
}

void mks_key_free(mks_key *key)
{
    mks_ctx *ctx;

    if (key == NULL || atomic_fetch_sub(&key->refs, 1) != 1)
        return;
    ctx = key->ctx;
    if (key->ops != NULL && key->ops->free_be != NULL)
        key->ops->free_be(key);
    OPENSSL_free(key->spki);
    free(key->label);
    free(key->id);
    free(key->uri);
    free(key);
    mks_ctx_free(ctx);
}

mks_backend mks_key_backend(const mks_key *key)
{
    return key->ops->kind;
}

int mks_key_is_private(const mks_key *key)
{
    return key->is_private;
}

mks_key_type mks_key_get_type(const mks_key *key)
{
    return key->type;
}

int mks_key_get_bits(const mks_key *key)
{
    return key->bits;
}

const char *mks_key_get0_curve(const mks_key *key)
{
    return key->type == MKS_KEY_EC ? key->curve : NULL;
}

const unsigned char *mks_key_get0_spki(const mks_key *key, size_t *len)
{
    *len = key->spki_len;
    return key->spki;
}

const char *mks_key_get0_uri(const mks_key *key)
{
    return key->uri;
}

const char *mks_key_get0_label(const mks_key *key)
{
    return key->label;
}

const unsigned char *mks_key_get0_id(const mks_key *key, size_t *len)
{
    *len = key->id_len;
    return key->id;
}

const char *mks_key_get0_token_label(const mks_key *key)
{
    return key->token_label;
}

int mks_key_can_decrypt(const mks_key *key)
{
    return key->can_decrypt;
}

mks_rv mks_key_sign(mks_key *key, const mks_mech_params *p, const unsigned char *in, size_t inlen,
                    unsigned char *sig, size_t *siglen)
{
    return key->ops->sign(key, p, in, inlen, sig, siglen);
}

mks_rv mks_key_decrypt(mks_key *key, const mks_mech_params *p, const unsigned char *in,
                       size_t inlen, unsigned char *out, size_t *outlen)
{
    return key->ops->decrypt(key, p, in, inlen, out, outlen);
}

mks_rv mks_key_destroy(mks_key *key)
{
    if (key->ops->destroy == NULL)
        return mks_error(MKS_ERR_UNSUPPORTED, "keys of the %s backend cannot be destroyed here",
                         key->ops->backend);
    return key->ops->destroy(key);
}

mks_rv mks_cert_import(mks_key *key, const char *label, const unsigned char *der, size_t der_len)
{
    if (key->ops->cert_import == NULL)
        return mks_error(MKS_ERR_UNSUPPORTED, "keys of the %s backend keep no certificates",
                         key->ops->backend);
    return key->ops->cert_import(key, label, der, der_len);
}

/* ---- objects: what mks_objects_find hands out ----------------------------- */

void mks_object_clear(mks_object *obj)
{
    if (obj == NULL)
        return;
    free(obj->label);
    free(obj->id);
    free(obj->uri);
    free(obj->der);
    memset(obj, 0, sizeof(*obj));
}

void mks_objects_free(mks_object *objs, size_t count)
{
    size_t i;

    if (objs == NULL)
        return;
    for (i = 0; i < count; i++)
        mks_object_clear(&objs[i]);
    free(objs);
}

mks_rv mks_objects_append(mks_object **objs, size_t *count, mks_object *more, size_t nmore)
{
    mks_object *v;

    if (nmore == 0) {
        free(more);
        return MKS_OK;
    }
    v = realloc(*objs, (*count + nmore) * sizeof(*v));
    if (v == NULL) {
        mks_objects_free(more, nmore);
        return mks_error(MKS_ERR_NOMEM, "out of memory collecting objects");
    }
    memcpy(v + *count, more, nmore * sizeof(*more));
    free(more); /* its members now belong to *objs */
    *objs = v;
    *count += nmore;
    return MKS_OK;
}

mks_rv mks_pem_encode(const char *label, const unsigned char *der, size_t der_len, char **pem,
                      size_t *pem_len)
{
    mks_rv rv = MKS_ERR_NOMEM;
    BIO *mem = BIO_new(BIO_s_mem());
    char *data;
    long n;

    *pem = NULL;
    if (mem == NULL || !PEM_write_bio(mem, label, "", der, (long)der_len))
        goto done;
    n = BIO_get_mem_data(mem, &data);
    *pem = malloc((size_t)n + 1);
    if (*pem == NULL)
        goto done;
    memcpy(*pem, data, (size_t)n);
    (*pem)[n] = '\0';
    if (pem_len != NULL)
        *pem_len = (size_t)n;
    rv = MKS_OK;
done:
    if (rv != MKS_OK)
        mks_error(rv, "out of memory writing a %s PEM block", label);
    BIO_free(mem);
    return rv;
}
