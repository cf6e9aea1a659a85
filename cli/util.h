/*
 * Small pieces every subcommand uses: error reporting in one format, output
 * files that appear whole or not at all, hex and JSON text.
 */
#ifndef MTLSKS_CLI_UTIL_H
#define MTLSKS_CLI_UTIL_H

#include <stdio.h>
#include <stddef.h>
#include <sys/types.h>

#include <mtlsks/keystore.h>

#define CLI_PROGRAM "mtls-keystore"

/* Exit codes of the program. */
enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };

#if defined(__GNUC__) || defined(__clang__)
#define CLI_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CLI_PRINTF(f, a)
#endif

/* A message describing why a helper failed; the caller adds "mtls-keystore CMD: ". */
typedef struct cli_err {
    char msg[768];
} cli_err;

void cli_err_set(cli_err *err, const char *fmt, ...) CLI_PRINTF(2, 3);
/* As cli_err_set, then ": " and the reason of the last OpenSSL error; clears the queue. */
void cli_err_set_ossl(cli_err *err, const char *fmt, ...) CLI_PRINTF(2, 3);

/* "mtls-keystore CMD: message" on stderr. */
void cli_fail(const char *cmd, const char *fmt, ...) CLI_PRINTF(2, 3);
/* As cli_fail, then ": " and mks_last_error() (or the name of rv when empty). */
void cli_fail_ks(const char *cmd, mks_rv rv, const char *fmt, ...) CLI_PRINTF(3, 4);
/* As cli_fail, then ": " and the last OpenSSL error; clears the queue. */
void cli_fail_ossl(const char *cmd, const char *fmt, ...) CLI_PRINTF(2, 3);

/* What cli_getopt returns for a long option the user abbreviated. */
#define CLI_OPT_ABBREVIATED 0x7fff

struct option;

/*
 * getopt_long without its prefix matching: glibc takes "--pin 1234" for
 * "--pin-source 1234", so an abbreviation could slip a PIN into a path. A
 * long option must be written out in full; else CLI_OPT_ABBREVIATED is
 * returned, which cli_usage_error reports.
 */
int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts);

/*
 * Reports what getopt_long (with opterr = 0 and an optstring starting with
 * ':' after any '+') returned as c ('?' or ':') for argv, as
 * "mtls-keystore CMD: unknown option '--x'" plus a --help hint. Returns
 * CLI_EXIT_USAGE.
 */
int cli_usage_error(const char *cmd, char **argv, int c);

/*
 * Checks, before any work is done, that `path` may be written: it names no
 * directory, it does not exist unless `force`, and a file can be created in
 * its directory (tried for real, so read-only file systems and root are
 * judged right). Returns 1 when it may, 0 with err set.
 */
int cli_out_check(const char *path, int force, cli_err *err);

/*
 * Writes data to `path` so that the file appears complete or not at all:
 * a temp file in the same directory, created with `mode` (less the umask),
 * written, fsync'ed, then moved into place and the directory fsync'ed.
 * Without `force` an existing path is refused, also one that appeared
 * after cli_out_check (link(2) refuses to replace). The temp file never
 * outlives a failure. Returns 1 when written, 0 with err set.
 */
int cli_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, int force,
                          cli_err *err);

/*
 * Writes a file a server reads, atomically, replacing it
 * (cli_write_file_atomic with force). A file replaced keeps its owner, group
 * and mode (a key reference made readable to a service's group stays so); a
 * new one gets `mode`. Prints errors, and a warning when the owner or mode
 * cannot be kept, for cmd; returns 1 when written.
 */
int cli_write_replacing(const char *cmd, const char *path, const void *data, size_t len,
                        mode_t mode);

/* 1 when a and b name one file: the same path, or the same device and inode. */
int cli_same_file(const char *a, const char *b);

/*
 * Reads a whole file (at most `max` bytes) into a malloc'd buffer with a NUL
 * after the data. Returns 1, or 0 with err set.
 */
int cli_read_file(const char *path, size_t max, unsigned char **data, size_t *len, cli_err *err);

/* "private-key", "public-key", "certificate": the names list and show print. */
const char *cli_class_name(mks_obj_class c);

/* "rsa", "ec"; NULL for a key of no known type. */
const char *cli_key_type_name(mks_key_type t);

/* Lower-case hex of len bytes into a malloc'd string; NULL on allocation failure. */
char *cli_hex(const unsigned char *p, size_t len);

/* Writes s for a POSIX shell: as is when it is plain, else in single quotes. */
void cli_shell_quote(FILE *f, const char *s);

/* Writes s as a JSON string literal with quotes, escaping as RFC 8259 asks. NULL → null. */
void cli_json_str(FILE *f, const char *s);

#endif
