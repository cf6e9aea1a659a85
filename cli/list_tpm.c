/*
 * mtls-keystore list --tpm [--json]: the TPM's persistent keys (signing
 * keys at owner-range persistent handles), with their tpmkey: URIs. Keys in
 * TSS2 key files are not in the TPM until loaded: their files name them.
 */
#include <stdio.h>
#include <stdlib.h>

#include "json.h"
#include "list.h"

static int by_handle(const void *a, const void *b)
{
    const mks_tpm_persistent *x = a, *y = b;

    return (x->handle > y->handle) - (x->handle < y->handle);
}

static void print_json(const cli_session *s, const mks_tpm_persistent *keys, size_t n)
{
    size_t i;
    cli_json j;

    cli_json_init(&j, stdout);
    cli_json_obj_begin(&j, NULL);
    cli_json_string(&j, "tcti", cli_session_tcti(s));
    cli_json_arr_begin(&j, "persistent_keys");
    for (i = 0; i < n; i++) {
        char handle[16];

        snprintf(handle, sizeof(handle), "0x%08x", keys[i].handle);
        cli_json_obj_begin(&j, NULL);
        cli_json_string(&j, "handle", handle);
        cli_json_string(&j, "uri", keys[i].uri);
        cli_json_key_type(&j, cli_key_type_name(keys[i].type), keys[i].curve, keys[i].bits);
        cli_json_obj_end(&j);
    }
    cli_json_arr_end(&j);
    cli_json_obj_end(&j);
    cli_json_end(&j);
}

static void print_text(const cli_session *s, const mks_tpm_persistent *keys, size_t n)
{
    size_t i;

    printf("TPM: %s\n", cli_session_tcti(s));
    if (n == 0)
        printf("  (no persistent keys)\n");
    for (i = 0; i < n; i++) {
        char type[32];
        const char *kt = cli_key_type_name(keys[i].type);

        if (kt != NULL && keys[i].curve[0] != '\0')
            snprintf(type, sizeof(type), "%s %s", kt, keys[i].curve);
        else if (kt != NULL)
            snprintf(type, sizeof(type), "%s %d", kt, keys[i].bits);
        else
            snprintf(type, sizeof(type), "?");
        printf("  persistent-key  0x%08x  %-10s %s\n", keys[i].handle, type, keys[i].uri);
    }
}

int list_tpm(cli_session *s, int json)
{
    mks_tpm_persistent *keys = NULL;
    size_t n = 0;
    mks_rv rv;

    rv = mks_tpm_list_persistent(s->ks, &keys, &n);
    if (rv != MKS_OK) {
        cli_session_fail_tpm(s, rv, "cannot list the TPM's persistent keys");
        return CLI_EXIT_FAIL;
    }
    qsort(keys, n, sizeof(*keys), by_handle);
    if (json)
        print_json(s, keys, n);
    else
        print_text(s, keys, n);
    mks_free(keys);
    return CLI_EXIT_OK;
}
