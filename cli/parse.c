#include "parse.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/objects.h>

/* ------------------------------------------------------------------------ */
/* Subject                                                                   */

/* The attribute types a subject may use: those CAs and X.520 know. */
static const int subject_nids[] = {
    NID_commonName,    NID_organizationName,    NID_organizationalUnitName,
    NID_countryName,   NID_stateOrProvinceName, NID_localityName,
    NID_streetAddress, NID_postalCode,          NID_domainComponent,
    NID_userId,        NID_serialNumber,        NID_pkcs9_emailAddress,
    NID_title,         NID_givenName,           NID_surname,
    NID_initials,      NID_pseudonym,           NID_generationQualifier,
    NID_dnQualifier,   NID_businessCategory,
};

#define SUBJECT_TYPES_HELP                                                                         \
    "CN, O, OU, C, ST, L, street, postalCode, DC, UID, serialNumber, emailAddress, title, GN, "    \
    "SN, initials, pseudonym, generationQualifier, dnQualifier, businessCategory"

static int subject_nid(const char *type)
{
    size_t i;
    int nid = NID_undef;

    /* OBJ_txt2nid knows short and long names, case-sensitively; users type "cn". */
    for (i = 0; i < sizeof(subject_nids) / sizeof(subject_nids[0]); i++) {
        if (strcasecmp(type, OBJ_nid2sn(subject_nids[i])) == 0 ||
            strcasecmp(type, OBJ_nid2ln(subject_nids[i])) == 0)
            return subject_nids[i];
    }
    if (isdigit((unsigned char)type[0]))
        nid = OBJ_txt2nid(type);
    for (i = 0; nid != NID_undef && i < sizeof(subject_nids) / sizeof(subject_nids[0]); i++) {
        if (subject_nids[i] == nid)
            return nid;
    }
    return NID_undef;
}

typedef struct ava {
    int nid;
    char *value;
    size_t len;
    int joined; /* joined to the previous attribute by '+' (one RDN) */
} ava;

