#include "session.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
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
    case CLI_OPT_TCTI:
        g->tcti = arg;
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
    if (g->tcti != NULL && *g->tcti == '\0') {
        cli_fail(cmd, "--tcti: empty TCTI (e.g. %s or swtpm:host=127.0.0.1,port=2321)",
                 CLI_DEFAULT_TCTI);
        return 0;
    }
    return 1;
}

int cli_password_source_check(const char *cmd, const char *source)
{
    /* As for --pin-source: a bare word may be the password typed in the
     * wrong place, and it is not echoed back. */
    if (source != NULL && (strncmp(source, "file:", 5) != 0 || source[5] == '\0')) {
        cli_fail(cmd, "--password-source takes file:PATH, a file whose first line is the TPM "
                      "key's password (no option takes the password itself)");
        return 0;
    }
    return 1;
}

/* ---- TPM key passwords ----------------------------------------------------- */

/* Reads the password from --password-source into a, unless it is there. */
static int tpm_auth_load(cli_session *s)
{
    cli_tpm_auth *a = &s->tpm_auth;
    mks_rv rv;

    if (a->have || a->source == NULL)
        return 1;
    rv = mks_pin_from_source(a->source, a->pw, sizeof(a->pw), &a->len);
    if (rv != MKS_OK) {
        cli_fail(s->cmd, "--password-source %s: cannot read the TPM key's password: %s", a->source,
                 mks_last_error());
        return 0;
    }
    a->have = 1;
    return 1;
}

/* Asks on the terminal (echo off; twice with verify): 1 with a password in
 * a, 0 for an empty answer, -1 when the prompt failed or the answers differ. */
static int tpm_auth_prompt(cli_tpm_auth *a, int verify)
{
    char prompt[160];
    int rc;

    if (verify)
        snprintf(prompt, sizeof(prompt), "New password for TPM key %s (empty: none): ",
                 a->key_name != NULL ? a->key_name : "");
    else
        snprintf(prompt, sizeof(prompt),
                 "Password for TPM key %s: ", a->key_name != NULL ? a->key_name : "");
    rc = EVP_read_pw_string_min(a->pw, 0, (int)sizeof(a->pw) - 1, prompt, verify);
    ERR_clear_error();
    if (rc != 0) {
        OPENSSL_cleanse(a->pw, sizeof(a->pw));
        return -1;
    }
    a->len = strlen(a->pw);
    a->have = a->len > 0;
    return a->have;
}

/* mks_pin_cb for TPM keys; arg is the cli_tpm_auth. */
static int tpm_auth_cb(char *buf, size_t bufsize, size_t *len, const char *what, void *arg)
{
    cli_tpm_auth *a = arg;

    a->asked = 1;
    if (!a->have && (a->source != NULL || !a->interactive || tpm_auth_prompt(a, 0) != 1))
        return 0; /* a source is read before the keystore asks (tpm_auth_load) */
    if (a->len + 1 > bufsize)
        return 0;
    memcpy(buf, a->pw, a->len);
    buf[a->len] = '\0';
    *len = a->len;
    return 1;
}

/* The same for OpenSSL's passphrase requests (the provider opening a TPM key
 * in the session's library context); ui_data is the cli_tpm_auth. */
static int tpm_ui_read(UI *ui, UI_STRING *uis)
{
    char buf[CLI_PIN_MAX];
    size_t len = 0;
    int ok = 0;

    switch (UI_get_string_type(uis)) {
    case UIT_PROMPT:
    case UIT_VERIFY:
        if (tpm_auth_cb(buf, sizeof(buf), &len, NULL, UI_get0_user_data(ui)))
            ok = UI_set_result_ex(ui, uis, buf, (int)len) >= 0;
        OPENSSL_cleanse(buf, sizeof(buf));
        return ok;
    default:
        return 1;
    }
}

