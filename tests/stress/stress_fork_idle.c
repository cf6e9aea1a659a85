/*
 * stress_fork_idle: a process that never touches the token after fork()
 * costs the token nothing -- the nginx cache manager, a pre-forked worker
 * that has served nobody yet, a shell-out from a server.
 *
 * 1. Key-less: the keystore context and the provider are loaded (built in,
 *    so the keystore's call counters are the program's own) and libssl has
 *    read the provider's algorithms (SSL_CTX_new), but no key was ever
 *    loaded. 100 forks.
 * 2. Key loaded and used: the parent loads a token key through the provider
 *    and signs with it (a logged-in session sits in its pool). 100 forks.
 *
 * Each child does work that does not need the token (a SHA-256 digest, an
 * SSL_CTX made and freed), frees what it inherited (the key, the library
 * context, the keystore) and leaves through exit(). An atexit handler
 * registered before anything else -- so it runs last, after OpenSSL's own
 * cleanup -- compares every PKCS#11 call counter (all 68 functions of
 * PKCS#11 2.40) with the parent's snapshot taken before the fork, and makes
 * the child exit 3 when any moved. The parent's counters do not move across
 * the forks either. Prints its figures.
 */
#include "stress_builtin.h"
#include "stress_ossl.h"
#include "stress_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "mtlsks_provider.h"

#define FORKS 100
#define CHILD_EXIT_CALLS 3

static stress_builtin b;
static unsigned long snap[STRESS_P11_FUNCS];
static int in_child;

/* Runs after every other exit handler of a child, OpenSSL's included. */
static void check_calls_at_exit(void)
{
    char diff[1024];

    if (!in_child)
        return;
    if (stress_p11_calls_diff(snap, diff, sizeof(diff)) > 0) {
        fprintf(stderr, "child %d: PKCS#11 calls after fork: %s\n", (int)getpid(), diff);
        fflush(stderr);
        _exit(CHILD_EXIT_CALLS);
    }
}

static void idle_child(EVP_PKEY *key, SSL_CTX *inherited)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD *sha256;
    SSL_CTX *ctx;
    int ok;

    in_child = 1;
    alarm(30);
    sha256 = EVP_MD_fetch(b.libctx, "SHA256", NULL);
    ctx = SSL_CTX_new_ex(b.libctx, NULL, TLS_server_method());
    ok = sha256 != NULL && EVP_Digest("idle", 4, md, &mdlen, sha256, NULL) == 1 && ctx != NULL;
    SSL_CTX_free(ctx);
    EVP_MD_free(sha256);
    SSL_CTX_free(inherited);
    EVP_PKEY_free(key);
    stress_builtin_free(&b);
    exit(ok ? 0 : 1);
}

/* Forks n idle children one after the other; returns how many failed. */
static int fork_idle(const char *phase, EVP_PKEY *key, SSL_CTX *ctx, int n)
{
    char diff[1024];
    int i, failed = 0;
    double t0 = stress_now();

    stress_p11_calls_snapshot(snap);
    for (i = 0; i < n; i++) {
        int status = 0;
        pid_t pid;

        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0)
            stress_fail("fork failed");
        if (pid == 0)
            idle_child(key, ctx);
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (failed++ < 5)
                fprintf(stderr, "%s: child %d: %s %d%s\n", phase, i,
                        WIFSIGNALED(status) ? "killed by signal" : "exit",
                        WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                        WIFEXITED(status) && WEXITSTATUS(status) == CHILD_EXIT_CALLS
                            ? " (it called the token)"
                            : "");
        }
    }
    if (stress_p11_calls_diff(snap, diff, sizeof(diff)) > 0)
        stress_fail("%s: the parent's PKCS#11 calls moved across the forks: %s", phase, diff);
    printf("-- %s: %d forks, %d children made a PKCS#11 call or failed, parent's calls "
           "unchanged; %.2f s\n",
           phase, n, failed, stress_now() - t0);
    return failed;
}

int main(void)
{
    stress_token t;
    SSL_CTX *ctx;
    EVP_PKEY *key, *pub;
    OSSL_LIB_CTX *plain;
    char *uri;
    unsigned long before;
    int failed = 0;

    /* First, so that it runs last in every child. */
    atexit(check_calls_at_exit);
    setvbuf(stdout, NULL, _IOLBF, 0);
    stress_token_init(&t, "stress_fork_idle", "stress", 1, NULL);

    /* 1. Provider loaded, no key. */
    stress_builtin_init(&b, &t);
    ctx = SSL_CTX_new_ex(b.libctx, NULL, TLS_server_method());
    if (ctx == NULL)
        stress_fail("SSL_CTX_new_ex failed");
    before = stress_p11_calls_total();
    printf("-- provider loaded, no key: %lu PKCS#11 calls so far\n", before);
    failed += fork_idle("key-less", NULL, ctx, FORKS);

    /* 2. A key loaded and used before the forks. */
    plain = OSSL_LIB_CTX_new();
    uri = stress_builtin_keygen(&b, &t, "idle-key");
    key = stress_load_key(b.libctx, uri, "?provider=" MKS_PROVIDER_NAME);
    pub = stress_public_copy(key, plain);
    if (stress_sign_verify(b.libctx, key, pub, plain, "parent", 5) != 0)
        stress_fail("the parent cannot sign");
    printf("-- key loaded and used: %lu PKCS#11 calls so far, C_Login %lu, C_Sign %lu\n",
           stress_p11_calls_total(), mks_pkcs11_call_count("C_Login"),
           mks_pkcs11_call_count("C_Sign"));
    failed += fork_idle("key loaded", key, ctx, FORKS);

    /* The parent's key still works after its children came and went. */
    if (stress_sign_verify(b.libctx, key, pub, plain, "parent after", 5) != 0)
        stress_fail("the parent cannot sign after the forks");

    EVP_PKEY_free(pub);
    EVP_PKEY_free(key);
    SSL_CTX_free(ctx);
    free(uri);
    stress_builtin_free(&b);
    OSSL_LIB_CTX_free(plain);
    if (failed > 0)
        stress_fail("%d of %d idle children made PKCS#11 calls or failed", failed, 2 * FORKS);
    printf("PASS: %d forks that never used the token made 0 PKCS#11 calls\n", 2 * FORKS);
    return 0;
}
