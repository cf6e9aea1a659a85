/*
 * One certificate from an ACME CA (RFC 8555 section 7.4): a new order for
 * the SANs, the authorizations it needs answered (the responder runs only
 * while they are pending), polling with the CA's Retry-After, finalize
 * with the CSR signed in hardware, and the chain downloaded. The leaf must
 * certify the hardware key; anything else is refused before it can be
 * installed.
 */
#include "acme.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <json-c/json.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "lifecycle.h"

/* Polling: first after 100 ms, doubling up to 2 s, unless the CA says. */
#define POLL_FIRST_MS 100
#define POLL_MAX_MS 2000

typedef struct order_ctx {
    acme_client *c;
    char *url; /* the order's URL */
    json_object *order;
    acme_pending *pend;
    size_t npend;
    int refused; /* the CA could not validate an identifier */
} order_ctx;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A POST whose answer is a JSON object; *out owns it. */
static int post_json(acme_client *c, const char *url, const char *payload, const char *what,
                     json_object **out, acme_resp *r, cli_err *err)
{
    *out = NULL;
    if (!acme_post(c, c->account, 0, url, payload, NULL, what, r, err))
        return 0;
    *out = json_tokener_parse(r->body);
    if (*out == NULL || !json_object_is_type(*out, json_type_object)) {
        json_object_put(*out);
        *out = NULL;
        cli_err_set(err, "%s (POST %s): HTTP %ld, and the answer is not a JSON object", what, url,
                    r->status);
        return 0;
    }
    return 1;
}

/* "type: detail" of a problem object inside an ACME object, into buf. */
static void problem_of(json_object *o, char *buf, size_t size)
{
    json_object *p;

    if (o != NULL && json_object_object_get_ex(o, "error", &p))
        snprintf(buf, size, "%s: %s",
                 acme_jstr(p, "type") != NULL ? acme_jstr(p, "type") : "(no type)",
                 acme_jstr(p, "detail") != NULL ? acme_jstr(p, "detail") : "(no detail)");
    else
        snprintf(buf, size, "the CA gave no reason");
}

/*
 * POST-as-GET url until its status leaves `waiting` (a '|'-separated list),
 * waiting as the CA's Retry-After says or with a growing interval, for at
 * most ten request timeouts. *out is the last object.
 */
static int poll_until(order_ctx *o, const char *url, const char *waiting, const char *what,
                      json_object **out, cli_err *err)
{
    acme_client *c = o->c;
    double deadline = now_s() + 10.0 * (c->st->timeout > 0 ? c->st->timeout : ACME_DEFAULT_TIMEOUT);
    long wait_ms = POLL_FIRST_MS;
    acme_resp r = {0};
    char want[64];
    int ok = 0;

    *out = NULL;
    for (;;) {
        const char *status;

        json_object_put(*out);
        if (!post_json(c, url, NULL, what, out, &r, err))
            goto done;
        status = acme_jstr(*out, "status");
        if (status == NULL) {
            cli_err_set(err, "%s (POST %s): the answer has no status", what, url);
            goto done;
        }
        snprintf(want, sizeof(want), "|%s|", status);
        if (strstr(waiting, want) == NULL)
            break;
        if (now_s() > deadline) {
            cli_err_set(err,
                        "%s: still '%s' after %.0f s (POST %s); the CA is slow or stuck: run "
                        "again later (what is made so far is kept)",
                        what, status, 10.0 * c->st->timeout, url);
            goto done;
        }
        if (r.retry_after >= 0) {
            long ms = r.retry_after * 1000L;

            if (ms > (long)((deadline - now_s()) * 1000))
                ms = (long)((deadline - now_s()) * 1000) + 1;
            acme_sleep_ms(ms > 0 ? ms : POLL_FIRST_MS);
        } else {
            acme_sleep_ms(wait_ms);
            wait_ms = wait_ms * 2 > POLL_MAX_MS ? POLL_MAX_MS : wait_ms * 2;
        }
    }
    ok = 1;
done:
    acme_resp_clear(&r);
    return ok;
}

