#include "session.h"

#include <stdlib.h>
#include <string.h>

int cli_session_tpm_keygen(cli_session *s, const mks_keygen_params *kp, uint32_t persist,
                           char **pem, size_t *pem_len, mks_key **key)
{
    mks_tpm_keygen_params tp = {0};
    mks_rv rv;

    *pem = NULL;
    *key = NULL;
    tp.key = *kp;
    tp.persist = persist;
    if (s->tpm_auth.have) {
        tp.auth = s->tpm_auth.pw;
        tp.auth_len = s->tpm_auth.len;
    }
    rv = mks_tpm_keygen(s->ks, &tp, pem, pem_len, key);
    if (rv != MKS_OK) {
        *pem = NULL;
        *key = NULL;
        if (rv == MKS_ERR_EXISTS)
            cli_fail(s->cmd,
                     "TPM handle 0x%08x holds a key already; choose another --persist handle "
                     "(see '%s list --tpm')",
                     persist, CLI_PROGRAM);
        else
            cli_session_fail_tpm(s, rv, "cannot make a TPM key");
        return 0;
    }
    free(s->tpm_pem);
    s->tpm_pem = strndup(*pem, *pem_len);
    if (s->tpm_pem == NULL) {
        cli_fail(s->cmd, "out of memory");
        return 1; /* the caller still has the key and the PEM */
    }
    s->tpm_pem_len = *pem_len;
    return 1;
}
