/*
 * A SoftHSM token for one test program: its own token directory and
 * configuration in a temp dir, initialised with user PIN 1234 (in a 0600
 * PIN file), removed at the end. Included by the unit tests that need a
 * token (not a test itself); exits 77 (SKIP) when SoftHSM is missing.
 */
#ifndef MTLSKS_SOFTHSM_FIXTURE_H
#define MTLSKS_SOFTHSM_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"

typedef struct softhsm_fixture {
    char dir[256];
    char pin_source[320]; /* "file:DIR/pin" */
} softhsm_fixture;

/* Makes the token labelled `label`; dir from dir_template (ending in XXXXXX).
 * Returns 0, or -1 when it cannot be made. */
static int softhsm_make(softhsm_fixture *t, const char *dir_template, const char *label)
{
    char path[300], cmd[1024];
    FILE *f;

    if (access(SOFTHSM_MODULE, R_OK) != 0) {
        fprintf(stderr, "SKIP: %s not found\n", SOFTHSM_MODULE);
        exit(77);
    }
    snprintf(t->dir, sizeof(t->dir), "%s", dir_template);
    if (mkdtemp(t->dir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/tokens", t->dir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/softhsm2.conf", t->dir);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
            t->dir);
    fclose(f);
    setenv("SOFTHSM2_CONF", path, 1);
    snprintf(cmd, sizeof(cmd),
             "softhsm2-util --init-token --free --label %s --pin 1234 --so-pin 5678 >/dev/null",
             label);
    if (system(cmd) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/pin", t->dir);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs("1234\n", f);
    fclose(f);
    chmod(path, 0600);
    snprintf(t->pin_source, sizeof(t->pin_source), "file:%s", path);
    return 0;
}

static int softhsm_remove(softhsm_fixture *t)
{
    char cmd[300];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
