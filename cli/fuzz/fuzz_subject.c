/*
 * libFuzzer target: --subject parsing (cli_parse_subject). Whatever the
 * input, the parser returns a name or an error message, never crashes; and a
 * name it returns survives a round trip: printed as RFC 4514 by OpenSSL and
 * parsed again, it is the same name.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 1 when some value holds a character that OpenSSL prints unescaped but the
 * parser wants escaped ('=': the parser reads it as a forgotten ','). */
static int has_unescaped_special(const X509_NAME *name)
{
    int i;

    for (i = 0; i < X509_NAME_entry_count(name); i++) {
        const ASN1_STRING *v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));

        if (memchr(ASN1_STRING_get0_data(v), '=', (size_t)ASN1_STRING_length(v)) != NULL)
            return 1;
    }
    return 0;
}

static void round_trip(const X509_NAME *name)
{
    BIO *bio = BIO_new(BIO_s_mem());
    X509_NAME *again = NULL;
    cli_err err;
    char *text;
    long len;

    if (bio == NULL || X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) < 0 ||
        BIO_write(bio, "", 1) != 1)
        goto done; /* out of memory: nothing to check */
    len = BIO_get_mem_data(bio, &text);
    if (len <= 1 || has_unescaped_special(name))
        goto done;
    if (!cli_parse_subject(text, &again, &err) || X509_NAME_cmp(name, again) != 0)
        __builtin_trap(); /* the parser does not read back what it made */
done:
    X509_NAME_free(again);
    BIO_free(bio);
    ERR_clear_error();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    X509_NAME *name = NULL;
    cli_err err;

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    err.msg[0] = '\0';
    if (cli_parse_subject(s, &name, &err)) {
        if (name == NULL || X509_NAME_entry_count(name) == 0)
            __builtin_trap();
        round_trip(name);
    } else if (name != NULL || err.msg[0] == '\0') {
        __builtin_trap(); /* a failure leaves no name and says why */
    }
    X509_NAME_free(name);
    ERR_clear_error();
    free(s);
    return 0;
}
