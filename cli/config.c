#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/conf.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

#define PROVIDER_NAME "mtlsks"

/*
 * The value of `name` in exactly section `sect`. NCONF_get_string would fall
 * back to the default section, which OpenSSL's module loader does not do.
 */
static const char *section_value(const CONF *conf, const char *sect, const char *name)
{
    STACK_OF(CONF_VALUE) *values = NCONF_get_section(conf, sect);
    const char *found = NULL;
    int i;

    for (i = 0; values != NULL && i < sk_CONF_VALUE_num(values); i++) {
        const CONF_VALUE *v = sk_CONF_VALUE_value(values, i);

        /* The last assignment wins, as in OpenSSL's loader. */
        if (v->name != NULL && strcmp(v->name, name) == 0)
            found = v->value;
    }
    return found;
}

/* The section that configures the mtlsks provider, or NULL. */
static const char *find_provider_section(const CONF *conf)
{
    STACK_OF(CONF_VALUE) * list;
    const char *init, *providers;
    int i;

    init = section_value(conf, "default", "openssl_conf");
    if (init == NULL)
        return NULL;
    providers = section_value(conf, init, "providers");
    if (providers == NULL)
        return NULL;
    list = NCONF_get_section(conf, providers);
    for (i = 0; list != NULL && i < sk_CONF_VALUE_num(list); i++) {
        const CONF_VALUE *v = sk_CONF_VALUE_value(list, i);
        const char *identity;

        if (v->name == NULL || v->value == NULL || NCONF_get_section(conf, v->value) == NULL)
            continue;
        identity = section_value(conf, v->value, "identity");
        if (identity != NULL ? strcmp(identity, PROVIDER_NAME) == 0
                             : strcmp(v->name, PROVIDER_NAME) == 0)
            return v->value;
    }
    return NULL;
}

/* 1 when OpenSSL activates the provider whose section is `sect`. */
static int activated(const CONF *conf, const char *sect)
{
    static const char *const yes[] = {"1", "yes", "true", "on"};
    const char *v = section_value(conf, sect, "activate");
    size_t i;

    for (i = 0; v != NULL && i < sizeof(yes) / sizeof(yes[0]); i++)
        if (strcasecmp(v, yes[i]) == 0)
            return 1;
    return 0;
}

/*
 * A configuration named on purpose (--config, $OPENSSL_CONF) that does not
 * load the provider is what servers reading it get: said once, with where a
 * working one is.
 */
static void warn_unused(const CONF *conf, const char *file, const char *sect)
{
    if (sect == NULL)
        cli_fail(NULL,
                 "warning: %s has no mtlsks provider section (openssl_conf = INIT, [INIT] "
                 "providers = LIST, [LIST] mtlsks = SECTION): servers reading it will not load "
                 "the provider, and this command uses its defaults; see "
                 "examples/openssl-mtlsks.cnf (%s)",
                 file, MKS_EXAMPLE_CNF);
    else if (!activated(conf, sect))
        cli_fail(NULL,
                 "warning: %s, section [%s]: no 'activate = 1', so servers reading it will not "
                 "load the mtlsks provider; see examples/openssl-mtlsks.cnf (%s)",
                 file, sect, MKS_EXAMPLE_CNF);
}

static int dup_value(const CONF *conf, const char *sect, const char *name, char **out, cli_err *err)
{
    const char *v = section_value(conf, sect, name);

    if (v == NULL || *v == '\0')
        return 1;
    *out = strdup(v);
    if (*out == NULL) {
        cli_err_set(err, "out of memory");
        return 0;
    }
    return 1;
}

int cli_config_load(const char *path, cli_config *out, cli_err *err)
{
    CONF *conf = NULL;
    char *deflt = NULL;
    const char *file = path, *sect;
    const char *env = getenv("OPENSSL_CONF");
    int explicit = 1, ok = 0;
    long eline = -1;
    struct stat st;

    memset(out, 0, sizeof(*out));
    if (file == NULL && env != NULL && *env != '\0') {
        file = env;
    } else if (file == NULL) {
        deflt = CONF_get1_default_config_file();
        if (deflt == NULL) {
            cli_err_set(err, "out of memory");
            return 0;
        }
        file = deflt;
        explicit = 0;
    }

    if (stat(file, &st) != 0) {
        if (!explicit && errno == ENOENT) {
            ok = 1; /* no system openssl.cnf: defaults */
            goto done;
        }
        cli_err_set(err,
                    "cannot read the configuration %s%s: %s; a configuration that loads the "
                    "provider: examples/openssl-mtlsks.cnf (%s)",
                    file, path != NULL ? "" : " ($OPENSSL_CONF)", strerror(errno), MKS_EXAMPLE_CNF);
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        cli_err_set(err, "the configuration %s is a directory", file);
        goto done;
    }

    conf = NCONF_new(NULL);
    if (conf == NULL) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    if (NCONF_load(conf, file, &eline) <= 0) {
        if (eline > 0)
            cli_err_set_ossl(err, "cannot parse the configuration %s, line %ld", file, eline);
        else
            cli_err_set_ossl(err, "cannot read the configuration %s", file);
        goto done;
    }
    out->file = strdup(file);
    if (out->file == NULL) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    sect = find_provider_section(conf);
    if (explicit)
        warn_unused(conf, file, sect);
    if (sect != NULL) {
        out->section = strdup(sect);
        if (out->section == NULL) {
            cli_err_set(err, "out of memory");
            goto done;
        }
        if (!dup_value(conf, sect, "pkcs11-module", &out->pkcs11_module, err) ||
            !dup_value(conf, sect, "pkcs11-pin-source", &out->pin_source, err) ||
            !dup_value(conf, sect, "tpm2-tcti", &out->tpm2_tcti, err) ||
            !dup_value(conf, sect, "tpm2-hold-objects", &out->tpm2_hold_objects, err) ||
            !dup_value(conf, sect, "tpm2-sessions", &out->tpm2_sessions, err))
            goto done;
    }
    ok = 1;
done:
    /* Lookups of absent names leave errors on the queue; they are not failures. */
    ERR_clear_error();
    NCONF_free(conf);
    OPENSSL_free(deflt);
    if (!ok)
        cli_config_clear(out);
    return ok;
}

void cli_config_clear(cli_config *c)
{
    free(c->file);
    free(c->section);
    free(c->pkcs11_module);
    free(c->pin_source);
    free(c->tpm2_tcti);
    free(c->tpm2_hold_objects);
    free(c->tpm2_sessions);
    memset(c, 0, sizeof(*c));
}
