/*
 * How the existing commands hand over to their ACME forms: enroll with
 * --acme, renew --label without --out (and not --tpm), check with --renew.
 */
#include "acme.h"

#include <string.h>

int acme_argv_has(int argc, char **argv, const char *opt)
{
    size_t n = strlen(opt);
    int i;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strncmp(argv[i], "--", 2) == 0 && strncmp(argv[i] + 2, opt, n) == 0 &&
            (argv[i][2 + n] == '\0' || argv[i][2 + n] == '='))
            return 1;
    }
    return 0;
}

int acme_renew_wanted(int argc, char **argv)
{
    return acme_argv_has(argc, argv, "state-dir") ||
           (acme_argv_has(argc, argv, "label") && !acme_argv_has(argc, argv, "out") &&
            !acme_argv_has(argc, argv, "tpm"));
}

int acme_check_renew_wanted(int argc, char **argv)
{
    return acme_argv_has(argc, argv, "renew") || acme_argv_has(argc, argv, "renew-before");
}