static void avas_free(ava *avas, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(avas[i].value);
    free(avas);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Reads one value starting at s[*pos] up to an unescaped ',' or '+' or the
 * end, unescaping. Unescaped spaces at either end are dropped.
 */
static int read_value(const char *s, size_t *pos, const char *type, char **out, size_t *outlen,
                      cli_err *err)
{
    size_t i = *pos, n = 0, keep = 0;
    char *v = malloc(strlen(s + i) + 1);

    if (v == NULL) {
        cli_err_set(err, "out of memory");
        return 0;
    }
    while (s[i] == ' ')
        i++;
    while (s[i] != '\0' && s[i] != ',' && s[i] != '+') {
        if (s[i] == '\\') {
            int hi = hexval((unsigned char)s[i + 1]);
            int lo = hi >= 0 ? hexval((unsigned char)s[i + 2]) : -1;

            if (hi >= 0 && lo >= 0) {
                if (hi == 0 && lo == 0) {
                    cli_err_set(err, "%s: a NUL byte (\\00) is not allowed in a value", type);
                    goto fail;
                }
                v[n++] = (char)(hi << 4 | lo);
                i += 3;
            } else if (s[i + 1] != '\0' && strchr(" \"#+,;<=>\\", s[i + 1]) != NULL) {
                v[n++] = s[i + 1];
                i += 2;
            } else if (s[i + 1] == '\0') {
                cli_err_set(err, "%s: the value ends with a lone '\\'", type);
                goto fail;
            } else {
                cli_err_set(err,
                            "%s: unknown escape '\\%c' (escape one of , + = \\ \" # ; < > "
                            "space, or give two hex digits)",
                            type, s[i + 1]);
                goto fail;
            }
            keep = n;
            continue;
        }
        if (s[i] == '=') {
            /* RFC 4514 wants it escaped; unescaped it usually means a ',' was forgotten. */
            cli_err_set(err,
                        "%s: unexpected '=' in the value (a missing ',' between two "
                        "attributes? write '\\=' for a literal '=')",
                        type);
            goto fail;
        }
        v[n++] = s[i++];
        if (v[n - 1] != ' ')
            keep = n;
    }
    v[keep] = '\0';
    *out = v;
    *outlen = keep;
    *pos = i;
    return 1;
fail:
    free(v);
    return 0;
}

/*
 * Reads one TYPE=VALUE at s[*pos] up to an unescaped ',' or '+' or the end
 * into a; 0 with err set.
 */
static int read_ava(const char *s, size_t *pos, ava *a, cli_err *err)
{
    size_t i = *pos, tstart, tend;
    char type[64];

    while (s[i] == ' ')
        i++;
    tstart = i;
    while (s[i] != '\0' && s[i] != '=' && s[i] != ',' && s[i] != '+')
        i++;
    tend = i;
    while (tend > tstart && s[tend - 1] == ' ')
        tend--;
    if (s[i] != '=') {
        if (tend == tstart)
            cli_err_set(err,
                        "an empty attribute at position %zu (two separators in a row "
                        "or one at the end?)",
                        tstart + 1);
        else
            cli_err_set(err, "'%.*s' has no '=' (expected TYPE=VALUE, e.g. CN=web)",
                        (int)(tend - tstart), s + tstart);
        return 0;
    }
    if (tend == tstart) {
        cli_err_set(err, "an attribute type is missing before '=' at position %zu", i + 1);
        return 0;
    }
    if (tend - tstart >= sizeof(type)) {
        cli_err_set(err, "unknown attribute '%.*s'", (int)(tend - tstart), s + tstart);
        return 0;
    }
    memcpy(type, s + tstart, tend - tstart);
    type[tend - tstart] = '\0';
    a->nid = subject_nid(type);
    if (a->nid == NID_undef) {
        cli_err_set(err, "unknown attribute '%s' (known: %s)", type, SUBJECT_TYPES_HELP);
        return 0;
    }
    i++; /* '=' */
    if (!read_value(s, &i, type, &a->value, &a->len, err))
        return 0;
    if (a->len == 0) {
        cli_err_set(err, "%s has an empty value", type);
        goto fail;
    }
    if (a->nid == NID_countryName && a->len != 2) {
        cli_err_set(err, "C='%s': a country is a two-letter ISO 3166 code such as DE or US",
                    a->value);
        goto fail;
    }
    *pos = i;
    return 1;
fail:
    free(a->value);
    a->value = NULL;
    return 0;
}

/* The X509_NAME of the attributes in the order typed (RFC 4514 lists the
 * last RDN first: the RDNs are walked from the end). */
static X509_NAME *build_name(const ava *avas, size_t navas, cli_err *err)
{
    X509_NAME *name = X509_NAME_new();
    size_t k = navas;

    if (name == NULL) {
        cli_err_set(err, "out of memory");
        return NULL;
    }
    while (k > 0) {
        size_t first = k - 1, j;

        while (first > 0 && avas[first].joined)
            first--;
        for (j = first; j < k; j++) {
            if (!X509_NAME_add_entry_by_NID(name, avas[j].nid, MBSTRING_UTF8,
                                            (unsigned char *)avas[j].value, (int)avas[j].len, -1,
                                            j == first ? 0 : -1)) {
                cli_err_set_ossl(err, "%s='%s' cannot be encoded", OBJ_nid2sn(avas[j].nid),
                                 avas[j].value);
                X509_NAME_free(name);
                return NULL;
            }
        }
        k = first;
    }
    return name;
}

int cli_parse_subject(const char *s, X509_NAME **out, cli_err *err)
{
    ava *avas = NULL;
    size_t navas = 0, cap = 0, i = 0;
    int joined = 0, ok = 0;

    *out = NULL;
    if (s == NULL || s[strspn(s, " ")] == '\0') {
        cli_err_set(err, "the subject is empty (expected e.g. \"CN=web.example,O=Example\")");
        return 0;
    }
    if (s[0] == '/') {
        cli_err_set(err,
                    "'%s': write the subject as \"CN=...,O=...\" (RFC 4514), not "
                    "\"/CN=.../O=...\"",
                    s);
        return 0;
    }

    for (;;) {
        ava a = {0};

        if (!read_ava(s, &i, &a, err))
            goto done;
        a.joined = joined;
        if (navas == cap) {
            ava *na = realloc(avas, (cap = cap ? cap * 2 : 8) * sizeof(*avas));

            if (na == NULL) {
                cli_err_set(err, "out of memory");
                free(a.value);
                goto done;
            }
            avas = na;
        }
        avas[navas++] = a;
        if (s[i] == '\0')
            break;
        joined = s[i] == '+';
        i++;
        if (s[i + strspn(s + i, " ")] == '\0') {
            cli_err_set(err, "the subject ends with '%c' (nothing follows it)", s[i - 1]);
            goto done;
        }
    }
    *out = build_name(avas, navas, err);
    ok = *out != NULL;
done:
    avas_free(avas, navas);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Subject alternative names                                                 */

int cli_valid_dns_name(const char *s, int allow_wildcard)
{
    size_t len = strlen(s), label = 0, i;

    if (len == 0 || len > 253)
        return 0;
    if (allow_wildcard && s[0] == '*' && s[1] == '.') {
        s += 2;
        len -= 2;
        if (len == 0)
            return 0;
    }
    for (i = 0; i <= len; i++) {
        char c = s[i];

        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63)
                return 0; /* empty label ("a..b", trailing dot) or too long */
            if (s[i - 1] == '-')
                return 0;
            label = 0;
            continue;
        }
        if (!(isalnum((unsigned char)c) && (unsigned char)c < 0x80) && c != '-')
            return 0;
        if (c == '-' && label == 0)
            return 0;
        label++;
    }
    return 1;
}

