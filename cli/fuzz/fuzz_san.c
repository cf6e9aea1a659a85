/*
 * libFuzzer target: --san parsing (cli_parse_san). A name the parser
 * accepts is what it claims to be: a DNS name that passes
 * cli_valid_dns_name, an IP address of 4 or 16 bytes that reads back the
 * same, a URI or e-mail address that is the text after the type, and it
 * encodes as DER.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 1 when the IA5String holds exactly the text s. */
static int same_text(const ASN1_STRING *str, const char *s)
{
    size_t len = strlen(s);

    return (size_t)ASN1_STRING_length(str) == len &&
           memcmp(ASN1_STRING_get0_data(str), s, len) == 0;
}

static void check_ip(const ASN1_OCTET_STRING *ip)
{
    char buf[INET6_ADDRSTRLEN];
    unsigned char again[16];
    int len = ASN1_STRING_length(ip), af;
    GENERAL_NAME *gn = NULL;
    char in[64];
    cli_err err;

    if (len != 4 && len != 16)
        __builtin_trap();
    af = len == 4 ? AF_INET : AF_INET6;
    if (inet_ntop(af, ASN1_STRING_get0_data(ip), buf, sizeof(buf)) == NULL ||
        inet_pton(af, buf, again) != 1 ||
        memcmp(again, ASN1_STRING_get0_data(ip), (size_t)len) != 0)
        __builtin_trap();
    /* The canonical text form parses to the same address. */
    snprintf(in, sizeof(in), "IP:%s", buf);
    if (!cli_parse_san(in, &gn, &err) || gn->type != GEN_IPADD ||
        ASN1_OCTET_STRING_cmp(gn->d.iPAddress, ip) != 0)
        __builtin_trap();
    GENERAL_NAME_free(gn);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    GENERAL_NAME *gn = NULL;
    unsigned char *der = NULL;
    const char *value;
    cli_err err;

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    err.msg[0] = '\0';
    if (!cli_parse_san(s, &gn, &err)) {
        if (gn != NULL || err.msg[0] == '\0')
            __builtin_trap();
        goto done;
    }
    value = strchr(s, ':') + 1;
    switch (gn->type) {
    case GEN_DNS:
        if (!same_text(gn->d.dNSName, value) || !cli_valid_dns_name(value, 1))
            __builtin_trap();
        break;
    case GEN_URI:
        if (!same_text(gn->d.uniformResourceIdentifier, value))
            __builtin_trap();
        break;
    case GEN_EMAIL:
        if (!same_text(gn->d.rfc822Name, value) || strchr(value, '@') == NULL)
            __builtin_trap();
        break;
    case GEN_IPADD:
        check_ip(gn->d.iPAddress);
        break;
    default:
        __builtin_trap();
    }
    if (i2d_GENERAL_NAME(gn, &der) <= 0)
        __builtin_trap();
done:
    OPENSSL_free(der);
    GENERAL_NAME_free(gn);
    ERR_clear_error();
    free(s);
    return 0;
}
