/*
 * What answers the CA's challenges, only while the authorizations are
 * pending:
 *
 * http-01: a responder built on libmicrohttpd, listening on the one
 *   address --http-01 names, serving GET /.well-known/acme-challenge/TOKEN
 *   from a table fixed before it starts (so its thread shares nothing
 *   mutable with ours) and 404 for everything else. libmicrohttpd rather
 *   than a hand-written responder: whatever reaches that port from the
 *   network meets a maintained, fuzzed HTTP parser with connection limits
 *   and timeouts, not a few hundred new lines of ours. The socket is bound
 *   here, so a busy or privileged port is reported with its errno.
 * --webroot DIR: DIR/.well-known/acme-challenge/TOKEN written (0644,
 *   atomically) for the web server that serves DIR; removed afterwards,
 *   with the directories if they were made here and are empty.
 * --dns-01-hook CMD: `CMD add NAME VALUE` for each TXT record
 *   (_acme-challenge.NAME, the base64url SHA-256 of the key
 *   authorization), `CMD remove NAME VALUE` afterwards.
 */
#include "acme.h"

#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microhttpd.h>

#include <openssl/evp.h>

#define CHAL_PREFIX "/.well-known/acme-challenge/"

struct acme_responder {
    const acme_state *st;
    const acme_pending *p;
    size_t n;
    struct MHD_Daemon *mhd;
    int fd;
    char **files; /* webroot: written; dns-01: "NAME\nVALUE" added */
    size_t nfiles;
    int made_wk, made_chal; /* webroot: .well-known, acme-challenge made here */
};

/* ---- http-01 ------------------------------------------------------------ */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_len, void **con_cls)
{
    const acme_responder *r = cls;
    const char *body = "not found\n";
    struct MHD_Response *resp;
    unsigned status = MHD_HTTP_NOT_FOUND;
    enum MHD_Result ret;
    size_t i, n = strlen(CHAL_PREFIX);

    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        body = "method not allowed\n";
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (strncmp(url, CHAL_PREFIX, n) == 0) {
        for (i = 0; i < r->n; i++)
            if (strcmp(url + n, r->p[i].token) == 0) {
                body = r->p[i].key_auth;
                status = MHD_HTTP_OK;
                break;
            }
    }
    resp = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "text/plain");
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Splits "ADDR:PORT" / "[V6]:PORT" into a bound-able address. */
static int parse_addr(const char *s, struct addrinfo **ai, cli_err *err)
{
    char host[128];
    const char *colon, *port;
    struct addrinfo hints = {0};
    size_t len;
    int rc;

    if (s[0] == '[') {
        const char *end = strchr(s, ']');

        if (end == NULL || end[1] != ':') {
            cli_err_set(err, "--http-01 '%s': expected ADDRESS:PORT ([ADDRESS]:PORT for IPv6)", s);
            return 0;
        }
        len = (size_t)(end - s - 1);
        colon = end + 1;
        s++;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || colon == s || strchr(s, ':') != colon) {
            cli_err_set(err,
                        "--http-01 '%s': expected ADDRESS:PORT, e.g. 0.0.0.0:80 or "
                        "192.0.2.10:80 ([ADDRESS]:PORT for IPv6)",
                        s);
            return 0;
        }
        len = (size_t)(colon - s);
    }
    port = colon + 1;
    if (len == 0 || len >= sizeof(host) || *port == '\0' ||
        strspn(port, "0123456789") != strlen(port) || atoi(port) < 1 || atoi(port) > 65535) {
        cli_err_set(err, "--http-01 '%s': expected ADDRESS:PORT with a port 1..65535", s);
        return 0;
    }
    memcpy(host, s, len);
    host[len] = '\0';
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, port, &hints, ai);
    if (rc != 0) {
        cli_err_set(err, "--http-01 '%s': '%s' is not a numeric IP address (%s)", s, host,
                    gai_strerror(rc));
        return 0;
    }
    return 1;
}

