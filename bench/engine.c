/*
 * Row 3: libp11's pkcs11 engine (Debian's libengine-pkcs11-openssl 0.4.12),
 * the path curl 7.88 takes to pkcs11: keys. The ENGINE API is deprecated in
 * OpenSSL 3.0 but present; this is the one file that uses it, and it is
 * compiled with the deprecated declarations visible (see CMakeLists.txt).
 */
#undef OPENSSL_NO_DEPRECATED
#undef OPENSSL_API_COMPAT
#define OPENSSL_API_COMPAT 10101

#include "bench.h"

#include <stdio.h>
#include <string.h>

#include <openssl/engine.h>
#include <openssl/err.h>

void *bench_engine_open(const char *module, const char *pin_file)
{
    ENGINE *e;
    char pin[256];

    if (module == NULL || !bench_read_pin(pin_file, pin, sizeof(pin))) {
        fprintf(stderr, "mtlsks-bench: the engine needs --module and --pin-file\n");
        return NULL;
    }
    /* Not built in: ENGINE_by_id loads pkcs11.so from the engines directory. */
    e = ENGINE_by_id("pkcs11");
    if (e == NULL || !ENGINE_ctrl_cmd_string(e, "MODULE_PATH", module, 0) ||
        !ENGINE_ctrl_cmd_string(e, "PIN", pin, 0) || !ENGINE_init(e)) {
        memset(pin, 0, sizeof(pin));
        bench_report_errors("loading libp11's pkcs11 engine");
        return NULL;
    }
    memset(pin, 0, sizeof(pin));
    return e;
}

EVP_PKEY *bench_engine_load(void *engine, const char *uri)
{
    EVP_PKEY *k = ENGINE_load_private_key(engine, uri, NULL, NULL);

    if (k == NULL)
        bench_report_errors("ENGINE_load_private_key");
    return k;
}
