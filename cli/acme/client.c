/*
 * The ACME conversation: the directory, anti-replay nonces, signed POSTs
 * and the CA's problem documents (RFC 7807), and the account.
 *
 * Every answer carries the next nonce, so only the first request of a run
 * asks newNonce. A badNonce answer is retried with the nonce it carries
 * (CAs reject valid nonces at will: pebble 5% by default). A problem is
 * reported with its type and detail and the request that got it.
 */
#include "acme.h"

#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include <openssl/crypto.h>

#include "pin.h"

#define ACME_ERR "urn:ietf:params:acme:error:"
/* badNonce retries per request: at a 50% rejection rate, 1 in 30 million
 * requests still fails. */
#define ACME_NONCE_RETRIES 25

const char *acme_jstr(json_object *o, const char *key)
{
    json_object *v;

    if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* What to do about a problem type, when there is something to say. */
static const char *problem_hint(const char *type)
{
    static const struct {
        const char *type, *hint;
    } hints[] = {
        {"externalAccountRequired", "the CA requires external account binding: give "
                                    "--acme-eab-kid KID --acme-eab-hmac-file FILE (from the CA)"},
        {"unauthorized", "the CA refused the request (a wrong EAB key, or an account that may "
                         "not order these names)"},
        {"rejectedIdentifier", "the CA will not issue for this name: change --san"},
        {"unsupportedIdentifier", "the CA does not issue for this kind of name (IP addresses "
                                  "need RFC 8738 support)"},
        {"rateLimited", "the CA limits how often it issues: try again later"},
        {"badCSR", "the CA refused the CSR"},
        {"caa", "a CAA record of the name forbids this CA"},
        {"userActionRequired", "the CA wants something done by a person (see its instance URL)"},
        {"invalidContact", "--contact must be a mailto: address the CA accepts"},
        {"unsupportedContact", "--contact must be a mailto: address the CA accepts"},
        {"badSignatureAlgorithm", "the CA does not take this account key type: use an EC P-256 "
                                  "account key"},
    };
    size_t i, n = strlen(ACME_ERR);

    if (type == NULL || strncmp(type, ACME_ERR, n) != 0)
        return NULL;
    for (i = 0; i < sizeof(hints) / sizeof(hints[0]); i++)
        if (strcmp(type + n, hints[i].type) == 0)
            return hints[i].hint;
    return NULL;
}

/* err = "WHAT (METHOD URL): HTTP N: TYPE: DETAIL[; hint]". *type gets the type. */
static void problem_error(const acme_resp *r, const char *method, const char *url, const char *what,
                          char *type, size_t type_size, cli_err *err)
{
    json_object *doc = r->body != NULL ? json_tokener_parse(r->body) : NULL;
    const char *t = acme_jstr(doc, "type"), *detail = acme_jstr(doc, "detail"),
               *hint = problem_hint(t);

    snprintf(type, type_size, "%s", t != NULL ? t : "");
    if (t != NULL)
        cli_err_set(err, "%s (%s %s): HTTP %ld: %s: %s%s%s", what, method, url, r->status, t,
                    detail != NULL ? detail : "(no detail)", hint != NULL ? "; " : "",
                    hint != NULL ? hint : "");
    else
        cli_err_set(err, "%s (%s %s): HTTP %ld, and no ACME problem document (%.200s)", what,
                    method, url, r->status, r->body != NULL ? r->body : "");
    json_object_put(doc);
}

static int fresh_nonce(acme_client *c, cli_err *err)
{
    acme_resp r = {0};
    int ok = 0;

    if (!acme_http_do(c->http, c->new_nonce, NULL, 1, NULL, &r, err))
        goto done;
    c->requests++;
    if (r.nonce[0] == '\0') {
        cli_err_set(err, "%s (newNonce): HTTP %ld and no Replay-Nonce header: not an ACME CA?",
                    c->new_nonce, r.status);
        goto done;
    }
    snprintf(c->nonce, sizeof(c->nonce), "%s", r.nonce);
    ok = 1;
done:
    acme_resp_clear(&r);
    return ok;
}

int acme_post(acme_client *c, acme_signer *sg, int use_jwk, const char *url, const char *payload,
              const char *accept, const char *what, acme_resp *r, cli_err *err)
{
    char *jws = NULL, type[160] = "";
    int tries, ok = 0;

    c->problem[0] = '\0';
    for (tries = 0; tries <= ACME_NONCE_RETRIES; tries++) {
        if (c->nonce[0] == '\0' && !fresh_nonce(c, err))
            goto done;
        free(jws);
        if (!acme_jws(sg, use_jwk ? NULL : c->account_url, c->nonce, url, payload, &jws, err))
            goto done;
        c->nonce[0] = '\0'; /* used */
        if (!acme_http_do(c->http, url, jws, 0, accept, r, err)) {
            cli_err_set(err, "%s: %.600s", what, err->msg);
            goto done;
        }
        c->requests++;
        if (r->nonce[0] != '\0')
            snprintf(c->nonce, sizeof(c->nonce), "%s", r->nonce);
        if (r->status < 400) {
            ok = 1;
            goto done;
        }
        problem_error(r, "POST", url, what, type, sizeof(type), err);
        snprintf(c->problem, sizeof(c->problem), "%s", type);
        if (strcmp(type, ACME_ERR "badNonce") != 0)
            break;
        c->bad_nonces++;
    }
    if (strcmp(type, ACME_ERR "accountDoesNotExist") == 0)
        c->account_gone = 1;
    else if (strcmp(type, ACME_ERR "badNonce") == 0)
        cli_err_set(err, "%.600s (rejected %d times running with fresh nonces)", err->msg,
                    ACME_NONCE_RETRIES + 1);
done:
    free(jws);
    return ok;
}

int acme_client_open(acme_client *c, const acme_state *st, acme_signer *account, cli_err *err)
{
    json_object *dir = NULL, *meta;
    acme_resp r = {0};
    const char *v[4];
    int ok = 0;

    memset(c, 0, sizeof(*c));
    c->st = st;
    c->account = account;
    if (st->account_url != NULL && (c->account_url = strdup(st->account_url)) == NULL) {
        cli_err_set(err, "out of memory");
        return 0;
    }
    if (!acme_http_new(st->ca_bundle, st->timeout, &c->http, err))
        goto done;
    acme_status("asking the CA for its directory");
    if (!acme_http_do(c->http, st->directory, NULL, 0, NULL, &r, err))
        goto done;
    c->requests++;
    if (r.status != 200 || (dir = json_tokener_parse(r.body)) == NULL ||
        !json_object_is_type(dir, json_type_object)) {
        cli_err_set(err,
                    "%s: HTTP %ld, not an ACME directory (a JSON object with newNonce, "
                    "newAccount, newOrder): check the URL",
                    st->directory, r.status);
        goto done;
    }
    v[0] = acme_jstr(dir, "newNonce");
    v[1] = acme_jstr(dir, "newAccount");
    v[2] = acme_jstr(dir, "newOrder");
    v[3] = acme_jstr(dir, "revokeCert");
    if (v[0] == NULL || v[1] == NULL || v[2] == NULL) {
        cli_err_set(err, "%s is not an ACME directory: newNonce, newAccount or newOrder missing",
                    st->directory);
        goto done;
    }
    c->new_nonce = strdup(v[0]);
    c->new_account = strdup(v[1]);
    c->new_order = strdup(v[2]);
    c->revoke_cert = v[3] != NULL ? strdup(v[3]) : NULL;
    if (c->new_nonce == NULL || c->new_account == NULL || c->new_order == NULL ||
        (v[3] != NULL && c->revoke_cert == NULL)) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    if (json_object_object_get_ex(dir, "meta", &meta)) {
        json_object *req;

        c->eab_required = json_object_object_get_ex(meta, "externalAccountRequired", &req) &&
                          json_object_get_boolean(req);
    }
    ok = 1;
done:
    json_object_put(dir);
    acme_resp_clear(&r);
    if (!ok)
        acme_client_close(c);
    return ok;
}

void acme_client_close(acme_client *c)
{
    acme_http_free(c->http);
    free(c->new_nonce);
    free(c->new_account);
    free(c->new_order);
    free(c->revoke_cert);
    free(c->account_url);
    memset(c, 0, sizeof(*c));
}

/* The externalAccountBinding member, from the MAC key file (wiped after). */
static int eab_member(acme_client *c, json_object *payload, cli_err *err)
{
    const acme_state *st = c->st;
    char line[CLI_PIN_MAX];
    size_t len = 0, mac_len = 0;
    unsigned char *mac = NULL;
    char *jws = NULL;
    json_object *o = NULL;
    int ok = 0;
    mks_rv rv;

    /* The MAC key is a secret: read as the PIN is (read(2), wiped). */
    rv = mks_pin_from_source(st->eab_hmac_file, line, sizeof(line), &len);
    if (rv != MKS_OK) {
        cli_err_set(err, "--acme-eab-hmac-file: cannot read the MAC key: %s", mks_last_error());
        goto done;
    }
    if (!acme_b64url_decode(line, &mac, &mac_len) || mac_len == 0) {
        cli_err_set(err, "--acme-eab-hmac-file: not a base64url MAC key (as the CA gives it)");
        goto done;
    }
    if (!acme_eab_jws(st->eab_kid, mac, mac_len, c->account->jwk, c->new_account, &jws, err))
        goto done;
    o = json_tokener_parse(jws);
    if (o == NULL || json_object_object_add(payload, "externalAccountBinding", o) != 0) {
        json_object_put(o);
        cli_err_set(err, "out of memory");
        goto done;
    }
    ok = 1;
done:
    OPENSSL_cleanse(line, sizeof(line));
    if (mac != NULL)
        OPENSSL_clear_free(mac, mac_len);
    free(jws);
    return ok;
}

int acme_account(acme_client *c, cli_err *err)
{
    const acme_state *st = c->st;
    json_object *payload = json_object_new_object(), *contact = NULL;
    acme_resp r = {0};
    int ok = 0;

    if (payload == NULL ||
        json_object_object_add(payload, "termsOfServiceAgreed", json_object_new_boolean(1)) != 0)
        goto oom;
    if (st->contact != NULL) {
        contact = json_object_new_array();
        if (contact == NULL ||
            json_object_array_add(contact, json_object_new_string(st->contact)) != 0 ||
            json_object_object_add(payload, "contact", contact) != 0) {
            json_object_put(contact);
            goto oom;
        }
    }
    if (st->eab_kid != NULL && !eab_member(c, payload, err))
        goto done;
    acme_status("registering the ACME account");
    if (!acme_post(c, c->account, 1, c->new_account,
                   json_object_to_json_string_ext(payload, JSON_C_TO_STRING_PLAIN |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE),
                   NULL, "registering the ACME account", &r, err)) {
        if (c->eab_required && st->eab_kid == NULL && strstr(err->msg, "externalAccount") == NULL)
            cli_err_set(err,
                        "%.600s; the directory says the CA requires external account "
                        "binding: give --acme-eab-kid KID --acme-eab-hmac-file FILE",
                        err->msg);
        goto done;
    }
    if (r.location[0] == '\0') {
        cli_err_set(err,
                    "registering the ACME account (POST %s): HTTP %ld without the account "
                    "URL (Location)",
                    c->new_account, r.status);
        goto done;
    }
    free(c->account_url);
    c->account_url = strdup(r.location);
    if (c->account_url == NULL)
        goto oom;
    c->account_created = r.status == 201;
    c->account_gone = 0;
    ok = 1;
    goto done;
oom:
    cli_err_set(err, "out of memory");
done:
    json_object_put(payload);
    acme_resp_clear(&r);
    return ok;
}
