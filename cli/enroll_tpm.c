/*
 * enroll --tpm: a key made in the TPM, its TSS2 PRIVATE KEY file and a CSR
 * signed in the TPM through the provider's decoder for that file. A TPM
 * keeps no labels: --label is optional and only names the key in what
 * enroll prints; the key file (or the tpmkey: URI of a persistent key) is
 * the key's name.
 */
#include <stdio.h>
#include <stdlib.h>

#include "enroll.h"

/*
 * The same for a TPM key: a key that is not persistent exists only in its
 * key file, so without the file nothing is left; a persistent one stays at
 * its handle until evicted.
 */
static void explain_leftover_tpm_key(const cli_session *s, const cli_globals *g,
                                     const enroll_opts *o, int key_ref_written)
{
    if (!key_ref_written && o->handle == 0) {
        cli_fail(CMD, "nothing is left behind: the TPM key existed only in the key file, which "
                      "was not written; run enroll again");
        return;
    }
    if (o->handle != 0)
        cli_fail(CMD, "the TPM key is persistent at tpmkey:handle=0x%08x and is still there",
                 o->handle);
    else
        cli_fail(CMD, "the TPM key is in %s", o->key_ref);
    fprintf(stderr, "To finish, make its CSR:\n");
    cli_globals_print_prog(g);
    fputs(" csr --key ", stderr);
    if (key_ref_written) {
        cli_shell_quote(stderr, o->key_ref);
    } else {
        fprintf(stderr, "tpmkey:handle=0x%08x", o->handle);
    }
    if (o->password_source != NULL) {
        fputs(" --password-source ", stderr);
        cli_shell_quote(stderr, o->password_source);
    }
    enroll_print_csr_args(o);
    fputc('\n', stderr);
    if (o->handle != 0) {
        fprintf(stderr, "Or remove it:\n  tpm2_evictcontrol -C o -c 0x%08x -T ", o->handle);
        cli_shell_quote(stderr, cli_session_tcti(s));
        fputc('\n', stderr);
    }
}

/* The key type, label and password of a new TPM key, as enroll prints them. */
static void print_tpm_key(const cli_session *s, const enroll_opts *o)
{
    printf("key:     ");
    if (o->handle != 0)
        printf("tpmkey:handle=0x%08x (persistent; also in %s)", o->handle, o->key_ref);
    else
        printf("TPM key in %s", o->key_ref);
    printf(", %s", o->key_type != NULL ? o->key_type : "ec:P-256");
    if (o->label != NULL)
        printf(", label '%s' (printed only: a TPM stores no labels)", o->label);
    printf("\n");
    printf("tcti:    %s\n", cli_session_tcti(s));
    if (s->tpm_auth.have)
        printf("auth:    password (%s%s)\n",
               o->password_source != NULL ? "from " : "typed at the prompt",
               o->password_source != NULL ? o->password_source : "");
    else
        printf("auth:    none (the key is exempt from dictionary-attack lockout)\n");
}

int enroll_tpm(cli_globals *g, const enroll_opts *o, const mks_keygen_params *kp,
               const cli_csr_req *req)
{
    cli_session s;
    cli_err err;
    char *csr_pem = NULL, *key_pem = NULL;
    size_t csr_len = 0, key_len = 0;
    mks_key *key = NULL;
    int ret = CLI_EXIT_FAIL, ref_written = 0;

    if (!cli_session_open(&s, g, CMD))
        return CLI_EXIT_FAIL;
    s.tpm_auth.source = o->password_source;
    s.tpm_auth.key_name = o->key_ref;
    if (!cli_tpm_auth_new_password(&s.tpm_auth, CMD))
        goto done;
    if (!cli_session_tpm_keygen(&s, kp, o->handle, &key_pem, &key_len, &key))
        goto done;

    /* From here on the key exists: every failure explains what is left. */
    if (!cli_write_file_atomic(o->key_ref, key_pem, key_len, 0600, o->force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    ref_written = 1;
    if (!cli_session_make_csr(&s, key, req, &csr_pem, &csr_len))
        goto done;
    if (!cli_write_file_atomic(o->out, csr_pem, csr_len, 0644, o->force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    print_tpm_key(&s, o);
    printf("csr:     %s\n", o->out);
    printf("key-ref: %s\n", o->key_ref);
    ret = CLI_EXIT_OK;
done:
    if (ret != CLI_EXIT_OK && key != NULL)
        explain_leftover_tpm_key(&s, g, o, ref_written);
    if (key != NULL)
        mks_key_free(key);
    if (key_pem != NULL) {
        mks_cleanse(key_pem, key_len);
        mks_free(key_pem);
    }
    free(csr_pem);
    cli_session_close(&s);
    return ret;
}
