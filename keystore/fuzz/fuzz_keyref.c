/* libFuzzer target: key reference DER (PKCS#11 PROVIDER URI). */
#include <stdlib.h>

#include <mtlsks/keystore.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *uri = NULL;

    if (mks_keyref_decode_der(data, size, &uri) == MKS_OK) {
        char *pem = NULL;
        size_t len = 0;
        /* What decodes must encode again. */
        if (mks_keyref_encode_pem(uri, &pem, &len) != MKS_OK)
            abort();
        free(pem);
    }
    free(uri);
    return 0;
}
