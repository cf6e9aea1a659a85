/*
 * stress_fork reset|inherit|under-load: after fork() a child uses the key its
 * parent loaded, as a server's workers do.
 *
 * The process loads mtlsks.so through an openssl.cnf (OPENSSL_CONF, as a
 * server is configured) whose provider section names the SoftHSM module and
 * the PIN file; the key was made by `mtls-keystore enroll`. The parent loads
 * the key by URI through OSSL_STORE and signs with it (so it holds a
 * logged-in session pool), then:
 *
 * reset       SoftHSM with library.reset_on_fork = true: a child finds the
 *             module blank, as with a hardware token, and the keystore must
 *             initialise it again, open sessions, log in with the PIN it kept
 *             and find the key object again. 8 children sign 100 times each
 *             while the parent signs 100 times; every signature is verified
 *             in software; all exit 0 (through exit(), so that the
 *             provider's teardown in a child counts too); the parent signs
 *             again afterwards. The children's first signatures (their
 *             logins) take turns: SoftHSM 2.6.1's file store rewrites
 *             token.object at every C_Login, and a process reading the token
 *             at that moment sees it without its serial (CKR_SLOT_ID_INVALID,
 *             "no token") -- a SoftHSM race between processes, shown by
 *             pkcs11-tool alone. After that they all sign at once.
 * inherit     the same with SoftHSM's default (its state survives fork): the
 *             module answers "already initialised" and "already logged in"
 *             in the child.
 * under-load  SoftHSM resetting on fork; 2 threads sign in a tight loop and
 *             the process forks 32 times while they run, so that a fork lands
 *             while a thread is inside the module (C_Sign) or holds the
 *             pool's lock; each child signs 10 times under alarm(): a child
 *             that deadlocks is killed by SIGALRM, reported, and ends the
 *             test.
 *
 * Prints its figures; no timed assertions.
 */
#include "stress_ossl.h"
#include "stress_util.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/provider.h>

#ifndef MTLSKS_PROVIDER_PATH
#error "MTLSKS_PROVIDER_PATH (path of mtlsks.so) must be defined"
#endif
#ifndef MTLSKS_CLI_PATH
#error "MTLSKS_CLI_PATH (path of mtls-keystore) must be defined"
#endif

#define CHILDREN 8
#define CHILD_SIGNS 100
#define PARENT_SIGNS 100
#define LOOP_THREADS 2
#define LOOP_FORKS 32
#define LOOP_CHILD_SIGNS 10
#define CHILD_ALARM 10 /* seconds; a child still running then is deadlocked */

static EVP_PKEY *key, *pub;
static OSSL_LIB_CTX *plain;
static atomic_int stop_loop;
static atomic_long loop_signs, loop_failures;
static atomic_int forking_under_load;
/* Children take turns for their first signature (their login) when the
 * baton pipe is open: one byte circulates. */
static int baton[2] = {-1, -1};

static void *sign_loop(void *arg)
{
    while (!atomic_load(&stop_loop)) {
        atomic_fetch_add(&loop_failures,
                         stress_sign_verify(NULL, key, pub, plain, "loop thread", 1));
        atomic_fetch_add(&loop_signs, 1);
    }
    return NULL;
}

/* A child: signs n times (verifying each) under alarm(), exits 0 or 1. */
static void child(const char *what, int index, int n)
{
    char tag[64], b;
    int failures = 0;

    alarm(CHILD_ALARM);
    snprintf(tag, sizeof(tag), "%s %d (pid %d)", what, index, (int)getpid());
    if (baton[0] >= 0) {
        if (read(baton[0], &b, 1) != 1)
            failures++;
        failures += stress_sign_verify(NULL, key, pub, plain, tag, 1);
        if (write(baton[1], &b, 1) != 1)
            failures++;
        n--;
    }
    failures += stress_sign_verify(NULL, key, pub, plain, tag, n);
    if (failures > 0)
        fprintf(stderr, "%s: %d signatures failed\n", tag, failures);
    /* exit(), not _exit(): the child tears OpenSSL and the provider down at
     * exit as a server's worker does; a crash there counts. Except under
     * load: the parent's signing threads do not exist in the child, and what
     * they had in hand would read as leaks to LeakSanitizer. */
    if (atomic_load(&forking_under_load))
        _exit(failures == 0 ? 0 : 1);
    exit(failures == 0 ? 0 : 1);
}

static pid_t fork_child(const char *what, int index, int n)
{
    pid_t pid;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0)
        stress_fail("fork failed");
    if (pid == 0)
        child(what, index, n);
    return pid;
}

/* 0 when the child exited 0; otherwise says why and returns 1 (2 for a
 * deadlock). */
static int reap(pid_t pid, const char *what, int index)
{
    int status = 0;

    if (waitpid(pid, &status, 0) != pid) {
        fprintf(stderr, "%s %d: waitpid failed\n", what, index);
        return 1;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
        fprintf(stderr, "%s %d (pid %d): deadlocked, killed by alarm() after %d s\n", what, index,
                (int)pid, CHILD_ALARM);
        return 2;
    }
    if (WIFSIGNALED(status))
        fprintf(stderr, "%s %d (pid %d): killed by signal %d\n", what, index, (int)pid,
                WTERMSIG(status));
    else
        fprintf(stderr, "%s %d (pid %d): exit %d\n", what, index, (int)pid, WEXITSTATUS(status));
    return 1;
}

