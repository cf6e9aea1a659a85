#include "session.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/store.h>

#include "mtlsks_provider.h"

#ifndef MKS_P11KIT_PROXY
#define MKS_P11KIT_PROXY "p11-kit-proxy.so"
#endif

int cli_globals_opt(cli_globals *g, int c, const char *arg)
{
    switch (c) {
    case CLI_OPT_CONFIG:
        g->config = arg;
        return 1;
    case CLI_OPT_MODULE:
        g->module = arg;
        return 1;
    case CLI_OPT_PIN_SOURCE:
        g->pin_source = arg;
        return 1;
    default:
        return 0;
    }
}

int cli_globals_check(const cli_globals *g, const char *cmd)
{
    if (g->config != NULL && *g->config == '\0') {
        cli_fail(cmd, "--config: empty file name");
        return 0;
    }
    if (g->module != NULL && *g->module == '\0') {
        cli_fail(cmd, "--module: empty path");
        return 0;
    }
    /* Only file:PATH: a bare word may be a PIN typed in the wrong place, and
     * it is not echoed back. */
    if (g->pin_source != NULL &&
        (strncmp(g->pin_source, "file:", 5) != 0 || g->pin_source[5] == '\0')) {
        cli_fail(cmd, "--pin-source takes file:PATH, a file whose first line is the PIN "
                      "(no option takes the PIN itself)");
        return 0;
    }
    return 1;
}

int cli_session_open(cli_session *s, const cli_globals *g, const char *cmd)
{
    cli_err err;
    mks_rv rv;

    memset(s, 0, sizeof(*s));
    s->cmd = cmd;
    cli_pin_init(&s->pin);
    s->pin_ui.cb = cli_pin_cb;
    s->pin_ui.arg = &s->pin;

    if (!cli_config_load(g->config, &s->conf, &err)) {
        cli_fail(cmd, "%s", err.msg);
        cli_session_close(s);
        return 0;
    }
    s->kscfg.pkcs11_module = g->module != NULL ? g->module : s->conf.pkcs11_module;
    s->kscfg.pin_source = g->pin_source != NULL ? g->pin_source : s->conf.pin_source;
    s->kscfg.tpm2_tcti = s->conf.tpm2_tcti;

    rv = mks_ctx_new(&s->kscfg, &s->ks);
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

/* The library context that signs: default provider for hashing and verifying,
 * mtlsks for the token key, both built in, nothing read from openssl.cnf. */
static int session_provider(cli_session *s)
{
    if (s->libctx != NULL)
        return 1;
    s->libctx = OSSL_LIB_CTX_new();
    if (s->libctx == NULL) {
        cli_fail_ossl(s->cmd, "cannot create an OpenSSL library context");
        return 0;
    }
    mks_provider_builtin_set_keystore(s->ks);
    if (!OSSL_PROVIDER_add_builtin(s->libctx, MKS_PROVIDER_NAME, mks_provider_builtin_init)) {
        cli_fail_ossl(s->cmd, "cannot register the %s provider", MKS_PROVIDER_NAME);
        return 0;
    }
    s->prov_default = OSSL_PROVIDER_load(s->libctx, "default");
    if (s->prov_default == NULL) {
        cli_fail_ossl(s->cmd, "cannot load OpenSSL's default provider");
        return 0;
    }
    s->prov_mks = OSSL_PROVIDER_load(s->libctx, MKS_PROVIDER_NAME);
    if (s->prov_mks == NULL) {
        cli_fail_ossl(s->cmd, "cannot load the %s provider", MKS_PROVIDER_NAME);
        return 0;
    }
    s->ui_method = cli_pin_ui_method_new();
    if (s->ui_method == NULL) {
        cli_fail_ossl(s->cmd, "cannot set up the PIN prompt");
        return 0;
    }
    return 1;
}

int cli_session_load_pkey(cli_session *s, const char *uri, EVP_PKEY **out)
{
    OSSL_STORE_CTX *sc = NULL;
    EVP_PKEY *pkey = NULL;
    int n = 0, guard, ok = 0;

    *out = NULL;
    if (!session_provider(s))
        return 0;
    ERR_clear_error();
    sc = OSSL_STORE_open_ex(uri, s->libctx, "?provider=" MKS_PROVIDER_NAME, s->ui_method, &s->pin,
                            NULL, NULL, NULL);
    if (sc == NULL) {
        cli_fail_ossl(s->cmd, "the %s provider cannot open %s", MKS_PROVIDER_NAME, uri);
        goto done;
    }
    if (!OSSL_STORE_expect(sc, OSSL_STORE_INFO_PKEY)) {
        cli_fail_ossl(s->cmd, "cannot ask the store for private keys only");
        goto done;
    }
    for (guard = 0; guard < 1000 && !OSSL_STORE_eof(sc); guard++) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(sc);

        if (info == NULL) {
            if (OSSL_STORE_error(sc)) {
                cli_fail_ossl(s->cmd, "the %s provider cannot load %s", MKS_PROVIDER_NAME, uri);
                goto done;
            }
            continue;
        }
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY) {
            n++;
            if (pkey == NULL)
                pkey = OSSL_STORE_INFO_get1_PKEY(info);
        }
        OSSL_STORE_INFO_free(info);
    }
    if (n == 0 || pkey == NULL) {
        cli_fail_ossl(s->cmd, "the %s provider found no private key for %s", MKS_PROVIDER_NAME,
                      uri);
        goto done;
    }
    if (n > 1) {
        cli_fail(s->cmd, "the %s provider found %d private keys for %s; expected one",
                 MKS_PROVIDER_NAME, n, uri);
        goto done;
    }
    *out = pkey;
    pkey = NULL;
    ok = 1;
