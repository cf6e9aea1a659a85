/*
 * HTTPS to the ACME CA through libcurl. One easy handle per run, so the
 * connection (and its TLS session) is reused for every request of an
 * enrollment. libcurl's TLS runs in OpenSSL's default library context,
 * which the CLI never lets load openssl.cnf: the CA connection uses the
 * default provider only, never the token.
 */
#include "acme.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#ifndef MTLSKS_VERSION
#define MTLSKS_VERSION "unknown"
#endif

struct acme_http {
    CURL *curl;
    int timeout;
    char *ca_bundle;
    char errbuf[CURL_ERROR_SIZE];
};

void acme_resp_clear(acme_resp *r)
{
    free(r->body);
    memset(r, 0, sizeof(*r));
    r->retry_after = -1;
}

int acme_http_new(const char *ca_bundle, int timeout, acme_http **out, cli_err *err)
{
    acme_http *h;

    *out = NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        cli_err_set(err, "cannot initialise libcurl");
        return 0;
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL || (h->curl = curl_easy_init()) == NULL) {
        free(h);
        curl_global_cleanup();
        cli_err_set(err, "cannot initialise libcurl (out of memory?)");
        return 0;
    }
    h->timeout = timeout > 0 ? timeout : ACME_DEFAULT_TIMEOUT;
    if (ca_bundle != NULL && (h->ca_bundle = strdup(ca_bundle)) == NULL) {
        acme_http_free(h);
        cli_err_set(err, "out of memory");
        return 0;
    }
    *out = h;
    return 1;
}

void acme_http_free(acme_http *h)
{
    if (h == NULL)
        return;
    curl_easy_cleanup(h->curl);
    free(h->ca_bundle);
    free(h);
    curl_global_cleanup();
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    acme_resp *r = arg;
    size_t len = size * n;
    char *b;

    /* A CA answers with kilobytes; a megabyte is someone else. */
    if (r->body_len + len > (1u << 20))
        return 0;
    b = realloc(r->body, r->body_len + len + 1);
    if (b == NULL)
        return 0;
    memcpy(b + r->body_len, p, len);
    r->body = b;
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return len;
}

/* Copies a header's value (trimmed) into buf when name matches. */
static int header_value(const char *line, size_t len, const char *name, char *buf, size_t size)
{
    size_t n = strlen(name), k;

    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return 0;
    line += n + 1;
    len -= n + 1;
    while (len > 0 && (*line == ' ' || *line == '\t')) {
        line++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)line[len - 1]))
        len--;
    k = len < size - 1 ? len : size - 1;
    memcpy(buf, line, k);
    buf[k] = '\0';
    return 1;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    acme_resp *r = arg;
    size_t len = size * n;
    char v[64];

    /* A new status line (after a redirect or 100 Continue) starts over. */
    if (len > 5 && strncmp(p, "HTTP/", 5) == 0) {
        r->nonce[0] = r->location[0] = r->content_type[0] = '\0';
        r->retry_after = -1;
        return len;
    }
    if (header_value(p, len, "Retry-After", v, sizeof(v))) {
        char *end;
        long secs = strtol(v, &end, 10);

        /* An HTTP date instead of seconds: wait a little, then ask again. */
        r->retry_after = end != v && *end == '\0' && secs >= 0 ? secs : 1;
        return len;
    }
    if (!header_value(p, len, "Replay-Nonce", r->nonce, sizeof(r->nonce)) &&
        !header_value(p, len, "Location", r->location, sizeof(r->location)))
        header_value(p, len, "Content-Type", r->content_type, sizeof(r->content_type));
    return len;
}

/* What went wrong before any answer came, and what to do about it. */
static void transport_error(acme_http *h, CURLcode rc, const char *url, cli_err *err)
{
    const char *why = h->errbuf[0] != '\0' ? h->errbuf : curl_easy_strerror(rc);
    const char *hint;

    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
        hint = "check the host name in the directory URL";
        break;
    case CURLE_COULDNT_CONNECT:
        hint = "the CA is not reachable there: check the URL, that the CA runs and that no "
               "firewall is in the way";
        break;
    case CURLE_OPERATION_TIMEDOUT:
        hint = NULL;
        cli_err_set(err,
                    "%s: no answer from the CA within %d s (%s); the CA may be overloaded or "
                    "the address wrong; --acme-timeout SECONDS waits longer",
                    url, h->timeout, why);
        return;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
        hint = h->ca_bundle != NULL
                   ? "the CA's TLS certificate does not verify against --acme-ca-bundle: give "
                     "the bundle of the CA that issued it"
                   : "the CA's TLS certificate does not verify against the system's CAs: a "
                     "private CA needs --acme-ca-bundle FILE";
        break;
    case CURLE_SSL_CONNECT_ERROR:
        hint = "the TLS handshake with the CA failed: is the URL an https:// ACME directory?";
        break;
    case CURLE_UNSUPPORTED_PROTOCOL:
        hint = "ACME directories are https:// URLs";
        break;
    default:
        hint = NULL;
        break;
    }
    cli_err_set(err, "%s: %s%s%s", url, why, hint != NULL ? "; " : "", hint != NULL ? hint : "");
}

int acme_http_do(acme_http *h, const char *url, const char *body, int head, const char *accept,
                 acme_resp *r, cli_err *err)
{
    struct curl_slist *hdrs = NULL, *l;
    char accept_hdr[160];
    CURLcode rc;
    CURL *c = h->curl;
    int ok = 0;

    acme_resp_clear(r);
    curl_easy_reset(c);
    h->errbuf[0] = '\0';
    snprintf(accept_hdr, sizeof(accept_hdr), "Accept: %s",
             accept != NULL ? accept : "application/json");
    hdrs = curl_slist_append(NULL, accept_hdr);
    if (hdrs != NULL && body != NULL &&
        (l = curl_slist_append(hdrs, "Content-Type: application/jose+json")) != NULL)
        hdrs = l;
    if (hdrs == NULL) {
        cli_err_set(err, "out of memory");
        return 0;
    }
    rc = curl_easy_setopt(c, CURLOPT_URL, url);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)h->timeout);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)h->timeout);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_USERAGENT, CLI_PROGRAM "/" MTLSKS_VERSION);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    if (rc == CURLE_OK && h->ca_bundle != NULL)
        rc = curl_easy_setopt(c, CURLOPT_CAINFO, h->ca_bundle);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (rc == CURLE_OK && head)
        rc = curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (rc == CURLE_OK && body != NULL)
        rc = curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    if (rc != CURLE_OK) {
        cli_err_set(err, "libcurl refuses an option: %s", curl_easy_strerror(rc));
        goto done;
    }
    rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        transport_error(h, rc, url, err);
        goto done;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->body == NULL && (r->body = strdup("")) == NULL) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    ok = 1;
done:
    curl_slist_free_all(hdrs);
    return ok;
}
