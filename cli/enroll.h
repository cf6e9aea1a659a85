/*
 * What the two halves of enroll share: the options, read and checked in
 * cmd_enroll.c, which makes token keys itself and hands TPM keys to
 * enroll_tpm.c.
 */
#ifndef MTLSKS_CLI_ENROLL_H
#define MTLSKS_CLI_ENROLL_H

#include <stdint.h>

#include "cli.h"
#include "csr.h"

#define CMD "enroll"

typedef struct enroll_opts {
    int slot;          /* -1 = not given */
    const char *token; /* NULL = not given */
    const char *label;
    const char *key_type;
    cli_csr_args csr;
    const char *out;
    const char *key_ref;
    int force;
    int tpm;
    const char *persist; /* --persist HANDLE as given */
    uint32_t handle;     /* parsed; 0 = not persistent */
    const char *password_source;
} enroll_opts;

/* " --subject ... --out FILE [--force]" on stderr: the rest of the csr
 * command that finishes an enroll. */
void enroll_print_csr_args(const enroll_opts *o);

/* enroll --tpm, after the options, the key type and the request were checked. */
int enroll_tpm(cli_globals *g, const enroll_opts *o, const mks_keygen_params *kp,
               const cli_csr_req *req);

#endif
