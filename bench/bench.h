/*
 * mtlsks-bench: what a hardware key costs through each path a program can
 * take to it (issue 5). One process measures one row; ci/bench runs the rows
 * and builds the table. Each row prints one JSON object on one line.
 *
 * Files: bench_main.c (command line, subcommands), harness.c (threads,
 * clocks, JSON, RSS), sign_p11.c (raw PKCS#11: the ceiling), sign_evp.c
 * (EVP_DigestSign through a provider or software; key loading), engine.c
 * (libp11's pkcs11 engine, deprecated ENGINE API), keystore.c (the keystore
 * API directly, PKCS#11 and TPM), tls.c (mutual-TLS handshakes over memory
 * BIOs), async.c (the same with SSL_MODE_ASYNC, many handshakes in flight on
 * one thread, a slow token), tls_load.c (clients against a running server),
 * counters.c (the PKCS#11 shim's counters, TPM pcap files).
 */
#ifndef MTLSKS_BENCH_H
#define MTLSKS_BENCH_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define BENCH_MAX_THREADS 16
#define BENCH_MAX_PATHS 8

typedef enum bench_alg {
    BENCH_EC,        /* ECDSA P-256 with SHA-256 */
    BENCH_RSA_PKCS1, /* RSA-2048 PKCS#1 v1.5 with SHA-256 */
    BENCH_RSA_PSS,   /* RSA-2048 PSS, SHA-256, MGF1-SHA-256, salt 32 (as TLS 1.3) */
} bench_alg;

typedef struct bench_opts {
    const char *cmd;  /* subcommand */
    const char *impl; /* raw, raw-token, keystore, provider, p11prov, engine, soft,
                          tpm2-openssl */
    bench_alg alg;
    const char *alg_name;
    const char *key;       /* URI, label or file, by impl */
    const char *key2;      /* tls: the client's key */
    const char *module;    /* PKCS#11 module (raw, engine, keystore) */
    const char *pin_file;  /* user PIN, first line (raw, engine, keystore) */
    const char *config;    /* openssl.cnf that loads the provider */
    const char *shim;      /* mtlsks-p11shim.so, to count token calls through */
    const char *tcti;      /* TPM TCTI (keystore, tpm-keygen) */
    const char *pass_file; /* TPM key password, first line (keystore, provider, tls, tpm-keygen) */
    const char *out;       /* tpm-keygen: output file */
    const char *note;      /* free text copied into the JSON */
    int threads;
    double warmup, seconds;
    double slice;  /* several paths: seconds each runs before the next one's turn */
    long count;    /* > 0: this many operations, one thread, no clock */
    int init_only; /* sign: time EVP_DigestSignInit_ex alone (diagnostic) */
    /* tls-load: the server, the client's certificate (--key: its key), the CA,
     * a string every answer must contain. */
    const char *connect, *cert, *ca, *expect;
    /* tls-async: handshakes in flight, the token's added latency (ms). */
    int inflight;
    double latency_ms;
} bench_opts;

/* ---- harness.c ----------------------------------------------------------- */

/* One operation on thread `thread` (0-based); 1 done, 0 failed. */
typedef int bench_op_fn(void *arg, int thread);

typedef struct bench_result {
    unsigned long ops, errors;
    double seconds; /* measured interval */
    double ops_per_s;
    /* CPU time of the measuring threads (this process: the token too when
     * it is a library, not a TPM in another process), and ops per CPU
     * second: what one operation costs, whatever else the machine runs. */
    double cpu_seconds;
    double ops_per_cpu_s;
} bench_result;

/* One path to a key: its name (an impl) and its operation. */
typedef struct bench_path {
    const char *name;
    bench_op_fn *op;
    void *arg;
} bench_path;

/*
 * Runs the paths on o->threads threads: o->warmup seconds unmeasured, then
 * o->seconds measured; with several paths the threads run one at a time,
 * each for o->slice seconds in turn (warm-up alike), and r[k] is path k's
 * share. With o->count > 0 instead (one path): three operations of warm-up,
 * `before` (may be NULL), then o->count operations on the calling thread.
 * Returns 1 when every measured operation succeeded.
 */
int bench_run_paths(const bench_opts *o, const bench_path *paths, int npaths, void (*before)(void),
                    bench_result *r);

double bench_now(void);
/* VmRSS of this process in KiB, -1 when unknown. */
long bench_rss_kb(void);
/* Prints OpenSSL's error queue once per process (first failure), then clears. */
void bench_report_errors(const char *what);
/* Reads the first line of a file (a PIN) into buf; 0 on failure. */
int bench_read_pin(const char *path, char *buf, size_t size);

