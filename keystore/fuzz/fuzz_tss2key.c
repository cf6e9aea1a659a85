/* libFuzzer target: TSS2 PRIVATE KEY DER. */
#include <stdlib.h>

#include <mtlsks/keystore.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    mks_tss2_key key;

    if (mks_tss2_decode_der(data, size, &key) == MKS_OK) {
        char *pem = NULL;
        size_t len = 0;
        if (mks_tss2_encode_pem(&key, &pem, &len) != MKS_OK)
            abort();
        free(pem);
        mks_tss2_key_clear(&key);
    }
    return 0;
}
