#include "stress_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char cleanup_dir[256];
static pid_t owner_pid;

void stress_token_cleanup(void)
{
    char cmd[300];
    const char *keep = getenv("MTLSKS_KEEP_TMP");

    /* Only the process that made the directory removes it, never a child. */
    if (cleanup_dir[0] == '\0' || getpid() != owner_pid)
        return;
    if (keep != NULL && strcmp(keep, "1") == 0) {
        printf("-- kept %s\n", cleanup_dir);
    } else {
        snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", cleanup_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "warning: cannot remove %s\n", cleanup_dir);
    }
    cleanup_dir[0] = '\0';
}

void stress_skip(const char *fmt, ...)
{
    va_list ap;

    printf("SKIP: ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    stress_token_cleanup();
    exit(STRESS_SKIP);
}

void stress_fail(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fprintf(stderr, "FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    stress_token_cleanup();
    exit(1);
}

const char *stress_softhsm_module(void)
{
    const char *m = getenv("MTLSKS_SOFTHSM_MODULE");

    return m != NULL && *m != '\0' ? m : "/usr/lib/softhsm/libsofthsm2.so";
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f;
    mode_t old = umask(077);

    f = fopen(path, "w");
    umask(old);
    if (f == NULL || fputs(text, f) == EOF || fclose(f) != 0)
        stress_fail("cannot write %s", path);
    if (chmod(path, mode) != 0)
        stress_fail("cannot chmod %s", path);
}

static int have_program(const char *name)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

void stress_token_init(stress_token *t, const char *name, const char *label, int reset_on_fork,
                       const char *provider_path)
{
    char path[300], text[1200], cmd[600];
    const char *base = getenv("MTLSKS_TMP");
    const char *module = stress_softhsm_module();

    memset(t, 0, sizeof(*t));
    if (!have_program("softhsm2-util"))
        stress_skip("softhsm2-util is not installed (Debian package softhsm2)");
    if (access(module, R_OK) != 0)
        stress_skip("SoftHSM module %s not found (Debian package softhsm2)", module);
    if (base == NULL || *base == '\0')
        base = getenv("TMPDIR");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    mkdir(base, 0755);
    snprintf(t->dir, sizeof(t->dir), "%s/%s.XXXXXX", base, name);
    if (mkdtemp(t->dir) == NULL)
        stress_fail("cannot make a temp directory in %s", base);
    snprintf(cleanup_dir, sizeof(cleanup_dir), "%s", t->dir);
    owner_pid = getpid();
    atexit(stress_token_cleanup);
    printf("-- work directory %s\n", t->dir);

    snprintf(path, sizeof(path), "%s/tokens", t->dir);
    if (mkdir(path, 0700) != 0)
        stress_fail("cannot make %s", path);
    snprintf(t->softhsm_conf, sizeof(t->softhsm_conf), "%s/softhsm2.conf", t->dir);
    snprintf(text, sizeof(text),
             "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n"
             "slots.removable = false\nlibrary.reset_on_fork = %s\n",
             path, reset_on_fork ? "true" : "false");
    write_file(t->softhsm_conf, text, 0600);
    setenv("SOFTHSM2_CONF", t->softhsm_conf, 1);

    snprintf(t->label, sizeof(t->label), "%s", label);
    snprintf(cmd, sizeof(cmd),
             "softhsm2-util --init-token --free --label '%s' --pin " STRESS_PIN
             " --so-pin " STRESS_SO_PIN " >/dev/null",
             label);
    if (system(cmd) != 0)
        stress_fail("softhsm2-util --init-token failed");

    snprintf(t->pin_file, sizeof(t->pin_file), "%s/pin", t->dir);
    write_file(t->pin_file, STRESS_PIN "\n", 0600);
    snprintf(t->pin_source, sizeof(t->pin_source), "file:%s", t->pin_file);

    snprintf(t->openssl_cnf, sizeof(t->openssl_cnf), "%s/openssl.cnf", t->dir);
    if (provider_path != NULL)
        snprintf(text, sizeof(text),
                 "openssl_conf = openssl_init\n\n[openssl_init]\nproviders = provider_sect\n\n"
                 "[provider_sect]\ndefault = default_sect\nmtlsks = mtlsks_sect\n\n"
                 "[default_sect]\nactivate = 1\n\n"
                 "[mtlsks_sect]\nmodule = %s\npkcs11-module = %s\npkcs11-pin-source = %s\n"
                 "activate = 1\n",
                 provider_path, module, t->pin_source);
    else
        snprintf(text, sizeof(text),
                 "openssl_conf = openssl_init\n\n[openssl_init]\nproviders = provider_sect\n\n"
                 "[provider_sect]\ndefault = default_sect\n\n[default_sect]\nactivate = 1\n");
    write_file(t->openssl_cnf, text, 0644);
}

void stress_token_use_config(const stress_token *t)
{
    setenv("OPENSSL_CONF", t->openssl_cnf, 1);
}

char *stress_enroll(const stress_token *t, const char *cli_path, const char *label,
                    const char *key_type)
{
    char cmd[2048], out[300], line[1024], *uri = NULL;
    FILE *p;

    if (access(cli_path, X_OK) != 0)
        stress_fail("CLI not built: %s", cli_path);
    snprintf(out, sizeof(out), "%s/%s.csr", t->dir, label);
    snprintf(cmd, sizeof(cmd),
             "'%s' --config '%s' enroll --token '%s' --label '%s' --key-type '%s' "
             "--subject 'CN=%s' --usage both --out '%s' --key-ref '%s/%s.key.pem' </dev/null",
             cli_path, t->openssl_cnf, t->label, label, key_type, label, out, t->dir, label);
    p = popen(cmd, "r");
    if (p == NULL)
        stress_fail("cannot run %s", cli_path);
    while (fgets(line, sizeof(line), p) != NULL) {
        char *s = strstr(line, "pkcs11:"), *e;

        if (s == NULL || uri != NULL)
            continue;
        for (e = s; *e != '\0' && *e != '\n' && *e != ' ' && *e != '"'; e++)
            ;
        *e = '\0';
        uri = strdup(s);
    }
    if (pclose(p) != 0 || uri == NULL)
        stress_fail("mtls-keystore enroll %s (%s) failed", label, key_type);
    return uri;
}

double stress_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
