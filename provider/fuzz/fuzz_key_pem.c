/*
 * libFuzzer harness for the key file PEM parser (decoder.c): whatever the
 * bytes, the parser finds one of our PEM blocks and returns its DER, or says
 * the input is not ours, or that it is ours but malformed.
 */
#include <stddef.h>
#include <stdint.h>

#include <openssl/crypto.h>

#include "prov.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *der = NULL;
    size_t der_len = 0;
    int kind = -1;
    int r = mks_key_pem_parse((const char *)data, size, &kind, &der, &der_len);

    if ((r == 1) != (der != NULL) || (r == 1 && der_len == 0) ||
        (r != 0 && kind != MKS_PEM_KEYREF && kind != MKS_PEM_TSS2))
        __builtin_trap();
    OPENSSL_free(der);
    return 0;
}