done:
    EVP_PKEY_free(pkey);
    OSSL_STORE_close(sc);
    return ok;
}

int cli_session_make_csr(cli_session *s, mks_key *key, const cli_csr_req *req, char **pem,
                         size_t *pem_len)
{
    EVP_PKEY *pkey = NULL;
    const unsigned char *spki;
    size_t spki_len = 0;
    cli_err err;
    int ok = 0;

    *pem = NULL;
    *pem_len = 0;
    spki = mks_key_get0_spki(key, &spki_len);
    if (spki == NULL || spki_len == 0) {
        cli_fail(s->cmd, "the keystore knows no public key for %s", mks_key_get0_uri(key));
        return 0;
    }
    if (!cli_session_load_pkey(s, mks_key_get0_uri(key), &pkey))
        return 0;
    if (!cli_csr_make(s->libctx, req, spki, spki_len, pkey,
                      cli_csr_digest(mks_key_get_type(key), mks_key_get0_curve(key)), pem, pem_len,
                      &err)) {
        cli_fail(s->cmd, "CSR for key '%s' (token '%s'): %s", mks_key_get0_label(key),
                 mks_key_get0_token_label(key), err.msg);
        goto done;
    }
    ok = 1;
done:
    EVP_PKEY_free(pkey);
    return ok;
}

static void list_choices(const char *cmd, const mks_slot_info *slots, size_t count)
{
    size_t i;
    int any = 0;

    for (i = 0; i < count; i++) {
        if (slots[i].index < 0)
            continue;
        if (!any)
            fprintf(stderr, "%s %s: slots that can hold keys:\n", CLI_PROGRAM, cmd);
        any = 1;
        fprintf(stderr, "  --slot %d   --token '%s'   (%s)\n", slots[i].index, slots[i].token_label,
                slots[i].slot_description);
    }
    if (!any)
        fprintf(stderr, "%s %s: no slot of this module can hold keys; see '%s list'\n", CLI_PROGRAM,
                cmd, CLI_PROGRAM);
}

int cli_session_find_token(cli_session *s, int slot_index, const char *label, char **token_uri,
                           char token_label[33])
{
    mks_slot_info *slots = NULL, *found = NULL;
    size_t count = 0, i;
    int matches = 0, ok = 0;
    mks_rv rv;

    *token_uri = NULL;
    rv = mks_slots_list(s->ks, &slots, &count);
    if (rv != MKS_OK) {
        cli_fail_ks(s->cmd, rv, "cannot list the slots of %s", cli_session_module(s));
        return 0;
    }
    for (i = 0; i < count; i++) {
        if (label != NULL ? strcmp(slots[i].token_label, label) == 0 && slots[i].token_present
                          : slots[i].index == slot_index) {
            if (slots[i].index < 0) {
                cli_fail(s->cmd,
                         "token '%s' (%s) cannot hold keys: it is write-protected or not "
                         "initialized",
                         slots[i].token_label, slots[i].slot_description);
                list_choices(s->cmd, slots, count);
                goto done;
            }
            if (found == NULL)
                found = &slots[i];
            matches++;
        }
    }
    if (found == NULL) {
        if (label != NULL)
            cli_fail(s->cmd, "no token labelled '%s' in %s", label, cli_session_module(s));
        else
            cli_fail(s->cmd, "no slot %d in %s", slot_index, cli_session_module(s));
        list_choices(s->cmd, slots, count);
        goto done;
    }
    if (matches > 1) {
        cli_fail(s->cmd, "%d tokens are labelled '%s'; choose one with --slot", matches, label);
        list_choices(s->cmd, slots, count);
        goto done;
    }
    if (found->token_uri == NULL) {
        cli_fail(s->cmd, "the module gives no URI for token '%s'", found->token_label);
        goto done;
    }
    *token_uri = strdup(found->token_uri);
    if (*token_uri == NULL) {
        cli_fail(s->cmd, "out of memory");
        goto done;
    }
    snprintf(token_label, 33, "%s", found->token_label);
    ok = 1;
done:
    mks_slots_free(slots, count);
    return ok;
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
    if (s->ks != NULL)
        mks_ctx_free(s->ks);
    cli_pin_wipe(&s->pin);
    cli_config_clear(&s->conf);
    memset(s, 0, sizeof(*s));
}
