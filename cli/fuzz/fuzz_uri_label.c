/*
 * libFuzzer target: labels that users type, put into pkcs11: URIs the way
 * the CLI does it (mks_uri_object, for import-cert, renew, show, delete).
 * Whatever the label, the URI reads back (mks_uri_parse, p11-kit's RFC 7512
 * parser, the one mks_objects_find uses) as exactly that label and type and
 * no token, so a URI never names another object than the one the user
 * meant.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mtlsks/keystore.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *label = malloc(size + 1), *uri = NULL;
    mks_uri_parts parts;
    size_t len;
    mks_rv rv;

    if (label == NULL)
        return 0;
    memcpy(label, data, size);
    label[size] = '\0';
    len = strlen(label);
    rv = mks_uri_object(NULL, label, NULL, 0, MKS_OBJ_CERTIFICATE, &uri);
    if (rv == MKS_ERR_NOMEM)
        goto done;
    if (rv != MKS_OK)
        __builtin_trap(); /* every label has a URI */
    if (mks_uri_parse(uri, &parts) != MKS_OK)
        __builtin_trap();
    if (len == 0) {
        /* "object=" with nothing after it: an empty label or none at all. */
        if (parts.label != NULL && parts.label[0] != '\0')
            __builtin_trap();
    } else if (parts.label == NULL || strlen(parts.label) != len ||
               memcmp(parts.label, label, len) != 0) {
        __builtin_trap();
    }
    if (parts.cls != MKS_OBJ_CERTIFICATE || parts.id != NULL || parts.token_label[0] != '\0' ||
        strcmp(parts.token_uri, "pkcs11:") != 0)
        __builtin_trap();
    mks_uri_parts_clear(&parts);
done:
    mks_free(uri);
    free(label);
    return 0;
}
