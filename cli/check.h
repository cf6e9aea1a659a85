/*
 * What check collects (one entry per certificate, from the tokens and the
 * --cert files) and what its hooks are run on.
 */
#ifndef MTLSKS_CLI_CHECK_H
#define MTLSKS_CLI_CHECK_H

#include <stddef.h>
#include <time.h>

#include "cli.h"
#include "lifecycle.h"

#define CMD "check"

/* Beyond CLI_EXIT_OK and CLI_EXIT_USAGE: probes tell "due" from "cannot see". */
enum { CHECK_EXIT_DUE = CLI_EXIT_FAIL, CHECK_EXIT_UNREADABLE = 3 };

typedef enum check_status { ST_OK, ST_EXPIRING, ST_EXPIRED } check_status;

typedef struct check_entry {
    int from_file;
    char *token;     /* token label (token entries) */
    char *token_uri; /* token entries */
    char *label;     /* CKA_LABEL (token entries) */
    char *uri;       /* the certificate's URI (token entries) */
    const char *file;
    int file_index; /* 0: the leaf of a file, 1..: its chain */
    cli_role role;
    int pending; /* a renewal is pending for the key (NAME.next exists) */
    cli_cert_info ci;
    check_status status;
} check_entry;

typedef struct check_run {
    check_entry *v;
    size_t n, cap;
    char **errors;
    size_t nerrors;
    int days;
    time_t now;
} check_run;

/* Fails the check: expiring or expired, and not a retired certificate. */
int check_entry_fails(const check_entry *e);

/* Runs the hook once per key that is due (check_hook.c); 1 when every run exited 0. */
int check_run_hooks(const check_run *r, const char *hook);

#endif
