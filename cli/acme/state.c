/*
 * The state of an ACME-enrolled certificate: one JSON file per label,
 * DIR/LABEL.json, written by enroll --acme and read by renew, check --renew
 * and revoke. It records what a renewal needs to repeat the enrollment
 * unattended (directory, account, SANs, challenge, files, hook) and
 * nothing secret: the EAB MAC key stays in its own file, the PIN in its
 * pin source, the keys in hardware. Mode 0600 all the same (it names
 * files and hooks), written atomically.
 */
#include "acme.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#define STATE_SUFFIX ".json"
#define STATE_VERSION 1

static const char *const chal_names[] = {"", "http-01", "webroot", "dns-01"};

void acme_strv_free(char **v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void acme_state_clear(acme_state *st)
{
    free(st->label);
    free(st->directory);
    free(st->ca_bundle);
    free(st->account_url);
    free(st->account_key);
    free(st->contact);
    free(st->eab_kid);
    free(st->eab_hmac_file);
    free(st->chal_value);
    acme_strv_free(st->sans, st->nsans);
    free(st->key_type);
    free(st->usage);
    free(st->token);
    free(st->password_source);
    free(st->key_ref);
    free(st->cert_out);
    free(st->chain_out);
    free(st->deploy_hook);
    free(st->revoked_serial);
    memset(st, 0, sizeof(*st));
}

const char *acme_state_dir(const char *opt)
{
    const char *env = getenv("MTLSKS_STATE_DIR");

    if (opt != NULL)
        return opt;
    return env != NULL && *env != '\0' ? env : ACME_DEFAULT_STATE_DIR;
}

static int plain_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

char *acme_state_path(const char *dir, const char *label)
{
    size_t n = strlen(dir) + 3 * strlen(label) + sizeof(STATE_SUFFIX) + 2, i;
    char *p = malloc(n), *w;

    if (p == NULL)
        return NULL;
    w = p + snprintf(p, n, "%s/", dir);
    /* A leading dot would hide the file; '%' escapes as in URIs. */
    for (i = 0; label[i] != '\0'; i++)
        w += plain_char(label[i]) && !(i == 0 && label[i] == '.')
                 ? snprintf(w, n - (size_t)(w - p), "%c", label[i])
                 : snprintf(w, n - (size_t)(w - p), "%%%02X", (unsigned char)label[i]);
    snprintf(w, n - (size_t)(w - p), "%s", STATE_SUFFIX);
    return p;
}

/* The label a state file name stands for; NULL when it is not one. */
static char *label_of(const char *name)
{
    size_t n = strlen(name), m = strlen(STATE_SUFFIX), i, k = 0;
    char *out;

    if (n <= m || strcmp(name + n - m, STATE_SUFFIX) != 0 || name[0] == '.')
        return NULL;
    out = malloc(n);
    if (out == NULL)
        return NULL;
    for (i = 0; i < n - m; i++) {
        unsigned v;

        if (name[i] == '%' && i + 2 < n - m && sscanf(name + i + 1, "%2X", &v) == 1) {
            out[k++] = (char)v;
            i += 2;
        } else {
            out[k++] = name[i];
        }
    }
    out[k] = '\0';
    return out;
}

int acme_state_dir_make(const char *dir, cli_err *err)
{
    struct stat sb;

    if (mkdir(dir, 0700) == 0)
        return 1;
    if (errno == EEXIST && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode))
        return 1;
    cli_err_set(err,
                "cannot make the state directory %s: %s (give --state-dir DIR or set "
                "MTLSKS_STATE_DIR)",
                dir, errno == EEXIST ? "not a directory" : strerror(errno));
    return 0;
}

static int by_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int acme_state_list(const char *dir, char ***labels, size_t *n, cli_err *err)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **v = NULL;
    size_t k = 0;

    *labels = NULL;
    *n = 0;
    if (d == NULL) {
        if (errno == ENOENT)
            return 1; /* nothing enrolled yet */
        cli_err_set(err, "cannot read the state directory %s: %s", dir, strerror(errno));
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        char *label = label_of(e->d_name), **nv;

        if (label == NULL)
            continue;
        nv = realloc(v, (k + 1) * sizeof(*v));
        if (nv == NULL) {
            free(label);
            acme_strv_free(v, k);
            closedir(d);
            cli_err_set(err, "out of memory");
            return 0;
        }
        v = nv;
        v[k++] = label;
    }
    closedir(d);
    if (k > 1)
        qsort(v, k, sizeof(*v), by_str);
    *labels = v;
    *n = k;
    return 1;
}

/* ---- JSON ------------------------------------------------------------------ */

static void put_str(json_object *o, const char *key, const char *v)
{
    if (v != NULL)
        json_object_object_add(o, key, json_object_new_string(v));
}

static char *get_str(json_object *o, const char *key)
{
    json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return strdup(json_object_get_string(v));
}

