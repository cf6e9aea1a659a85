/*
 * delete --tpm --handle H evicts a persistent TPM key, after asking as
 * delete does for token keys. A key that is not persistent lives only in
 * its key file: removing the file is deleting it (the TPM keeps nothing of
 * it).
 */
#include <stdio.h>
#include <stdlib.h>

#include "delete.h"

int delete_tpm(cli_globals *g, uint32_t handle, int yes)
{
    mks_tpm_persistent *keys = NULL;
    size_t n = 0, i;
    cli_session s;
    char what[64];
    int ret = CLI_EXIT_FAIL;
    mks_rv rv;

    if (!cli_session_open(&s, g, CMD))
        return CLI_EXIT_FAIL;
    rv = mks_tpm_list_persistent(s.ks, &keys, &n);
    if (rv != MKS_OK) {
        cli_session_fail_tpm(&s, rv, "cannot list the TPM's persistent keys");
        goto done;
    }
    for (i = 0; i < n && keys[i].handle != handle; i++)
        ;
    if (i == n) {
        cli_fail(CMD, "no persistent key at 0x%08x in the TPM at %s (see '%s list --tpm')", handle,
                 cli_session_tcti(&s), CLI_PROGRAM);
        goto done;
    }
    if (keys[i].type == MKS_KEY_RSA)
        snprintf(what, sizeof(what), "rsa %d", keys[i].bits);
    else
        snprintf(what, sizeof(what), "ec %s", keys[i].curve);
    fprintf(stderr, "In the TPM at %s:\n  %s  %s\n", cli_session_tcti(&s), keys[i].uri, what);
    snprintf(what, sizeof(what), "the persistent key 0x%08x", handle);
    if (!yes && !delete_confirm(what)) {
        fprintf(stderr, "Nothing deleted.\n");
        goto done;
    }
    rv = mks_tpm_evict(s.ks, handle);
    if (rv != MKS_OK) {
        cli_session_fail_tpm(&s, rv, "cannot remove the persistent key 0x%08x", handle);
        goto done;
    }
    printf("deleted: tpmkey:handle=0x%08x (key files made with it no longer name a key)\n", handle);
    ret = CLI_EXIT_OK;
done:
    mks_free(keys);
    cli_session_close(&s);
    return ret;
}