/* The newOrder payload: one identifier per SAN (dns, or ip per RFC 8738). */
static char *order_payload(const acme_state *st)
{
    json_object *p = json_object_new_object(), *ids = json_object_new_array();
    char *s = NULL;
    size_t i;

    if (p == NULL || ids == NULL || json_object_object_add(p, "identifiers", ids) != 0) {
        json_object_put(ids);
        goto done;
    }
    for (i = 0; i < st->nsans; i++) {
        json_object *id = json_object_new_object();
        int ip = strncasecmp(st->sans[i], "IP:", 3) == 0;

        if (id == NULL || json_object_array_add(ids, id) != 0) {
            json_object_put(id);
            goto done;
        }
        json_object_object_add(id, "type", json_object_new_string(ip ? "ip" : "dns"));
        json_object_object_add(id, "value", json_object_new_string(st->sans[i] + (ip ? 3 : 4)));
    }
    s = strdup(
        json_object_to_json_string_ext(p, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
done:
    json_object_put(p);
    return s;
}

static const char *chal_name(acme_chal_type t)
{
    return t == ACME_CHAL_DNS01 ? "dns-01" : "http-01";
}

/* What the user can do when a challenge failed, for each kind of responder. */
static const char *chal_hint(const acme_state *st)
{
    switch (st->chal) {
    case ACME_CHAL_HTTP01:
        return "the CA fetches http://NAME/.well-known/acme-challenge/TOKEN (port 80 for a "
               "public CA): --http-01 must listen where that reaches";
    case ACME_CHAL_WEBROOT:
        return "the web server must serve --webroot's .well-known/acme-challenge/ at "
               "http://NAME/.well-known/acme-challenge/";
    case ACME_CHAL_DNS01:
        return "the --dns-01-hook must publish the TXT record _acme-challenge.NAME, and return "
               "once the CA's resolvers can see it";
    case ACME_CHAL_NONE:
        break;
    }
    return "";
}

static void pending_clear(acme_pending *p)
{
    free(p->identifier);
    free(p->domain);
    free(p->token);
    free(p->key_auth);
    free(p->chal_url);
    free(p->authz_url);
    memset(p, 0, sizeof(*p));
}

static void order_clear(order_ctx *o)
{
    size_t i;

    for (i = 0; i < o->npend; i++)
        pending_clear(&o->pend[i]);
    free(o->pend);
    free(o->url);
    json_object_put(o->order);
    o->pend = NULL;
    o->npend = 0;
    o->refused = 0;
    o->url = NULL;
    o->order = NULL;
}

/* Reads one authorization; a pending one adds the challenge to answer. */
static int read_authz(order_ctx *o, const char *url, cli_err *err)
{
    acme_client *c = o->c;
    json_object *az = NULL, *id, *chals, *ch = NULL;
    const char *status, *want = chal_name(c->st->chal), *type, *value;
    char offered[200] = "";
    acme_resp r = {0};
    acme_pending *p;
    size_t i, n;
    int ok = 0;

    if (!post_json(c, url, NULL, "reading an authorization", &az, &r, err))
        goto done;
    status = acme_jstr(az, "status");
    json_object_object_get_ex(az, "identifier", &id);
    type = acme_jstr(id, "type");
    value = acme_jstr(id, "value");
    if (status == NULL || type == NULL || value == NULL) {
        cli_err_set(err, "authorization %s: no status or identifier", url);
        goto done;
    }
    if (strcmp(status, "valid") == 0) {
        ok = 1; /* answered before (the CA reuses authorizations) */
        goto done;
    }
    if (strcmp(status, "pending") != 0) {
        char why[400];

        problem_of(az, why, sizeof(why));
        cli_err_set(err, "the authorization for %s:%s is '%s' (%s): %s",
                    strcmp(type, "ip") == 0 ? "IP" : "DNS", value, status, url, why);
        goto done;
    }
    n = json_object_object_get_ex(az, "challenges", &chals) ? json_object_array_length(chals) : 0;
    for (i = 0; i < n && ch == NULL; i++) {
        json_object *x = json_object_array_get_idx(chals, i);
        const char *t = acme_jstr(x, "type");

        if (t != NULL && strcmp(t, want) == 0)
            ch = x;
        else if (t != NULL)
            snprintf(offered + strlen(offered), sizeof(offered) - strlen(offered), "%s%s",
                     *offered != '\0' ? ", " : "", t);
    }
    if (ch == NULL || acme_jstr(ch, "url") == NULL || acme_jstr(ch, "token") == NULL) {
        cli_err_set(err, "the CA offers no %s challenge for %s:%s (it offers: %s)%s", want,
                    strcmp(type, "ip") == 0 ? "IP" : "DNS", value, *offered ? offered : "none",
                    c->st->chal == ACME_CHAL_DNS01 ? "; IP addresses cannot be validated by DNS"
                                                   : "; wildcards need --dns-01-hook");
        goto done;
    }
    p = realloc(o->pend, (o->npend + 1) * sizeof(*p));
    if (p == NULL)
        goto oom;
    o->pend = p;
    p = &o->pend[o->npend++];
    memset(p, 0, sizeof(*p));
    if (asprintf(&p->identifier, "%s:%s", strcmp(type, "ip") == 0 ? "IP" : "DNS", value) < 0)
        p->identifier = NULL;
    p->domain = strdup(value);
    p->token = strdup(acme_jstr(ch, "token"));
    p->chal_url = strdup(acme_jstr(ch, "url"));
    p->authz_url = strdup(url);
    if (asprintf(&p->key_auth, "%s.%s", acme_jstr(ch, "token"), c->account->thumbprint) < 0)
        p->key_auth = NULL;
    if (p->identifier == NULL || p->domain == NULL || p->token == NULL || p->chal_url == NULL ||
        p->authz_url == NULL || p->key_auth == NULL)
        goto oom;
    ok = 1;
    goto done;
oom:
    cli_err_set(err, "out of memory");
done:
    json_object_put(az);
    acme_resp_clear(&r);
    return ok;
}

/* Tells the CA each challenge is ready, then waits for each authorization. */
static int answer_challenges(order_ctx *o, cli_err *err)
{
    acme_client *c = o->c;
    acme_responder *resp = NULL;
    json_object *obj = NULL;
    acme_resp r = {0};
    size_t i;
    int ok = 0;

    if (!acme_responder_start(c->st, o->pend, o->npend, &resp, err))
        return 0;
    for (i = 0; i < o->npend; i++) {
        acme_status("asking the CA to validate %s (%s)", o->pend[i].identifier,
                    chal_name(c->st->chal));
        if (!acme_post(c, c->account, 0, o->pend[i].chal_url, "{}", NULL, "answering a challenge",
                       &r, err))
            goto done;
    }
    for (i = 0; i < o->npend; i++) {
        const char *status;

        acme_status("the CA is validating %s (%s)", o->pend[i].identifier, chal_name(c->st->chal));
        json_object_put(obj);
        if (!poll_until(o, o->pend[i].authz_url, "|pending|", "waiting for validation", &obj, err))
            goto done;
        status = acme_jstr(obj, "status");
        if (strcmp(status, "valid") != 0) {
            json_object *chals, *ch;
            char why[500] = "the CA gave no reason";
            size_t k, n = json_object_object_get_ex(obj, "challenges", &chals)
                              ? json_object_array_length(chals)
                              : 0;

            for (k = 0; k < n; k++) {
                ch = json_object_array_get_idx(chals, k);
                if (json_object_object_get_ex(ch, "error", NULL))
                    problem_of(ch, why, sizeof(why));
            }
            o->refused = 1;
            cli_err_set(err, "the CA could not validate %s (%s, authorization %s is '%s'): %s; %s",
                        o->pend[i].identifier, chal_name(c->st->chal), o->pend[i].authz_url, status,
                        why, chal_hint(c->st));
            goto done;
        }
    }
    ok = 1;
done:
    json_object_put(obj);
    acme_resp_clear(&r);
    acme_responder_stop(resp);
    return ok;
}

/* The order is invalid (or otherwise not what we wait for): say why. */
static void order_failed(order_ctx *o, json_object *ord, const char *when, cli_err *err)
{
    char why[500];

    problem_of(ord, why, sizeof(why));
    cli_err_set(err, "the order %s is '%s' %s: %s", o->url,
                acme_jstr(ord, "status") != NULL ? acme_jstr(ord, "status") : "?", when, why);
}

/* Finalize with the CSR, wait for the certificate, download the chain. */
static int finalize(order_ctx *o, const unsigned char *csr, size_t csr_len, char **chain,
                    cli_err *err)
{
    acme_client *c = o->c;
    const char *fin = acme_jstr(o->order, "finalize"), *status, *cert_url;
    json_object *ord = NULL;
    acme_resp r = {0};
    char *csr64 = NULL, *payload = NULL;
    int ok = 0;

    if (fin == NULL) {
        cli_err_set(err, "the order %s has no finalize URL", o->url);
        goto done;
    }
    csr64 = acme_b64url(csr, csr_len);
    if (csr64 == NULL || asprintf(&payload, "{\"csr\":\"%s\"}", csr64) < 0) {
        payload = NULL;
        cli_err_set(err, "out of memory");
        goto done;
    }
    /* With every authorization valid the order is ready: finalize at once.
     * A CA that is not there yet says orderNotReady, and is waited for. */
    acme_status("sending the CSR (finalize)");
    if (!post_json(c, fin, payload, "finalizing the order", &ord, &r, err)) {
        if (strcmp(c->problem, "urn:ietf:params:acme:error:orderNotReady") != 0)
            goto done;
        acme_status("waiting for the order to be ready");
        if (!poll_until(o, o->url, "|pending|", "waiting for the order", &ord, err))
            goto done;
        status = acme_jstr(ord, "status");
        if (strcmp(status, "ready") != 0) {
            order_failed(o, ord, "after validation", err);
            goto done;
        }
        json_object_put(ord);
        if (!post_json(c, fin, payload, "finalizing the order", &ord, &r, err))
            goto done;
    }
    acme_status("the CA is issuing the certificate");
    status = acme_jstr(ord, "status");
    if (status == NULL || strcmp(status, "valid") != 0 || acme_jstr(ord, "certificate") == NULL) {
        json_object_put(ord);
        if (!poll_until(o, o->url, "|pending|ready|processing|", "waiting for the certificate",
                        &ord, err))
            goto done;
    }
    cert_url = acme_jstr(ord, "certificate");
    if (strcmp(acme_jstr(ord, "status"), "valid") != 0 || cert_url == NULL) {
        order_failed(o, ord, "after finalize", err);
        goto done;
    }
    acme_status("downloading the certificate");
    if (!acme_post(c, c->account, 0, cert_url, NULL, "application/pem-certificate-chain",
                   "downloading the certificate", &r, err))
        goto done;
    *chain = r.body;
    r.body = NULL;
    ok = 1;
done:
    free(csr64);
    free(payload);
    json_object_put(ord);
    acme_resp_clear(&r);
    return ok;
}

/* The downloaded chain's leaf certifies the key in hardware (spki). */
static int leaf_matches(const char *chain, const unsigned char *spki, size_t spki_len, cli_err *err)
{
    BIO *bio = BIO_new_mem_buf(chain, -1);
    X509 *leaf = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    int ok = 0;

    ERR_clear_error();
    if (leaf == NULL)
        cli_err_set(err, "the CA's answer to the certificate download holds no PEM certificate");
    else if (!cli_cert_certifies(leaf, spki, spki_len))
        cli_err_set(err, "the certificate the CA issued certifies another public key than the "
                         "key in hardware: refused, nothing installed; report this to the CA");
    else
        ok = 1;
    X509_free(leaf);
    BIO_free(bio);
    return ok;
}

/* After a refused validation: what became of the order, for the message. */
static void append_order_status(order_ctx *o, cli_err *err)
{
    json_object *ord = NULL;
    acme_resp r = {0};
    cli_err ignored;
    size_t n = strlen(err->msg);

    if (post_json(o->c, o->url, NULL, "reading the order", &ord, &r, &ignored) &&
        acme_jstr(ord, "status") != NULL)
        snprintf(err->msg + n, sizeof(err->msg) - n,
                 "; the order %s is '%s' now: the next run places a new one", o->url,
                 acme_jstr(ord, "status"));
    json_object_put(ord);
    acme_resp_clear(&r);
}

static int order_once(order_ctx *o, const unsigned char *csr, size_t csr_len,
                      const unsigned char *spki, size_t spki_len, char **chain, cli_err *err)
{
    acme_client *c = o->c;
    json_object *auths;
    acme_resp r = {0};
    char *payload = order_payload(c->st);
    size_t i, n;
    int ok = 0;

    if (payload == NULL) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    acme_status("placing the order");
    if (!post_json(c, c->new_order, payload, "placing the order", &o->order, &r, err))
        goto done;
    if (r.location[0] == '\0' || (o->url = strdup(r.location)) == NULL) {
        cli_err_set(err, "placing the order (POST %s): HTTP %ld without the order's URL",
                    c->new_order, r.status);
        goto done;
    }
    n = json_object_object_get_ex(o->order, "authorizations", &auths)
            ? json_object_array_length(auths)
            : 0;
    for (i = 0; i < n; i++) {
        const char *url = json_object_get_string(json_object_array_get_idx(auths, i));

        acme_status("reading the authorizations");
        if (url == NULL || !read_authz(o, url, err))
            goto done;
    }
    if (o->npend > 0 && !answer_challenges(o, err)) {
        if (o->refused)
            append_order_status(o, err);
        goto done;
    }
    if (!finalize(o, csr, csr_len, chain, err))
        goto done;
    if (!leaf_matches(*chain, spki, spki_len, err)) {
        free(*chain);
        *chain = NULL;
        goto done;
    }
    ok = 1;
done:
    free(payload);
    acme_resp_clear(&r);
    return ok;
}

int acme_order(acme_client *c, const unsigned char *csr_der, size_t csr_len,
               const unsigned char *spki, size_t spki_len, acme_issued *out, cli_err *err)
{
    order_ctx o = {0};
    int attempt, ok = 0;

    memset(out, 0, sizeof(*out));
    o.c = c;
    for (attempt = 0; attempt < 2 && !ok; attempt++) {
        if (c->account_url == NULL && !acme_account(c, err))
            break;
        ok = order_once(&o, csr_der, csr_len, spki, spki_len, &out->chain_pem, err);
        order_clear(&o);
        if (ok || !c->account_gone)
            break;
        /* The CA forgot the account (pebble does at each restart; a CA may
         * be reset): the same key registers again, and the order starts over. */
        acme_status_clear();
        fprintf(stderr, "%s: the CA does not know the account %s any more: registering again\n",
                CLI_PROGRAM, c->account_url != NULL ? c->account_url : "");
        free(c->account_url);
        c->account_url = NULL;
    }
    acme_status_clear();
    return ok;
}

void acme_issued_clear(acme_issued *is)
{
    free(is->chain_pem);
    memset(is, 0, sizeof(*is));
}