int cli_session_tpm_new_password(cli_session *s)
{
    cli_tpm_auth *a = &s->tpm_auth;

    if (a->source != NULL)
        return tpm_auth_load(s);
    if (a->interactive && tpm_auth_prompt(a, 1) < 0) {
        cli_fail(s->cmd, "no password for the new TPM key: the two answers differ, or the "
                         "prompt failed");
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
    s->tpm_auth.interactive = isatty(STDIN_FILENO);
    s->tpm_ui.cb = tpm_auth_cb;
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
    s->tpm_ui_method = UI_create_method("mtls-keystore TPM key password");
    if (s->ui_method == NULL || s->tpm_ui_method == NULL ||
        UI_method_set_reader(s->tpm_ui_method, tpm_ui_read) != 0) {
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
    if (strncasecmp(uri, MKS_TPM_URI_SCHEME, strlen(MKS_TPM_URI_SCHEME)) == 0)
        sc = OSSL_STORE_open_ex(uri, s->libctx, "?provider=" MKS_PROVIDER_NAME, s->tpm_ui_method,
                                &s->tpm_auth, NULL, NULL, NULL);
    else
        sc = OSSL_STORE_open_ex(uri, s->libctx, "?provider=" MKS_PROVIDER_NAME, s->ui_method,
                                &s->pin, NULL, NULL, NULL);
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

int cli_session_decode_tpm_pkey(cli_session *s, const char *pem, size_t pem_len, EVP_PKEY **out)
{
    OSSL_DECODER_CTX *dctx = NULL;
    EVP_PKEY *pkey = NULL;
    const unsigned char *p = (const unsigned char *)pem;
    size_t len = pem_len;
    int ok = 0;

    *out = NULL;
    if (!session_provider(s))
        return 0;
    ERR_clear_error();
    /* OSSL_STORE has no scheme for a file's content; the provider's decoder
     * takes the TSS2 PEM (as it does for any program reading the file). */
    dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, NULL, OSSL_KEYMGMT_SELECT_PRIVATE_KEY,
                                         s->libctx, "?provider=" MKS_PROVIDER_NAME);
    if (dctx == NULL || !OSSL_DECODER_CTX_set_passphrase_ui(dctx, s->tpm_ui_method, &s->tpm_auth)) {
        cli_fail_ossl(s->cmd, "cannot set up a decoder for TPM key %s", s->tpm_auth.key_name);
        goto done;
    }
    if (!OSSL_DECODER_from_data(dctx, &p, &len) || pkey == NULL) {
        cli_fail_ossl(s->cmd, "the %s provider cannot load TPM key %s", MKS_PROVIDER_NAME,
                      s->tpm_auth.key_name);
        goto done;
    }
    *out = pkey;
    pkey = NULL;
    ok = 1;
done:
    EVP_PKEY_free(pkey);
    OSSL_DECODER_CTX_free(dctx);
    return ok;
}

/* The name of a key in messages: its label and token, or the TPM key's name. */
static void key_display_name(const cli_session *s, mks_key *key, char *buf, size_t size)
{
    const char *uri = mks_key_get0_uri(key);

    if (strcmp(mks_key_get0_token_label(key), "TPM") == 0 || uri == NULL)
        snprintf(buf, size, "TPM key %s",
                 s->tpm_auth.key_name != NULL ? s->tpm_auth.key_name
                 : uri != NULL                ? uri
                                              : "");
    else
        snprintf(buf, size, "key '%s' (token '%s')", mks_key_get0_label(key),
                 mks_key_get0_token_label(key));
}

int cli_session_make_csr(cli_session *s, mks_key *key, const cli_csr_req *req, char **pem,
                         size_t *pem_len)
{
    EVP_PKEY *pkey = NULL;
    const unsigned char *spki;
    size_t spki_len = 0;
    char name[300];
    cli_err err;
    int ok = 0;

    *pem = NULL;
    *pem_len = 0;
    key_display_name(s, key, name, sizeof(name));
    spki = mks_key_get0_spki(key, &spki_len);
    if (spki == NULL || spki_len == 0) {
        cli_fail(s->cmd, "the keystore knows no public key for %s", name);
        return 0;
    }
    if (mks_key_get0_uri(key) != NULL) {
        if (!cli_session_load_pkey(s, mks_key_get0_uri(key), &pkey))
            return 0;
    } else if (s->tpm_pem != NULL) {
        if (!cli_session_decode_tpm_pkey(s, s->tpm_pem, s->tpm_pem_len, &pkey))
            return 0;
    } else {
        cli_fail(s->cmd, "%s has no URI and no key file the provider could load it from", name);
        return 0;
    }
    if (!cli_csr_make(s->libctx, req, spki, spki_len, pkey,
                      cli_csr_digest(mks_key_get_type(key), mks_key_get0_curve(key)), pem, pem_len,
                      &err)) {
        cli_fail(s->cmd, "CSR for %s: %s", name, err.msg);
        goto done;
    }
    ok = 1;
done:
    EVP_PKEY_free(pkey);
    return ok;
}

/* The choices a command accepts: --slot and --token, or (slot_ok 0) --token only. */
static void list_choices(const char *cmd, const mks_slot_info *slots, size_t count, int slot_ok)
{
    const char *what = slot_ok ? "slot" : "token";
    size_t i;
    int any = 0;

    for (i = 0; i < count; i++) {
        if (slots[i].index < 0)
            continue;
        if (!any)
            fprintf(stderr, "%s %s: %ss that can hold keys:\n", CLI_PROGRAM, cmd, what);
        any = 1;
        if (slot_ok)
            fprintf(stderr, "  --slot %d   --token '%s'   (%s)\n", slots[i].index,
                    slots[i].token_label, slots[i].slot_description);
        else
            fprintf(stderr, "  --token '%s'   (%s)\n", slots[i].token_label,
                    slots[i].slot_description);
    }
    if (!any)
        fprintf(stderr, "%s %s: no %s of this module can hold keys; see '%s list'\n", CLI_PROGRAM,
                cmd, what, CLI_PROGRAM);
}

int cli_session_find_token(cli_session *s, int slot_index, const char *label, int slot_ok,
                           char **token_uri, char token_label[33])
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
                list_choices(s->cmd, slots, count, slot_ok);
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
        list_choices(s->cmd, slots, count, slot_ok);
        goto done;
    }
    if (matches > 1) {
        if (slot_ok)
            cli_fail(s->cmd, "%d tokens are labelled '%s'; choose one with --slot", matches, label);
        else
            cli_fail(s->cmd,
                     "%d tokens are labelled '%s' and --token cannot tell them apart: give each "
                     "token its own label",
                     matches, label);
        list_choices(s->cmd, slots, count, slot_ok);
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

/* ---- keys named on the command line ------------------------------------------ */

void cli_key_arg_clear(cli_key_arg *ka)
{
    free(ka->uri);
    free(ka->pem);
    if (ka->der != NULL)
        OPENSSL_clear_free(ka->der, ka->der_len);
    memset(ka, 0, sizeof(*ka));
}

/* One PEM block of der under label; *pem malloc'd and NUL-terminated. */
static int pem_block(const char *label, const unsigned char *der, size_t der_len, char **pem,
                     size_t *pem_len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    long n;
    int ok = 0;

    *pem = NULL;
    if (bio != NULL && PEM_write_bio(bio, label, "", der, (long)der_len) > 0 &&
        (n = BIO_get_mem_data(bio, &data)) > 0 && (*pem = strndup(data, (size_t)n)) != NULL) {
        *pem_len = (size_t)n;
        ok = 1;
    }
    BIO_free(bio);
    return ok;
}

int cli_key_arg_parse(const char *arg, cli_key_arg *out, cli_err *err)
{
    unsigned char *data = NULL, *der = NULL;
    char *name = NULL, *header = NULL;
    size_t len = 0;
    long der_len = 0;
    BIO *bio = NULL;
    mks_tss2_key tk = {0};
    cli_err rerr;
    uint32_t handle;
    int ok = 0;
    mks_rv rv;

    memset(out, 0, sizeof(*out));
    out->arg = arg;
    if (strncasecmp(arg, "pkcs11:", 7) == 0 ||
        strncasecmp(arg, MKS_TPM_URI_SCHEME, strlen(MKS_TPM_URI_SCHEME)) == 0) {
        out->kind = arg[0] == 'p' || arg[0] == 'P' ? CLI_KEY_PKCS11 : CLI_KEY_TPM_HANDLE;
        if (out->kind == CLI_KEY_TPM_HANDLE &&
            (strncmp(arg, MKS_TPM_URI_SCHEME "handle=", strlen(MKS_TPM_URI_SCHEME) + 7) != 0 ||
             mks_tpm_parse_handle(arg + strlen(MKS_TPM_URI_SCHEME) + 7, &handle) != MKS_OK)) {
            cli_err_set(err,
                        "--key %s: a TPM key URI is tpmkey:handle=HANDLE with a persistent "
                        "handle 0x81000000..0x81FFFFFF",
                        arg);
            return 0;
        }
        out->uri = strdup(arg);
        if (out->uri == NULL)
            cli_err_set(err, "out of memory");
        return out->uri != NULL;
    }
    if (!cli_read_file(arg, 1 << 16, &data, &len, &rerr)) {
        cli_err_set(err,
                    "--key '%s' is neither a pkcs11: or tpmkey: URI nor a readable key "
                    "reference or TPM key file (%s)",
                    arg, rerr.msg);
        return 0;
    }
    bio = BIO_new_mem_buf(data, (int)len);
    if (bio == NULL || !PEM_read_bio(bio, &name, &header, &der, &der_len)) {
        ERR_clear_error();
        cli_err_set(err,
                    "--key %s: not a PEM file (expected a key reference, '-----BEGIN %s-----', "
                    "or a TPM key, '-----BEGIN %s-----')",
                    arg, MKS_KEYREF_PEM_LABEL, MKS_TSS2_PEM_LABEL);
        goto done;
    }
    if (strcmp(name, MKS_TSS2_PEM_LABEL) == 0) {
        rv = mks_tss2_decode_der(der, (size_t)der_len, &tk);
        if (rv != MKS_OK) {
            cli_err_set(err, "--key %s: a malformed TPM key file: %s", arg,
                        *mks_last_error() != '\0' ? mks_last_error() : mks_rv_name(rv));
            goto done;
        }
        out->kind = CLI_KEY_TPM_FILE;
        out->needs_password = !tk.empty_auth;
        /* The provider decodes the PEM again: hand it only this block. */
        if (!pem_block(MKS_TSS2_PEM_LABEL, der, (size_t)der_len, &out->pem, &out->pem_len)) {
            cli_err_set(err, "out of memory");
            goto done;
        }
        out->der = der;
        out->der_len = (size_t)der_len;
        der = NULL;
        ok = 1;
        goto done;
    }
    if (strcmp(name, MKS_KEYREF_PEM_LABEL) != 0) {
        if (strstr(name, "PRIVATE KEY") != NULL)
            cli_err_set(err,
                        "--key %s holds a software private key (%s), not a reference to a "
                        "token key or a TPM key",
                        arg, name);
        else
            cli_err_set(err, "--key %s holds a %s, not a key reference (%s) or a TPM key (%s)", arg,
                        name, MKS_KEYREF_PEM_LABEL, MKS_TSS2_PEM_LABEL);
        goto done;
    }
    out->kind = CLI_KEY_PKCS11;
    rv = mks_keyref_decode_der(der, (size_t)der_len, &out->uri);
    if (rv != MKS_OK) {
        out->uri = NULL;
        cli_err_set(err, "--key %s: a malformed key reference: %s", arg,
                    *mks_last_error() != '\0' ? mks_last_error() : mks_rv_name(rv));
        goto done;
    }
    ok = 1;
done:
    mks_tss2_key_clear(&tk);
    BIO_free(bio);
    OPENSSL_free(name);
    OPENSSL_free(header);
    if (der != NULL)
        OPENSSL_clear_free(der, (size_t)der_len);
    free(data);
    if (!ok)
        cli_key_arg_clear(out);
    return ok;
}

/*
 * One signature over a fixed digest with a TPM key the CLI just opened: it
 * checks, where the error can still name the key file, the password source
 * and the TCTI, what the provider would otherwise only find when it signs
 * (no TPM on the TCTI, a key file made under another TPM, a wrong password).
 */
static int tpm_key_check(cli_session *s, mks_key *key)
{
    static const unsigned char sha256_info[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                                0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                                0x01, 0x05, 0x00, 0x04, 0x20};
    unsigned char in[sizeof(sha256_info) + 32], sig[512];
    mks_mech_params mp = {MKS_MECH_ECDSA, MKS_HASH_SHA256, MKS_HASH_NONE, 0, NULL, 0};
    size_t inlen = 32, siglen = sizeof(sig);
    mks_rv rv;

    memset(in, 0, sizeof(in));
    if (mks_key_get_type(key) == MKS_KEY_RSA) {
        mp.mech = MKS_MECH_RSA_PKCS1;
        memcpy(in, sha256_info, sizeof(sha256_info));
        inlen = sizeof(in);
    }
    rv = mks_key_sign(key, &mp, in, inlen, sig, &siglen);
    if (rv != MKS_OK) {
        cli_session_fail_tpm(s, rv, "TPM key %s cannot sign", s->tpm_auth.key_name);
        return 0;
    }
    return 1;
}

int cli_session_open_key(cli_session *s, const cli_key_arg *ka, mks_key **out)
{
    mks_key *key = NULL;
    mks_rv rv;

    *out = NULL;
    if (ka->kind == CLI_KEY_PKCS11) {
        rv = mks_key_open(s->ks, ka->uri, &s->pin_ui, &key);
        if (rv != MKS_OK) {
            if (rv == MKS_ERR_NOT_FOUND)
                cli_fail(s->cmd, "no private key matches %s (see '%s list')", ka->uri, CLI_PROGRAM);
            else
                cli_fail_ks(s->cmd, rv, "cannot open the key %s", ka->uri);
            return 0;
        }
        *out = key;
        return 1;
    }

    s->tpm_auth.key_name = ka->arg;
    if ((ka->kind == CLI_KEY_TPM_HANDLE || ka->needs_password) && !tpm_auth_load(s))
        return 0;
    if (ka->kind == CLI_KEY_TPM_HANDLE) {
        rv = mks_tpm_key_open_uri(s->ks, ka->uri, &s->tpm_ui, &key);
    } else {
        rv = mks_tpm_key_open_der(s->ks, ka->der, ka->der_len, &s->tpm_ui, &key);
    }
    if (rv != MKS_OK) {
        if (rv == MKS_ERR_NOT_FOUND)
            cli_session_fail_tpm(s, rv, "no key at %s (see '%s list --tpm')", ka->uri, CLI_PROGRAM);
        else
            cli_session_fail_tpm(s, rv, "cannot open TPM key %s", ka->arg);
        return 0;
    }
    if (!tpm_key_check(s, key)) {
        mks_key_free(key);
        return 0;
    }
    if (ka->kind == CLI_KEY_TPM_FILE) {
        free(s->tpm_pem);
        s->tpm_pem = strndup(ka->pem, ka->pem_len);
        if (s->tpm_pem == NULL) {
            cli_fail(s->cmd, "out of memory");
            mks_key_free(key);
            return 0;
        }
        s->tpm_pem_len = ka->pem_len;
    }
    *out = key;
    return 1;
}

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
    if (s->tpm_ui_method != NULL)
        UI_destroy_method(s->tpm_ui_method);
    free(s->tpm_pem);
    OPENSSL_cleanse(&s->tpm_auth, sizeof(s->tpm_auth));
    if (s->ks != NULL)
        mks_ctx_free(s->ks);
    cli_pin_wipe(&s->pin);
    cli_config_clear(&s->conf);
    memset(s, 0, sizeof(*s));
}