static int state_to_json(const acme_state *st, char **out)
{
    json_object *o = json_object_new_object(), *sans = json_object_new_array(), *ch;
    size_t i;

    *out = NULL;
    if (o == NULL || sans == NULL) {
        json_object_put(o);
        json_object_put(sans);
        return 0;
    }
    json_object_object_add(o, "version", json_object_new_int(STATE_VERSION));
    put_str(o, "label", st->label);
    put_str(o, "directory", st->directory);
    put_str(o, "ca_bundle", st->ca_bundle);
    put_str(o, "account_url", st->account_url);
    put_str(o, "account_key", st->account_key);
    put_str(o, "contact", st->contact);
    put_str(o, "eab_kid", st->eab_kid);
    put_str(o, "eab_hmac_file", st->eab_hmac_file);
    ch = json_object_new_object();
    json_object_object_add(o, "challenge", ch);
    put_str(ch, "type", chal_names[st->chal]);
    put_str(ch, "value", st->chal_value);
    for (i = 0; i < st->nsans; i++)
        json_object_array_add(sans, json_object_new_string(st->sans[i]));
    json_object_object_add(o, "sans", sans);
    put_str(o, "key_type", st->key_type);
    put_str(o, "usage", st->usage);
    put_str(o, "backend", st->tpm ? "tpm" : "pkcs11");
    put_str(o, "token", st->token);
    put_str(o, "password_source", st->password_source);
    put_str(o, "key_ref", st->key_ref);
    put_str(o, "cert_out", st->cert_out);
    put_str(o, "chain_out", st->chain_out);
    put_str(o, "deploy_hook", st->deploy_hook);
    json_object_object_add(o, "timeout", json_object_new_int(st->timeout));
    put_str(o, "revoked_serial", st->revoked_serial);
    *out = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                        JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return *out != NULL;
}

int acme_state_save(const char *dir, const acme_state *st, cli_err *err)
{
    char *path = NULL, *text = NULL, *nl;
    cli_err werr;
    int ok = 0;

    if (!acme_state_dir_make(dir, err))
        return 0;
    path = acme_state_path(dir, st->label);
    if (path == NULL || !state_to_json(st, &text) || asprintf(&nl, "%s\n", text) < 0) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    free(text);
    text = nl;
    if (!cli_write_file_atomic(path, text, strlen(text), 0600, 1, &werr)) {
        cli_err_set(err, "cannot write the state file: %s", werr.msg);
        goto done;
    }
    ok = 1;
done:
    free(path);
    free(text);
    return ok;
}

static int sans_from_json(json_object *o, acme_state *st)
{
    json_object *a;
    size_t i, n;

    if (!json_object_object_get_ex(o, "sans", &a) || !json_object_is_type(a, json_type_array))
        return 0;
    n = json_object_array_length(a);
    st->sans = calloc(n > 0 ? n : 1, sizeof(*st->sans));
    if (st->sans == NULL)
        return 0;
    for (i = 0; i < n; i++) {
        const char *s = json_object_get_string(json_object_array_get_idx(a, i));

        if (s == NULL || (st->sans[st->nsans] = strdup(s)) == NULL)
            return 0;
        st->nsans++;
    }
    return n > 0;
}

int acme_state_load(const char *path, acme_state *st, cli_err *err)
{
    unsigned char *data = NULL;
    size_t len = 0, i;
    json_object *o = NULL, *ch, *v;
    char *type = NULL, *backend = NULL;
    cli_err rerr;
    int ok = 0;

    memset(st, 0, sizeof(*st));
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        cli_err_set(err, "no ACME state file %s", path);
        return -1;
    }
    if (!cli_read_file(path, 1 << 20, &data, &len, &rerr)) {
        cli_err_set(err, "%s", rerr.msg);
        return 0;
    }
    o = json_tokener_parse((const char *)data);
    if (o == NULL || !json_object_is_type(o, json_type_object)) {
        cli_err_set(err, "%s is not an ACME state file (not a JSON object)", path);
        goto done;
    }
    st->label = get_str(o, "label");
    st->directory = get_str(o, "directory");
    st->ca_bundle = get_str(o, "ca_bundle");
    st->account_url = get_str(o, "account_url");
    st->account_key = get_str(o, "account_key");
    st->contact = get_str(o, "contact");
    st->eab_kid = get_str(o, "eab_kid");
    st->eab_hmac_file = get_str(o, "eab_hmac_file");
    if (json_object_object_get_ex(o, "challenge", &ch)) {
        type = get_str(ch, "type");
        st->chal_value = get_str(ch, "value");
    }
    for (i = 1; type != NULL && i < sizeof(chal_names) / sizeof(chal_names[0]); i++)
        if (strcmp(type, chal_names[i]) == 0)
            st->chal = (acme_chal_type)i;
    st->key_type = get_str(o, "key_type");
    st->usage = get_str(o, "usage");
    backend = get_str(o, "backend");
    st->tpm = backend != NULL && strcmp(backend, "tpm") == 0;
    st->token = get_str(o, "token");
    st->password_source = get_str(o, "password_source");
    st->key_ref = get_str(o, "key_ref");
    st->cert_out = get_str(o, "cert_out");
    st->chain_out = get_str(o, "chain_out");
    st->deploy_hook = get_str(o, "deploy_hook");
    st->revoked_serial = get_str(o, "revoked_serial");
    st->timeout = json_object_object_get_ex(o, "timeout", &v) ? json_object_get_int(v) : 0;
    if (st->timeout <= 0)
        st->timeout = ACME_DEFAULT_TIMEOUT;
    if (st->label == NULL || st->directory == NULL || st->chal == ACME_CHAL_NONE ||
        st->chal_value == NULL || !sans_from_json(o, st) || st->key_ref == NULL ||
        st->cert_out == NULL || (!st->tpm && st->token == NULL)) {
        cli_err_set(err,
                    "%s is damaged: label, directory, challenge, sans, key_ref, cert_out "
                    "or token missing; enroll again",
                    path);
        goto done;
    }
    ok = 1;
done:
    free(type);
    free(backend);
    json_object_put(o);
    free(data);
    if (!ok)
        acme_state_clear(st);
    return ok;
}
