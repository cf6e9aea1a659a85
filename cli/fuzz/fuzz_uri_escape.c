/*
 * libFuzzer target: cli_uri_escape, which puts labels that users type into
 * pkcs11: URIs (import-cert, enroll's printed URI). Whatever the label,
 * p11-kit's RFC 7512 parser reads back exactly that label from
 * "pkcs11:object=<escaped>", so a URI never names another object than the
 * one the user meant.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/uri.h>

#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *label = malloc(size + 1), *esc = NULL, *uristr = NULL;
    P11KitUri *uri = NULL;
    CK_ATTRIBUTE *a;
    size_t len;

    if (label == NULL)
        return 0;
    memcpy(label, data, size);
    label[size] = '\0';
    len = strlen(label);
    esc = cli_uri_escape(label);
    if (esc == NULL)
        goto done;
    if (strspn(esc, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%") !=
        strlen(esc))
        __builtin_trap(); /* only unreserved characters and %XX */
    uristr = malloc(strlen(esc) + 32);
    uri = p11_kit_uri_new();
    if (uristr == NULL || uri == NULL)
        goto done;
    strcpy(uristr, "pkcs11:object=");
    strcat(uristr, esc);
    if (p11_kit_uri_parse(uristr, P11_KIT_URI_FOR_OBJECT, uri) != P11_KIT_URI_OK)
        __builtin_trap();
    a = p11_kit_uri_get_attribute(uri, CKA_LABEL);
    if (len == 0) {
        /* "object=" with nothing after it: an empty label or none at all. */
        if (a != NULL && a->ulValueLen != 0)
            __builtin_trap();
    } else if (a == NULL || a->ulValueLen != len || memcmp(a->pValue, label, len) != 0) {
        __builtin_trap();
    }
done:
    p11_kit_uri_free(uri);
    free(uristr);
    free(esc);
    free(label);
    return 0;
}
