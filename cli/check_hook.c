/*
 * check --hook PROGRAM: PROGRAM NAME runs once for each key whose
 * certificate is due, with the certificate's facts in MTLSKS_* variables.
 */
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

extern char **environ;

/* Gets a hook: the key's own certificate, not a CA's or a retired one. */
static int entry_hooks(const check_entry *e)
{
    return check_entry_fails(e) && (e->from_file ? e->file_index == 0 : e->role != CLI_ROLE_CHAIN);
}

/* The name a key goes by: NAME for NAME and NAME.next. */
static char *base_label(const char *label)
{
    size_t n = strlen(label);

    if (cli_label_role(label) == CLI_ROLE_PENDING)
        n -= strlen(CLI_SUFFIX_NEXT);
    return strndup(label, n);
}

/* environ plus our variables; malloc'd array of (partly malloc'd) strings. */
static char **hook_env(const check_entry *e, char ***owned, size_t *nowned)
{
    size_t n = 0, i, k = 0;
    char **env, **mine;
    char days[32];
    const char *vars[7][2] = {
        {"MTLSKS_LABEL", e->from_file ? "" : e->label},
        {"MTLSKS_TOKEN", e->from_file ? "" : e->token},
        {"MTLSKS_CERT_URI", e->from_file || e->uri == NULL ? "" : e->uri},
        {"MTLSKS_CERT_FILE", e->from_file ? e->file : ""},
        {"MTLSKS_NOT_AFTER", e->ci.not_after},
        {"MTLSKS_DAYS_LEFT", days},
        {"MTLSKS_RENEWAL_PENDING", e->pending ? "1" : "0"},
    };
    const size_t nvars = sizeof(vars) / sizeof(vars[0]);

    snprintf(days, sizeof(days), "%lld", e->ci.days_left);
    while (environ[n] != NULL)
        n++;
    env = calloc(n + nvars + 1, sizeof(*env));
    mine = calloc(nvars, sizeof(*mine));
    if (env == NULL || mine == NULL) {
        free(env);
        free(mine);
        return NULL;
    }
    for (i = 0; i < n; i++)
        if (strncmp(environ[i], "MTLSKS_", 7) != 0)
            env[k++] = environ[i];
    for (i = 0; i < nvars; i++) {
        size_t len = strlen(vars[i][0]) + strlen(vars[i][1]) + 2;

        mine[i] = malloc(len);
        if (mine[i] == NULL)
            break;
        snprintf(mine[i], len, "%s=%s", vars[i][0], vars[i][1]);
        env[k++] = mine[i];
    }
    *owned = mine;
    *nowned = i;
    if (i < nvars) {
        for (k = 0; k < i; k++)
            free(mine[k]);
        free(mine);
        free(env);
        return NULL;
    }
    return env;
}

/* Runs the hook for one certificate; 1 when it exited 0. */
static int run_hook(const char *hook, const check_entry *e)
{
    char name[1100], **env, **owned = NULL;
    char *argv[3];
    size_t nowned = 0, i;
    pid_t pid;
    int rc, status = 0, ok = 0;

    if (e->from_file)
        snprintf(name, sizeof(name), "%s", e->file);
    else {
        char *base = base_label(e->label);

        snprintf(name, sizeof(name), "%s", base != NULL ? base : e->label);
        free(base);
    }
    env = hook_env(e, &owned, &nowned);
    if (env == NULL) {
        cli_fail(CMD, "out of memory");
        return 0;
    }
    argv[0] = (char *)hook;
    argv[1] = name;
    argv[2] = NULL;
    fflush(stdout);
    fflush(stderr);
    rc = posix_spawn(&pid, hook, NULL, NULL, argv, env);
    if (rc != 0) {
        cli_fail(CMD, "cannot run the hook %s: %s", hook, strerror(rc));
        goto done;
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            cli_fail(CMD, "waiting for the hook %s: %s", hook, strerror(errno));
            goto done;
        }
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        ok = 1;
    else if (WIFEXITED(status))
        cli_fail(CMD, "hook %s %s exited with %d", hook, name, WEXITSTATUS(status));
    else
        cli_fail(CMD, "hook %s %s was killed by signal %d", hook, name,
                 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
done:
    for (i = 0; i < nowned; i++)
        free(owned[i]);
    free(owned);
    free(env);
    return ok;
}

int check_run_hooks(const check_run *r, const char *hook)
{
    size_t i, k;
    int ok = 1;

    for (i = 0; i < r->n; i++) {
        const check_entry *e = &r->v[i];
        int dup = 0;

        if (!entry_hooks(e))
            continue;
        /* NAME and NAME.next (mid hand-over) are one key to renew. */
        for (k = 0; k < i && !e->from_file; k++) {
            const check_entry *f = &r->v[k];
            char *a, *b;

            if (f->from_file || !entry_hooks(f) || strcmp(f->token, e->token) != 0)
                continue;
            a = base_label(e->label);
            b = base_label(f->label);
            dup = a != NULL && b != NULL && strcmp(a, b) == 0;
            free(a);
            free(b);
            if (dup)
                break;
        }
        if (!dup && !run_hook(hook, e))
            ok = 0;
    }
    return ok;
}