static int ascii_printable(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return 0;
    }
    return 1;
}

/* RFC 3986: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":" and something after it. */
static int valid_uri(const char *s)
{
    size_t i = 0;

    if (!isalpha((unsigned char)s[0]) || (unsigned char)s[0] >= 0x80)
        return 0;
    while (s[i] != '\0' && s[i] != ':') {
        unsigned char c = (unsigned char)s[i];

        if (c >= 0x80 || !(isalnum(c) || c == '+' || c == '-' || c == '.'))
            return 0;
        i++;
    }
    return s[i] == ':' && s[i + 1] != '\0' && ascii_printable(s);
}

static int valid_email(const char *s)
{
    const char *at = strchr(s, '@');

    if (at == NULL || at == s || strchr(at + 1, '@') != NULL)
        return 0;
    if (!ascii_printable(s))
        return 0;
    return cli_valid_dns_name(at + 1, 0);
}

static GENERAL_NAME *ia5_name(int type, const char *value)
{
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *str = ASN1_IA5STRING_new();

    if (gn == NULL || str == NULL || !ASN1_STRING_set(str, value, (int)strlen(value))) {
        GENERAL_NAME_free(gn);
        ASN1_IA5STRING_free(str);
        return NULL;
    }
    GENERAL_NAME_set0_value(gn, type, str);
    return gn;
}

static GENERAL_NAME *ip_name(const unsigned char *addr, int len)
{
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_OCTET_STRING *str = ASN1_OCTET_STRING_new();

    if (gn == NULL || str == NULL || !ASN1_OCTET_STRING_set(str, addr, len)) {
        GENERAL_NAME_free(gn);
        ASN1_OCTET_STRING_free(str);
        return NULL;
    }
    GENERAL_NAME_set0_value(gn, GEN_IPADD, str);
    return gn;
}

