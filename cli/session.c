#include "session.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtlsks_provider.h"

#ifndef MKS_P11KIT_PROXY
#define MKS_P11KIT_PROXY "p11-kit-proxy.so"
#endif

int cli_session_open(cli_session *s, const cli_globals *g, const char *cmd)
{
    cli_err err;
    mks_rv rv;

    memset(s, 0, sizeof(*s));
    s->cmd = cmd;
    cli_pin_init(&s->pin);
    s->pin_ui.cb = cli_pin_cb;
    s->pin_ui.arg = &s->pin;
    cli_tpm_auth_init(&s->tpm_auth);
    s->tpm_ui.cb = cli_tpm_auth_cb;
    s->tpm_ui.arg = &s->tpm_auth;

    if (!cli_config_load(g->config, &s->conf, &err)) {
        cli_fail(cmd, "%s", err.msg);
        cli_session_close(s);
        return 0;
    }
    s->kscfg.pkcs11_module = g->module != NULL ? g->module : s->conf.pkcs11_module;
    s->kscfg.pin_source = g->pin_source != NULL ? g->pin_source : s->conf.pin_source;
    s->kscfg.tpm2_tcti = g->tcti != NULL ? g->tcti : s->conf.tpm2_tcti;
    s->tcti_origin = g->tcti != NULL ? "--tcti" : s->conf.tpm2_tcti != NULL ? "config" : NULL;
    s->kscfg.tpm2_hold_objects = s->conf.tpm2_hold_objects;
    s->kscfg.tpm2_sessions = s->conf.tpm2_sessions;

    rv = mks_ctx_new(&s->kscfg, &s->ks);
    if (rv == MKS_ERR_ARG) {
        /* A TPM setting of the provider's section that takes other values. */
        cli_fail_ks(cmd, rv, "section [%s] of %s", s->conf.section ? s->conf.section : "?",
                    s->conf.file ? s->conf.file : "the configuration");
        s->ks = NULL;
        cli_session_close(s);
        return 0;
    }
    if (rv != MKS_OK) {
        cli_fail_ks(cmd, rv, "cannot load the PKCS#11 module %s%s%s%s", cli_session_module(s),
                    g->module == NULL && s->conf.pkcs11_module != NULL ? " (from " : "",
                    g->module == NULL && s->conf.pkcs11_module != NULL ? s->conf.file : "",
                    g->module == NULL && s->conf.pkcs11_module != NULL ? ")" : "");
        s->ks = NULL;
        cli_session_close(s);
        return 0;
    }
    return 1;
}

const char *cli_session_module(const cli_session *s)
{
    return s->kscfg.pkcs11_module != NULL ? s->kscfg.pkcs11_module : MKS_P11KIT_PROXY;
}

int cli_session_has_pin_source(const cli_session *s)
{
    return s->kscfg.pin_source != NULL;
}

const char *cli_session_tcti(const cli_session *s)
{
    return s->kscfg.tpm2_tcti != NULL ? s->kscfg.tpm2_tcti : CLI_DEFAULT_TCTI;
}

void cli_session_fail_tpm(cli_session *s, mks_rv rv, const char *fmt, ...)
{
    const cli_tpm_auth *a = &s->tpm_auth;
    const char *why = mks_last_error();
    const char *name = a->key_name != NULL ? a->key_name : "";
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cli_fail(s->cmd, "%s: %s", msg, why != NULL && *why != '\0' ? why : mks_rv_name(rv));
    switch (rv) {
    case MKS_ERR_TOKEN_ABSENT:
        if (s->tcti_origin == NULL)
            cli_fail(s->cmd,
                     "no TPM answers on the default TCTI %s; set tpm2-tcti in the mtlsks "
                     "section of openssl.cnf or give --tcti (e.g. --tcti "
                     "swtpm:host=127.0.0.1,port=2321)",
                     cli_session_tcti(s));
        else if (strcmp(s->tcti_origin, "--tcti") == 0)
            cli_fail(s->cmd, "no TPM answers on the TCTI %s given with --tcti",
                     cli_session_tcti(s));
        else
            cli_fail(s->cmd,
                     "no TPM answers on the TCTI %s (tpm2-tcti in section [%s] of %s); fix it "
                     "there or override it with --tcti",
                     cli_session_tcti(s), s->conf.section, s->conf.file);
        break;
    case MKS_ERR_PIN_INCORRECT:
        cli_fail(s->cmd,
                 "the TPM rejected the password of TPM key %s (%s%s); it is not tried again: "
                 "every wrong password counts towards the TPM's dictionary-attack lockout",
                 name, a->source != NULL ? "from --password-source " : "typed at the prompt",
                 a->source != NULL ? a->source : "");
        break;
    case MKS_ERR_PIN_REQUIRED:
        cli_fail(s->cmd,
                 "TPM key %s has a password: give it with --password-source file:PATH, or run "
                 "on a terminal to be asked for it",
                 name);
        break;
    case MKS_ERR_PIN_LOCKED:
        cli_fail(s->cmd, "the TPM refuses passwords after too many wrong ones (dictionary-attack "
                         "lockout); wait for it to recover, or have the TPM's owner reset it "
                         "(tpm2_dictionarylockout --clear-lockout)");
        break;
    default:
        break;
    }
}

void cli_session_close(cli_session *s)
{
    if (s->prov_mks != NULL)
        OSSL_PROVIDER_unload(s->prov_mks);
    if (s->prov_default != NULL)
        OSSL_PROVIDER_unload(s->prov_default);
    OSSL_LIB_CTX_free(s->libctx);
    if (s->libctx != NULL)
        mks_provider_builtin_set_keystore(NULL);
    if (s->ui_method != NULL)
        UI_destroy_method(s->ui_method);
    free(s->tpm_pem);
    cli_tpm_auth_wipe(&s->tpm_auth);
    if (s->ks != NULL)
        mks_ctx_free(s->ks);
    cli_pin_wipe(&s->pin);
    cli_config_clear(&s->conf);
    memset(s, 0, sizeof(*s));
}