int acme_http01_addr_check(const char *addr, cli_err *err)
{
    struct addrinfo *ai = NULL;

    if (!parse_addr(addr, &ai, err))
        return 0;
    freeaddrinfo(ai);
    return 1;
}

static int http01_start(acme_responder *r, cli_err *err)
{
    struct addrinfo *ai = NULL;
    int one = 1, ok = 0;

    if (!parse_addr(r->st->chal_value, &ai, err))
        return 0;
    r->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->fd < 0 || setsockopt(r->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (ai->ai_family == AF_INET6 &&
         setsockopt(r->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        bind(r->fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(r->fd, 32) != 0) {
        cli_err_set(err, "the http-01 responder cannot listen on %s: %s%s", r->st->chal_value,
                    strerror(errno),
                    errno == EACCES       ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                    : errno == EADDRINUSE ? " (a web server there? use --webroot DIR instead)"
                                          : "");
        goto done;
    }
    r->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
                                  (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
                              0, NULL, NULL, on_request, r, MHD_OPTION_LISTEN_SOCKET, r->fd,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
    if (r->mhd == NULL) {
        cli_err_set(err, "the http-01 responder cannot start on %s (libmicrohttpd)",
                    r->st->chal_value);
        goto done;
    }
    r->fd = -1; /* the daemon owns it */
    ok = 1;
done:
    freeaddrinfo(ai);
    return ok;
}

/* ---- webroot --------------------------------------------------------------- */

static int add_name(acme_responder *r, char *s)
{
    char **v = realloc(r->files, (r->nfiles + 1) * sizeof(*v));

    if (v == NULL) {
        free(s);
        return 0;
    }
    r->files = v;
    r->files[r->nfiles++] = s;
    return 1;
}

static int webroot_start(acme_responder *r, cli_err *err)
{
    const char *root = r->st->chal_value;
    char *wk = NULL, *dir = NULL, *file = NULL;
    struct stat sb;
    size_t i;
    int ok = 0;

    if (stat(root, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        cli_err_set(err, "--webroot %s: %s", root,
                    stat(root, &sb) != 0 ? strerror(errno) : "not a directory");
        return 0;
    }
    if (asprintf(&wk, "%s/.well-known", root) < 0 ||
        asprintf(&dir, "%s/.well-known/acme-challenge", root) < 0) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    if (mkdir(wk, 0755) == 0)
        r->made_wk = 1;
    else if (errno != EEXIST) {
        cli_err_set(err, "--webroot: cannot make %s: %s", wk, strerror(errno));
        goto done;
    }
    if (mkdir(dir, 0755) == 0)
        r->made_chal = 1;
    else if (errno != EEXIST) {
        cli_err_set(err, "--webroot: cannot make %s: %s", dir, strerror(errno));
        goto done;
    }
    for (i = 0; i < r->n; i++) {
        cli_err werr;

        if (asprintf(&file, "%s/%s", dir, r->p[i].token) < 0) {
            file = NULL;
            cli_err_set(err, "out of memory");
            goto done;
        }
        if (!cli_write_file_atomic(file, r->p[i].key_auth, strlen(r->p[i].key_auth), 0644, 1,
                                   &werr)) {
            cli_err_set(err, "--webroot: %s", werr.msg);
            goto done;
        }
        if (chmod(file, 0644) != 0 || !add_name(r, file)) {
            cli_err_set(err, "--webroot: %s: %s", file, strerror(errno));
            goto done;
        }
        file = NULL;
    }
    ok = 1;
done:
    free(file);
    free(wk);
    free(dir);
    return ok;
}

static void webroot_stop(acme_responder *r)
{
    char path[4096];
    size_t i;

    for (i = 0; i < r->nfiles; i++)
        if (unlink(r->files[i]) != 0 && errno != ENOENT)
            fprintf(stderr, "%s: warning: cannot remove %s: %s\n", CLI_PROGRAM, r->files[i],
                    strerror(errno));
    snprintf(path, sizeof(path), "%s/.well-known/acme-challenge", r->st->chal_value);
    if (r->made_chal)
        rmdir(path); /* only when empty: someone else's files stay */
    snprintf(path, sizeof(path), "%s/.well-known", r->st->chal_value);
    if (r->made_wk)
        rmdir(path);
}

/* ---- dns-01 ------------------------------------------------------------------ */

/* The TXT record's name and value for one challenge. */
static int dns_record(const acme_pending *p, char **name, char **value)
{
    unsigned char md[32];
    const char *d = p->domain;

    *name = *value = NULL;
    if (strncmp(d, "*.", 2) == 0)
        d += 2;
    if (!EVP_Q_digest(NULL, "SHA256", NULL, p->key_auth, strlen(p->key_auth), md, NULL))
        return 0;
    *value = acme_b64url(md, sizeof(md));
    if (*value == NULL || asprintf(name, "_acme-challenge.%s", d) < 0) {
        free(*value);
        *value = NULL;
        *name = NULL;
        return 0;
    }
    return 1;
}

static int dns_hook(const acme_responder *r, const char *op, const char *name, const char *value,
                    cli_err *err)
{
    char *args[] = {(char *)op, (char *)name, (char *)value, NULL};

    return acme_run_sh(r->st->chal_value, args, NULL, err);
}

static int dns_start(acme_responder *r, cli_err *err)
{
    size_t i;

    for (i = 0; i < r->n; i++) {
        char *name, *value, *both = NULL;
        cli_err herr;
        int ok;

        if (!dns_record(&r->p[i], &name, &value)) {
            cli_err_set(err, "out of memory");
            return 0;
        }
        ok = dns_hook(r, "add", name, value, &herr);
        if (ok && asprintf(&both, "%s\n%s", name, value) >= 0)
            add_name(r, both);
        else if (!ok)
            cli_err_set(err, "--dns-01-hook: 'add %s %s' failed: %s", name, value, herr.msg);
        free(name);
        free(value);
        if (!ok)
            return 0;
    }
    return 1;
}

static void dns_stop(acme_responder *r)
{
    size_t i;

    for (i = 0; i < r->nfiles; i++) {
        char *nl = strchr(r->files[i], '\n');
        cli_err herr;

        if (nl == NULL)
            continue;
        *nl = '\0';
        if (!dns_hook(r, "remove", r->files[i], nl + 1, &herr))
            fprintf(stderr, "%s: warning: --dns-01-hook 'remove %s': %s\n", CLI_PROGRAM,
                    r->files[i], herr.msg);
    }
}

/* ---- the three behind one interface ---------------------------------------- */

int acme_responder_start(const acme_state *st, const acme_pending *p, size_t n,
                         acme_responder **out, cli_err *err)
{
    acme_responder *r = calloc(1, sizeof(*r));
    int ok = 0;

    *out = NULL;
    if (r == NULL) {
        cli_err_set(err, "out of memory");
        return 0;
    }
    r->st = st;
    r->p = p;
    r->n = n;
    r->fd = -1;
    switch (st->chal) {
    case ACME_CHAL_HTTP01:
        ok = http01_start(r, err);
        break;
    case ACME_CHAL_WEBROOT:
        ok = webroot_start(r, err);
        break;
    case ACME_CHAL_DNS01:
        ok = dns_start(r, err);
        break;
    case ACME_CHAL_NONE:
        cli_err_set(err, "no challenge responder configured");
        break;
    }
    if (!ok) {
        acme_responder_stop(r);
        return 0;
    }
    *out = r;
    return 1;
}

void acme_responder_stop(acme_responder *r)
{
    size_t i;

    if (r == NULL)
        return;
    if (r->mhd != NULL)
        MHD_stop_daemon(r->mhd);
    if (r->fd >= 0)
        close(r->fd);
    if (r->st->chal == ACME_CHAL_WEBROOT)
        webroot_stop(r);
    else if (r->st->chal == ACME_CHAL_DNS01)
        dns_stop(r);
    for (i = 0; i < r->nfiles; i++)
        free(r->files[i]);
    free(r->files);
    free(r);
}