/* One JSON object per row on stdout: json_begin, fields, json_end. */
void json_begin(const bench_opts *o, const char *bench);
void json_str(const char *key, const char *val);
void json_num(const char *key, double val);
void json_int(const char *key, long val);
/* A raw JSON value (object, array) already formatted. */
void json_raw(const char *key, const char *val);
void json_result(const bench_result *r);
void json_end(void);

/* ---- sign_evp.c ------------------------------------------------------------ */

/* Loads the config (NULL: none) into the default library context; the
 * provider modes call this first, so load time is what it measures. */
int bench_load_config(const char *path);
/* Loads the tpm2-openssl provider, then the default one. */
int bench_load_tpm2_provider(void);
/* What o->impl needs loaded first: our config, tpm2-openssl. */
int bench_load_providers(const bench_opts *o);
/* A private key by URI or file through OSSL_STORE; propq ("?provider=NAME")
 * prefers one provider's loader where several take pkcs11: URIs; pass_file
 * (may be NULL) answers the passphrase prompt. */
EVP_PKEY *bench_store_load(const char *uri, const char *propq, const char *pass_file);
/* The OSSL_STORE properties of a path: ours, pkcs11-provider's or none. */
const char *bench_impl_propq(const char *impl);
/* The first line of a password file into buf (NUL-terminated); its length,
 * or -1 when it cannot be read. */
int bench_read_pass(const char *file, char *buf, int size);
/* A new software key in the default provider for alg. */
EVP_PKEY *bench_soft_key(bench_alg alg);
/* One EVP_DigestSign of a 128-byte message; sig gets up to *siglen bytes. */
int bench_evp_sign(EVP_PKEY *pkey, bench_alg alg, unsigned char *sig, size_t *siglen);
/* Checks a signature with the key's public half in the default provider. */
int bench_evp_verify(EVP_PKEY *pkey, bench_alg alg, const unsigned char *sig, size_t siglen);
/* The key's public half as a default-provider key. */
EVP_PKEY *bench_public_copy(EVP_PKEY *pkey);

int cmd_sign(const bench_opts *o);
int cmd_startup(const bench_opts *o);

/* ---- sign_p11.c -------------------------------------------------------------- */

/* The ceiling's paths, "raw" (a session-object copy of the key) and
 * "raw-token" (the token object): the module by dlopen, a session per
 * thread. */
int raw_path_setup(const bench_opts *o, const char *impl, bench_path *path);

/* ---- engine.c ------------------------------------------------------------------ */

/* libp11's engine with MODULE_PATH and PIN set, initialised; NULL on failure. */
void *bench_engine_open(const char *module, const char *pin_file);
EVP_PKEY *bench_engine_load(void *engine, const char *uri);

/* ---- keystore.c ------------------------------------------------------------------ */

int keystore_path_setup(const bench_opts *o, bench_path *path);
void keystore_path_free(void);
int cmd_tpm_keygen(const bench_opts *o);

/* ---- tls.c --------------------------------------------------------------------- */

int cmd_tls(const bench_opts *o);
/* A certificate for pub, issued by issuer_key (issuer NULL: self-signed CA). */
X509 *bench_make_cert(EVP_PKEY *pub, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                      long serial);
/* An SSL_CTX for one side: TLS 1.3 only, its key and a certificate for it
 * issued by the CA, peer verification against the CA, no tickets. */
SSL_CTX *bench_side_ctx(int server, EVP_PKEY *key, const char *cn, X509 *ca, EVP_PKEY *ca_key,
                        long serial);

/* ---- tls_load.c, async.c ----------------------------------------------------------- */

int cmd_tls_load(const bench_opts *o);
int cmd_tls_async(const bench_opts *o);

/* ---- counters.c ------------------------------------------------------------------- */

/* Finds the shim (NULL path: not counting); 0 when it is not loaded. */
int shim_attach(const char *path);
void shim_reset(void);
/* The shim's fault rules (mtlsks_shim_set_faults): 1 when set. */
int shim_set_faults(const char *spec);
/* The most C_Sign calls at once since the last reset (0: not attached). */
unsigned long shim_peak(const char *name);
/* {"C_SignInit":1.00,...} per operation, for the calls since shim_reset. */
void shim_json_per_op(const char *key, unsigned long ops);

int cmd_pcap_count(const bench_opts *o, const char *file);

#endif