int cli_parse_san(const char *s, GENERAL_NAME **out, cli_err *err)
{
    const char *colon = s != NULL ? strchr(s, ':') : NULL;
    const char *v;
    size_t tlen;
    GENERAL_NAME *gn = NULL;

    *out = NULL;
    if (colon == NULL) {
        cli_err_set(err,
                    "'%s' has no type (expected DNS:NAME, IP:ADDRESS, URI:URI or "
                    "email:ADDRESS)",
                    s != NULL ? s : "");
        return 0;
    }
    tlen = (size_t)(colon - s);
    v = colon + 1;
#define IS_TYPE(t) (tlen == strlen(t) && strncasecmp(s, t, tlen) == 0)
    if (IS_TYPE("DNS")) {
        if (*v == '\0') {
            cli_err_set(err, "'%s': the DNS name is empty", s);
            return 0;
        }
        if (!cli_valid_dns_name(v, 1)) {
            cli_err_set(err,
                        "'%s': not a valid DNS name (labels of letters, digits and '-', not "
                        "starting or ending with '-', at most 63 characters each; '*.' only "
                        "in front)",
                        s);
            return 0;
        }
        gn = ia5_name(GEN_DNS, v);
    } else if (IS_TYPE("IP")) {
        unsigned char addr[16];

        if (inet_pton(AF_INET, v, addr) == 1) {
            gn = ip_name(addr, 4);
        } else if (inet_pton(AF_INET6, v, addr) == 1) {
            gn = ip_name(addr, 16);
        } else {
            cli_err_set(err, "'%s': not an IPv4 or IPv6 address", s);
            return 0;
        }
    } else if (IS_TYPE("URI")) {
        if (!valid_uri(v)) {
            cli_err_set(err, "'%s': not a URI with a scheme (e.g. URI:spiffe://example.org/web)",
                        s);
            return 0;
        }
        gn = ia5_name(GEN_URI, v);
    } else if (IS_TYPE("email")) {
        if (!valid_email(v)) {
            cli_err_set(err, "'%s': not an e-mail address (local@domain.example, ASCII)", s);
            return 0;
        }
        gn = ia5_name(GEN_EMAIL, v);
    } else {
        cli_err_set(err, "'%s': unknown type '%.*s' (use DNS:, IP:, URI: or email:)", s, (int)tlen,
                    s);
        return 0;
    }
#undef IS_TYPE
    if (gn == NULL) {
        cli_err_set(err, "out of memory");
        return 0;
    }
    *out = gn;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Key type, usage, numbers                                                  */

static const struct {
    const char *name;
    mks_key_type type;
    int bits;
    const char *curve;
} key_types[] = {
    {"ec:P-256", MKS_KEY_EC, 256, "P-256"}, {"ec:P-384", MKS_KEY_EC, 384, "P-384"},
    {"rsa:2048", MKS_KEY_RSA, 2048, NULL},  {"rsa:3072", MKS_KEY_RSA, 3072, NULL},
    {"rsa:4096", MKS_KEY_RSA, 4096, NULL},
};

int cli_parse_key_type(const char *s, mks_keygen_params *p, cli_err *err)
{
    size_t i;

    for (i = 0; s != NULL && i < sizeof(key_types) / sizeof(key_types[0]); i++) {
        if (strcasecmp(s, key_types[i].name) == 0) {
            p->type = key_types[i].type;
            p->bits = key_types[i].type == MKS_KEY_RSA ? key_types[i].bits : 0;
            p->curve = key_types[i].curve;
            return 1;
        }
    }
    cli_err_set(err,
                "unsupported key type '%s' (use ec:P-256, ec:P-384, rsa:2048, rsa:3072 or "
                "rsa:4096)",
                s != NULL ? s : "");
    return 0;
}

int cli_parse_tpm_key_type(const char *s, mks_keygen_params *p, cli_err *err)
{
    if (!cli_parse_key_type(s, p, err))
        return 0;
    if (p->type == MKS_KEY_RSA && p->bits > 3072) {
        cli_err_set(err, "%s: TPM keys are ec:P-256, ec:P-384, rsa:2048 or rsa:3072", s);
        return 0;
    }
    return 1;
}

int cli_parse_usage(const char *s, cli_usage *out, cli_err *err)
{
    if (s != NULL && strcasecmp(s, "client") == 0)
        *out = CLI_USAGE_CLIENT;
    else if (s != NULL && strcasecmp(s, "server") == 0)
        *out = CLI_USAGE_SERVER;
    else if (s != NULL && strcasecmp(s, "both") == 0)
        *out = CLI_USAGE_BOTH;
    else {
        cli_err_set(err, "unknown usage '%s' (use client, server or both)", s != NULL ? s : "");
        return 0;
    }
    return 1;
}

int cli_parse_uint(const char *s, int *out)
{
    char *end;
    long v;

    if (s == NULL || !isdigit((unsigned char)s[0]))
        return 0;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0 || v > INT_MAX)
        return 0;
    *out = (int)v;
    return 1;
}