/* reset, inherit: children sign with the parent's key while it signs. */
static void children_sign(int take_turns)
{
    pid_t pids[CHILDREN];
    int i, child_failures = 0, parent_failures;
    double t0 = stress_now();

    if (take_turns) {
        if (pipe(baton) != 0 || write(baton[1], "x", 1) != 1)
            stress_fail("pipe failed");
    }
    for (i = 0; i < CHILDREN; i++)
        pids[i] = fork_child("child", i, CHILD_SIGNS);
    parent_failures = stress_sign_verify(NULL, key, pub, plain, "parent", PARENT_SIGNS);
    for (i = 0; i < CHILDREN; i++)
        child_failures += reap(pids[i], "child", i) != 0;
    parent_failures += stress_sign_verify(NULL, key, pub, plain, "parent after", 10);
    printf("-- %d children x %d signatures after fork (verified), %d by the parent meanwhile and "
           "10 after: %d children failed, %d parent signatures failed, %.2f s\n",
           CHILDREN, CHILD_SIGNS, PARENT_SIGNS, child_failures, parent_failures, stress_now() - t0);
    if (child_failures + parent_failures > 0)
        stress_fail("%d children and %d parent signatures failed", child_failures, parent_failures);
    printf("PASS: %d children signed %d times each with the key their parent loaded\n", CHILDREN,
           CHILD_SIGNS);
}

/* under-load: fork while threads sign. */
static void fork_under_load(void)
{
    atomic_store(&forking_under_load, 1);
    pthread_t loops[LOOP_THREADS];
    int i, failed = 0, deadlocked = 0, forks = 0;
    double t0 = stress_now();

    for (i = 0; i < LOOP_THREADS; i++)
        if (pthread_create(&loops[i], NULL, sign_loop, NULL) != 0)
            stress_fail("pthread_create failed");
    while (atomic_load(&loop_signs) < 20)
        usleep(1000);
    srand((unsigned)getpid());
    for (i = 0; i < LOOP_FORKS && deadlocked == 0; i++) {
        pid_t pid;
        int r;

        usleep((useconds_t)(rand() % 3000));
        pid = fork_child("fork under load", i, LOOP_CHILD_SIGNS);
        forks++;
        r = reap(pid, "fork under load", i);
        failed += r != 0;
        deadlocked += r == 2;
    }
    atomic_store(&stop_loop, 1);
    for (i = 0; i < LOOP_THREADS; i++)
        pthread_join(loops[i], NULL);
    printf("-- %d forks while %d threads signed (%ld signatures, %ld failed): %d children failed, "
           "%d of them deadlocked; %.2f s\n",
           forks, LOOP_THREADS, atomic_load(&loop_signs), atomic_load(&loop_failures), failed,
           deadlocked, stress_now() - t0);
    if (deadlocked > 0)
        stress_fail("a child forked while another thread signed deadlocked (stopped at the "
                    "first); see its backtrace with MTLSKS_KEEP_TMP=1 and gdb -p");
    if (failed > 0 || atomic_load(&loop_failures) > 0)
        stress_fail("%d children and %ld loop signatures failed", failed,
                    atomic_load(&loop_failures));
    if (stress_sign_verify(NULL, key, pub, plain, "parent after", 10) != 0)
        stress_fail("the parent cannot sign after the forks");
    printf("PASS: %d children forked while %d threads signed, none deadlocked\n", forks,
           LOOP_THREADS);
}

int main(int argc, char **argv)
{
    stress_token t;
    char *uri, name[64];
    const char *mode = argc == 2 ? argv[1] : "";
    int reset;

    if (strcmp(mode, "reset") != 0 && strcmp(mode, "inherit") != 0 &&
        strcmp(mode, "under-load") != 0) {
        fprintf(stderr, "usage: stress_fork reset|inherit|under-load\n");
        return 2;
    }
    reset = strcmp(mode, "inherit") != 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(name, sizeof(name), "stress_fork.%s", mode);
    stress_token_init(&t, name, "stress", reset, MTLSKS_PROVIDER_PATH);
    uri = stress_enroll(&t, MTLSKS_CLI_PATH, "fork-key", "ec:P-256");
    printf("-- key %s (SoftHSM library.reset_on_fork = %s)\n", uri, reset ? "true" : "false");

    /* From here on, as a server: OpenSSL configured by OPENSSL_CONF. */
    stress_token_use_config(&t);
    if (OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL) != 1 ||
        !OSSL_PROVIDER_available(NULL, "mtlsks")) {
        stress_print_errors("config");
        stress_fail("the mtlsks provider did not load from %s", t.openssl_cnf);
    }
    plain = OSSL_LIB_CTX_new();
    if (plain == NULL)
        stress_fail("OSSL_LIB_CTX_new failed");
    key = stress_load_key(NULL, uri, NULL);
    pub = stress_public_copy(key, plain);
    if (stress_sign_verify(NULL, key, pub, plain, "parent before fork", 10) != 0)
        stress_fail("the parent cannot sign before forking");

    if (strcmp(mode, "under-load") == 0)
        fork_under_load();
    else
        children_sign(reset);

    EVP_PKEY_free(pub);
    EVP_PKEY_free(key);
    OSSL_LIB_CTX_free(plain);
    free(uri);
    return 0;
}
