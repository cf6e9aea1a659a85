/*
 * Token calls inside OpenSSL ASYNC jobs (SSL_MODE_ASYNC): the provider,
 * built in as the CLI builds it, hands them to keystore workers and pauses
 * the job on an eventfd. The token is a SoftHSM token behind the PKCS#11
 * shim, which adds a delay to C_Sign / C_Decrypt on demand (a slow network
 * HSM); a swtpm gives the TPM case when it is installed.
 *
 * No assertion is about time: that a job waits for the token without
 * holding up its thread shows as ASYNC_PAUSE returned to the caller while
 * the signature is still outstanding, and sixteen jobs paused at once.
 *
 * An abandoned job (its ASYNC_WAIT_CTX freed while it waits, as SSL_free
 * does) must leave nothing of ours behind: the operation is freed when the
 * token answers, the eventfd is closed, the session goes back to the pool.
 * OpenSSL itself has no call that frees a paused ASYNC_JOB: the job, its
 * stack and its copy of the arguments are lost whoever signs in it. Those
 * three blocks, allocated by ASYNC_start_job itself, are what
 * __lsan_default_suppressions and tests/lib/valgrind.supp leave out;
 * anything allocated inside the job still counts.
 *
 * Arguments: a cmocka test filter ("*abandoned*"), as the valgrind run in
 * tests/integration/async_memcheck.sh passes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/async.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/store.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <mtlsks/keystore.h>

#include "builtin_provider.h"
#include "p11shim.h"
#include "swtpm_fixture.h"

#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define JOBS 16
#define CONNS 8

/* OpenSSL's own loss when a paused job is abandoned (see the top). The
 * frames between malloc and ASYNC_start_job are libcrypto's own, without
 * frame pointers: the slow unwinder finds ASYNC_start_job behind them. */
#define SANITIZER_HOOK __attribute__((visibility("default"), used))
SANITIZER_HOOK const char *__lsan_default_suppressions(void);
SANITIZER_HOOK const char *__lsan_default_suppressions(void)
{
    return "leak:ASYNC_start_job\n";
}
SANITIZER_HOOK const char *__asan_default_options(void);
SANITIZER_HOOK const char *__asan_default_options(void)
{
    return "fast_unwind_on_malloc=0";
}

static char dir[64];
static mks_ctx *ks;
static builtin_provider bp;
static OSSL_LIB_CTX *libctx; /* bp's */
static EVP_PKEY *ec_key, *ec_pub, *rsa_key, *rsa_pub;
static mtlsks_shim_set_faults_fn *shim_faults;
static swtpm_fixture tpm;
static int have_tpm;

static const unsigned char msg[] = "a message signed inside an ASYNC job";

/* ---- fixture ---------------------------------------------------------------------- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(path, 0600);
}

static EVP_PKEY *public_of(const mks_key *key)
{
    size_t len = 0;
    const unsigned char *der = mks_key_get0_spki(key, &len);

    return d2i_PUBKEY(NULL, &der, (long)len);
}

/* The one private key at uri, through the provider's store. */
static EVP_PKEY *store_load(const char *uri)
{
    OSSL_STORE_CTX *st = OSSL_STORE_open_ex(uri, libctx, "?provider=" MKS_PROVIDER_NAME, NULL, NULL,
                                            NULL, NULL, NULL);
    EVP_PKEY *pkey = NULL;

    while (st != NULL && pkey == NULL && !OSSL_STORE_eof(st)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(st);
        if (info != NULL && OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            pkey = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(st);
    if (pkey == NULL)
        ERR_print_errors_fp(stderr);
    return pkey;
}

/* A key made in the token; *pub gets its public half in software. */
static EVP_PKEY *token_key(mks_key_type type, const char *label, EVP_PKEY **pub)
{
    mks_keygen_params kp = {type, type == MKS_KEY_RSA ? 2048 : 0,
                            type == MKS_KEY_EC ? "P-256" : NULL, label};
    mks_key *key = NULL;
    char uri[256];
    EVP_PKEY *pkey;

    if (mks_keygen(ks, "pkcs11:token=async", &kp, NULL, &key) != MKS_OK) {
        fprintf(stderr, "keygen %s: %s\n", label, mks_last_error());
        return NULL;
    }
    *pub = public_of(key);
    mks_key_free(key);
    snprintf(uri, sizeof(uri), "pkcs11:token=async;object=%s;type=private", label);
    pkey = store_load(uri);
    return *pub != NULL ? pkey : NULL;
}

static int setup(void **state)
{
    char path[128], conf[256], pin_source[160], cmd[256];
    mks_config cfg = {.pkcs11_module = MTLSKS_SHIM_PATH, .pin_source = pin_source};
    void *shim;

    snprintf(dir, sizeof(dir), "/tmp/mtlsks-async-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/tokens", dir);
    mkdir(path, 0700);
    snprintf(conf, sizeof(conf),
             "directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
             dir);
    snprintf(path, sizeof(path), "%s/softhsm2.conf", dir);
    write_file(path, conf);
    setenv("SOFTHSM2_CONF", path, 1);
    setenv("MTLSKS_SHIM_MODULE", SOFTHSM_MODULE, 1);
    unsetenv("MTLSKS_SHIM_FAULTS");
    snprintf(cmd, sizeof(cmd),
             "softhsm2-util --init-token --free --label async --pin 1234 --so-pin 5678 "
             ">/dev/null");
    if (system(cmd) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/pin", dir);
    write_file(path, "1234\n");
    snprintf(pin_source, sizeof(pin_source), "file:%s", path);

    /* A TPM too, when swtpm is there (the TPM test skips otherwise). */
    have_tpm = system("command -v swtpm >/dev/null 2>&1") == 0 &&
               swtpm_start(&tpm, "/tmp/mtlsks-async-tpm-XXXXXX") == 0;
    if (have_tpm)
        cfg.tpm2_tcti = tpm.tcti;

    if (builtin_provider_start(&cfg, &ks, &bp) != 0)
        return -1;
    libctx = bp.libctx;
    ec_key = token_key(MKS_KEY_EC, "async-ec", &ec_pub);
    rsa_key = token_key(MKS_KEY_RSA, "async-rsa", &rsa_pub);
    if (ec_key == NULL || rsa_key == NULL)
        return -1;
    /* The shim is loaded now (the keystore opened it): its fault switch. */
    shim = dlopen(MTLSKS_SHIM_PATH, RTLD_NOW | RTLD_NOLOAD);
    shim_faults =
        shim != NULL ? (mtlsks_shim_set_faults_fn *)dlsym(shim, "mtlsks_shim_set_faults") : NULL;
    if (shim == NULL || shim_faults == NULL) {
        fprintf(stderr, "the PKCS#11 shim %s is not loaded\n", MTLSKS_SHIM_PATH);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];

    EVP_PKEY_free(ec_key);
    EVP_PKEY_free(ec_pub);
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(rsa_pub);
    builtin_provider_stop(ks, &bp);
    if (have_tpm)
        swtpm_stop(&tpm);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Each test starts with no fault rules and the default number of workers. */
static int reset(void **state)
{
    assert_int_equal(shim_faults(NULL), 0);
    assert_int_equal(mks_ctx_set_async_workers(ks, MKS_ASYNC_WORKERS_DEFAULT), MKS_OK);
    ERR_clear_error();
    return 0;
}

static void set_faults(const char *spec)
{
    assert_int_equal(shim_faults(spec), 0);
}

static unsigned long live_ops(void)
{
    unsigned long ops, workers;

    mks_async_counts(&ops, &workers);
    return ops;
}

static unsigned long workers_running(void)
{
    unsigned long ops, workers;

    mks_async_counts(&ops, &workers);
    return workers;
}

/* Waits (up to 20 s) until no operation is left in flight. */
static void wait_no_ops(void)
{
    int i;

    for (i = 0; i < 2000 && live_ops() != 0; i++)
        usleep(10000);
    assert_int_equal(live_ops(), 0);
}

/* The eventfds open in this process: only the provider makes them (one per
 * ASYNC_WAIT_CTX); the token opens and closes files of its own meanwhile. */
static int open_eventfds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    char path[300], target[64];
    int n = 0;
    ssize_t len;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        len = readlink(path, target, sizeof(target) - 1);
        if (len > 0) {
            target[len] = '\0';
            n += strcmp(target, "anon_inode:[eventfd]") == 0;
        }
    }
    closedir(d);
    return n;
}

/* ---- jobs ------------------------------------------------------------------------ */

typedef struct job {
    ASYNC_JOB *job;
    ASYNC_WAIT_CTX *wctx;
    EVP_PKEY *pkey;
    EVP_MD_CTX *md; /* made before the job starts: an abandoned job loses nothing of it */
    int decrypt;
    unsigned char in[256];
    size_t inlen;
    unsigned char out[512];
    size_t outlen;
    int ret;
} job;

static int job_body(void *arg)
{
    job *j = *(job **)arg;

    j->outlen = sizeof(j->out);
    if (j->decrypt) {
        EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(libctx, j->pkey, NULL);
        int ok = pc != NULL && EVP_PKEY_decrypt_init(pc) == 1 &&
                 EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_OAEP_PADDING) == 1 &&
                 EVP_PKEY_decrypt(pc, j->out, &j->outlen, j->in, j->inlen) == 1;
        EVP_PKEY_CTX_free(pc);
        return ok;
    }
    return EVP_DigestSign(j->md, j->out, &j->outlen, msg, sizeof(msg)) == 1;
}

static void job_init(job *j, EVP_PKEY *pkey)
{
    memset(j, 0, sizeof(*j));
    j->pkey = pkey;
    j->wctx = ASYNC_WAIT_CTX_new();
    j->md = EVP_MD_CTX_new();
    assert_non_null(j->wctx);
    assert_non_null(j->md);
    assert_int_equal(EVP_DigestSignInit_ex(j->md, NULL, "SHA256", libctx, NULL, pkey, NULL), 1);
}

static void job_free(job *j)
{
    ASYNC_WAIT_CTX_free(j->wctx);
    EVP_MD_CTX_free(j->md);
    j->wctx = NULL;
    j->md = NULL;
}

/* Starts or resumes the job: ASYNC_PAUSE or ASYNC_FINISH. */
static int job_step(job *j)
{
    job *p = j;
    int r = ASYNC_start_job(&j->job, j->wctx, &j->ret, job_body, &p, sizeof(p));

    assert_true(r == ASYNC_PAUSE || r == ASYNC_FINISH);
    return r;
}

/* The job's one wait fd. */
static int job_fd(job *j)
{
    OSSL_ASYNC_FD fds[4];
    size_t n = 0;

    assert_int_equal(ASYNC_WAIT_CTX_get_all_fds(j->wctx, NULL, &n), 1);
    assert_int_equal(n, 1);
    assert_int_equal(ASYNC_WAIT_CTX_get_all_fds(j->wctx, fds, &n), 1);
    return fds[0];
}

/* Waits until the job's fd is readable, as an event loop does. */
static void job_wait(job *j)
{
    struct pollfd p = {job_fd(j), POLLIN, 0};

    assert_int_equal(poll(&p, 1, 60000), 1);
}

static int verify(EVP_PKEY *pub, const unsigned char *sig, size_t siglen)
{
    EVP_MD_CTX *v = EVP_MD_CTX_new();
    int ok = v != NULL && EVP_DigestVerifyInit_ex(v, NULL, "SHA256", NULL, NULL, pub, NULL) == 1 &&
             EVP_DigestVerify(v, sig, siglen, msg, sizeof(msg)) == 1;

    EVP_MD_CTX_free(v);
    return ok;
}

/* ---- signatures and decryption in jobs --------------------------------------------------- */

static void test_outside_a_job_the_token_is_called_in_the_caller(void **state)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[256];
    size_t siglen = sizeof(sig);
    unsigned long signs = mks_pkcs11_call_count("C_Sign");
    int i;

    for (i = 0; i < 4; i++) {
        siglen = sizeof(sig);
        assert_int_equal(EVP_DigestSignInit_ex(md, NULL, "SHA256", libctx, NULL, ec_key, NULL), 1);
        assert_int_equal(EVP_DigestSign(md, sig, &siglen, msg, sizeof(msg)), 1);
        assert_true(verify(ec_pub, sig, siglen));
    }
    EVP_MD_CTX_free(md);
    assert_int_equal(mks_pkcs11_call_count("C_Sign") - signs, 4);
    /* No worker was started and no operation made. */
    assert_int_equal(workers_running(), 0);
    assert_int_equal(live_ops(), 0);
}

static void test_a_job_pauses_while_the_token_signs(void **state)
{
    unsigned long signs = mks_pkcs11_call_count("C_Sign");
    job j;

    set_faults("C_Sign=delay:300ms");
    job_init(&j, ec_key);
    /* The job is back with its caller while the token is still at work. */
    assert_int_equal(job_step(&j), ASYNC_PAUSE);
    assert_int_equal(live_ops(), 1);
    assert_true(workers_running() >= 1);
    job_wait(&j);
    assert_int_equal(job_step(&j), ASYNC_FINISH);
    assert_int_equal(j.ret, 1);
    assert_true(verify(ec_pub, j.out, j.outlen));
    assert_int_equal(mks_pkcs11_call_count("C_Sign") - signs, 1);
    assert_int_equal(live_ops(), 0);
    /* The fd stays with the ASYNC_WAIT_CTX (one per connection) until it is freed. */
    (void)job_fd(&j);
    job_free(&j);
}

static void test_sixteen_jobs_wait_at_once_on_four_workers(void **state)
{
    static job jobs[JOBS];
    int i, left = JOBS;

    assert_int_equal(mks_ctx_set_async_workers(ks, 4), MKS_OK);
    set_faults("C_Sign=delay:100ms");
    for (i = 0; i < JOBS; i++) {
        job_init(&jobs[i], ec_key);
        assert_int_equal(job_step(&jobs[i]), ASYNC_PAUSE);
    }
    /* Every job started and paused before the first signature came back. */
    assert_int_equal(live_ops(), JOBS);
    while (left > 0) {
        struct pollfd p[JOBS];
        int idx[JOBS], n = 0, k;

        for (i = 0; i < JOBS; i++)
            if (jobs[i].job != NULL) {
                p[n].fd = job_fd(&jobs[i]);
                p[n].events = POLLIN;
                idx[n++] = i;
            }
        assert_true(poll(p, (nfds_t)n, 60000) > 0);
        for (k = 0; k < n; k++)
            if (p[k].revents & POLLIN) {
                assert_int_equal(job_step(&jobs[idx[k]]), ASYNC_FINISH);
                assert_int_equal(jobs[idx[k]].ret, 1);
                left--;
            }
        assert_true(workers_running() <= 4);
    }
    for (i = 0; i < JOBS; i++) {
        assert_true(verify(ec_pub, jobs[i].out, jobs[i].outlen));
        job_free(&jobs[i]);
    }
    assert_int_equal(live_ops(), 0);
}

static atomic_int callbacks;

static int on_ready(void *arg)
{
    atomic_fetch_add(&callbacks, 1);
    return 1;
}

static void test_the_application_callback_is_called(void **state)
{
    job j;
    int i;

    set_faults("C_Sign=delay:100ms");
    atomic_store(&callbacks, 0);
    job_init(&j, ec_key);
    assert_int_equal(ASYNC_WAIT_CTX_set_callback(j.wctx, on_ready, &j), 1);
    assert_int_equal(job_step(&j), ASYNC_PAUSE);
    assert_int_equal(ASYNC_WAIT_CTX_get_status(j.wctx), ASYNC_STATUS_OK);
    for (i = 0; i < 6000 && atomic_load(&callbacks) == 0; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&callbacks), 1);
    assert_int_equal(job_step(&j), ASYNC_FINISH);
    assert_int_equal(j.ret, 1);
    assert_true(verify(ec_pub, j.out, j.outlen));
    job_free(&j);
}

/* 1 when an error on the queue carries text containing `what`; clears the queue. */
static int error_says(const char *what)
{
    const char *data = NULL;
    unsigned long e;
    int flags = 0, found = 0;

    while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0)
        if ((flags & ERR_TXT_STRING) && data != NULL && strstr(data, what) != NULL)
            found = 1;
    return found;
}

static void test_a_failed_token_call_fails_the_job_with_its_reason(void **state)
{
    job j;

    set_faults("C_Sign=CKR_DEVICE_ERROR@1");
    job_init(&j, ec_key);
    assert_int_equal(job_step(&j), ASYNC_PAUSE);
    job_wait(&j);
    assert_int_equal(job_step(&j), ASYNC_FINISH);
    assert_int_equal(j.ret, 0);
    assert_true(error_says("C_Sign failed: CKR_DEVICE_ERROR"));
    job_free(&j);
    /* The next signature gets the token's answer again. */
    job_init(&j, ec_key);
    assert_int_equal(job_step(&j), ASYNC_PAUSE);
    job_wait(&j);
    assert_int_equal(job_step(&j), ASYNC_FINISH);
    assert_int_equal(j.ret, 1);
    job_free(&j);
}

static void test_decryption_in_a_job(void **state)
{
    static const unsigned char secret[] = "a premaster secret of sorts";
    EVP_PKEY_CTX *enc = EVP_PKEY_CTX_new_from_pkey(NULL, rsa_pub, NULL);
    job j;

    job_init(&j, rsa_key);
    j.decrypt = 1;
    j.inlen = sizeof(j.in);
    assert_non_null(enc);
    assert_int_equal(EVP_PKEY_encrypt_init(enc), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(enc, RSA_PKCS1_OAEP_PADDING), 1);
    assert_int_equal(EVP_PKEY_encrypt(enc, j.in, &j.inlen, secret, sizeof(secret)), 1);
    EVP_PKEY_CTX_free(enc);
    set_faults("C_Decrypt=delay:100ms");
    assert_int_equal(job_step(&j), ASYNC_PAUSE);
    job_wait(&j);
    assert_int_equal(job_step(&j), ASYNC_FINISH);
    assert_int_equal(j.ret, 1);
    assert_int_equal(j.outlen, sizeof(secret));
    assert_memory_equal(j.out, secret, sizeof(secret));
    job_free(&j);
}

static void test_async_workers_zero_signs_inside_the_job(void **state)
{
    size_t nfds = 1;
    job j;

    assert_int_equal(mks_ctx_set_async_workers(ks, 0), MKS_OK);
    job_init(&j, ec_key);
    /* No pause and no wait fd: the job signs in its own thread, as without
     * asynchronous signing. */
    assert_int_equal(job_step(&j), ASYNC_FINISH);
    assert_int_equal(j.ret, 1);
    assert_int_equal(ASYNC_WAIT_CTX_get_all_fds(j.wctx, NULL, &nfds), 1);
    assert_int_equal(nfds, 0);
    assert_true(verify(ec_pub, j.out, j.outlen));
    assert_int_equal(live_ops(), 0);
    job_free(&j);
    assert_int_equal(mks_ctx_set_async_workers(ks, MKS_ASYNC_WORKERS_MAX + 1), MKS_ERR_ARG);
}

/*
 * The connection goes away while its job waits for the token (SSL_free
 * frees the ASYNC_WAIT_CTX): the operation is dropped when the token
 * answers, the eventfd is closed, and the session goes back to the pool
 * (the next signature opens none).
 */
static void test_an_abandoned_job_leaks_nothing(void **state)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[256];
    size_t siglen = sizeof(sig);
    unsigned long opened, signs;
    int fds;
    job j;

    /* One signature first, so that the pool holds an idle session. */
    assert_int_equal(EVP_DigestSignInit_ex(md, NULL, "SHA256", libctx, NULL, ec_key, NULL), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &siglen, msg, sizeof(msg)), 1);
    opened = mks_pkcs11_call_count("C_OpenSession");
    signs = mks_pkcs11_call_count("C_Sign");
    fds = open_eventfds();

    set_faults("C_Sign=delay:300ms");
    job_init(&j, ec_key);
    assert_int_equal(job_step(&j), ASYNC_PAUSE);
    assert_int_equal(open_eventfds(), fds + 1);
    assert_int_equal(live_ops(), 1);
    job_free(&j); /* what SSL_free does to a paused connection */
    assert_int_equal(open_eventfds(), fds);
    wait_no_ops();
    assert_int_equal(mks_pkcs11_call_count("C_Sign") - signs, 1);

    siglen = sizeof(sig);
    assert_int_equal(EVP_DigestSignInit_ex(md, NULL, "SHA256", libctx, NULL, ec_key, NULL), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &siglen, msg, sizeof(msg)), 1);
    assert_int_equal(mks_pkcs11_call_count("C_OpenSession"), opened);
    EVP_MD_CTX_free(md);
}

/* Abandoned after the token answered, before the job was resumed. */
static void test_a_job_abandoned_after_the_answer_leaks_nothing(void **state)
{
    int fds = open_eventfds();
    job j;

    set_faults("C_Sign=delay:50ms");
    job_init(&j, ec_key);
    assert_int_equal(job_step(&j), ASYNC_PAUSE);
    job_wait(&j);
    job_free(&j);
    wait_no_ops();
    assert_int_equal(open_eventfds(), fds);
}

/* A forked child has none of its parent's workers and starts its own. */
static void test_a_forked_child_starts_its_own_workers(void **state)
{
    job j;
    pid_t pid;
    int status = -1;

    set_faults("C_Sign=delay:50ms");
    job_init(&j, ec_key);
    assert_int_equal(job_step(&j), ASYNC_PAUSE);
    job_wait(&j);
    assert_int_equal(job_step(&j), ASYNC_FINISH);
    job_free(&j);
    assert_true(workers_running() >= 1);

    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int ok = workers_running() == 0;
        job c;
        ok = ok && (job_init(&c, ec_key), job_step(&c) == ASYNC_PAUSE) && workers_running() == 1;
        if (ok) {
            job_wait(&c);
            ok = job_step(&c) == ASYNC_FINISH && c.ret == 1 && verify(ec_pub, c.out, c.outlen);
        }
        if (!ok)
            ERR_print_errors_fp(stderr);
        _exit(ok ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_a_tpm_key_signs_in_a_job(void **state)
{
    mks_tpm_keygen_params kp = {{MKS_KEY_EC, 0, "P-256", NULL}, NULL, 0, 0};
    mks_key *key = NULL;
    char *pem = NULL;
    size_t pem_len = 0;
    BIO *bio;
    EVP_PKEY *pkey = NULL, *pub;
    job j;

    if (!have_tpm)
        skip();
    if (mks_tpm_keygen(ks, &kp, &pem, &pem_len, &key) != MKS_OK)
        fail_msg("TPM keygen: %s", mks_last_error());
    pub = public_of(key);
    mks_key_free(key);
    bio = BIO_new_mem_buf(pem, (int)pem_len);
    pkey = PEM_read_bio_PrivateKey_ex(bio, NULL, NULL, NULL, libctx, NULL);
    BIO_free(bio);
    free(pem);
    assert_non_null(pkey);

    job_init(&j, pkey);
    assert_int_equal(job_step(&j), ASYNC_PAUSE);
    job_wait(&j);
    assert_int_equal(job_step(&j), ASYNC_FINISH);
    assert_int_equal(j.ret, 1);
    assert_true(verify(pub, j.out, j.outlen));
    job_free(&j);
    EVP_PKEY_free(pkey);
    EVP_PKEY_free(pub);
}

/* ---- TLS: SSL_MODE_ASYNC on the server, over memory BIOs ----------------------------- */

static X509 *issue(EVP_PKEY *pub, const char *cn, X509 *ca, EVP_PKEY *ca_key)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();

    assert_non_null(x);
    assert_non_null(name);
    assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(cn[0])), 1);
    assert_int_equal(
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0),
        1);
    assert_int_equal(X509_set_subject_name(x, name), 1);
    assert_int_equal(X509_set_issuer_name(x, ca != NULL ? X509_get_subject_name(ca) : name), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
    assert_int_equal(X509_set_pubkey(x, pub), 1);
    if (ca == NULL) {
        X509V3_CTX v3;
        X509_EXTENSION *ext;

        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
        assert_non_null(ext);
        assert_int_equal(X509_add_ext(x, ext, -1), 1);
        X509_EXTENSION_free(ext);
    }
    assert_true(X509_sign(x, ca_key, EVP_sha256()) > 0);
    X509_NAME_free(name);
    return x;
}

typedef struct tls_pair {
    SSL_CTX *sctx, *cctx;
} tls_pair;

/* Server: the token key, SSL_MODE_ASYNC, client certificates required.
 * Client: a software key. Both TLS 1.3 and verifying against one CA. */
static void tls_pair_new(tls_pair *t)
{
    EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *cli_key = EVP_EC_gen("P-256");
    X509 *ca = issue(ca_key, "CA", NULL, ca_key);
    X509 *srv = issue(ec_pub, "server", ca, ca_key), *cli = issue(cli_key, "client", ca, ca_key);

    t->sctx = SSL_CTX_new_ex(libctx, NULL, TLS_server_method());
    t->cctx = SSL_CTX_new_ex(NULL, NULL, TLS_client_method());
    assert_non_null(t->sctx);
    assert_non_null(t->cctx);
    assert_int_equal(SSL_CTX_use_certificate(t->sctx, srv), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(t->sctx, ec_key), 1);
    assert_int_equal(SSL_CTX_use_certificate(t->cctx, cli), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(t->cctx, cli_key), 1);
    assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(t->sctx), ca), 1);
    assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(t->cctx), ca), 1);
    SSL_CTX_set_verify(t->sctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_verify(t->cctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_min_proto_version(t->sctx, TLS1_3_VERSION);
    SSL_CTX_set_num_tickets(t->sctx, 0);
    SSL_CTX_set_mode(t->sctx, SSL_MODE_ASYNC);
    X509_free(ca);
    X509_free(srv);
    X509_free(cli);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(cli_key);
}

static void tls_pair_free(tls_pair *t)
{
    SSL_CTX_free(t->sctx);
    SSL_CTX_free(t->cctx);
}

typedef struct conn {
    SSL *s, *c;
    int sdone, cdone, waits;
} conn;

static void conn_new(conn *k, tls_pair *t)
{
    BIO *sb = NULL, *cb = NULL;

    memset(k, 0, sizeof(*k));
    k->s = SSL_new(t->sctx);
    k->c = SSL_new(t->cctx);
    assert_non_null(k->s);
    assert_non_null(k->c);
    assert_int_equal(BIO_new_bio_pair(&sb, 0, &cb, 0), 1);
    SSL_set_bio(k->s, sb, sb);
    SSL_set_bio(k->c, cb, cb);
    SSL_set_accept_state(k->s);
    SSL_set_connect_state(k->c);
}

/* One step of each side; returns 1 when the server waits for the token. */
static int conn_step(conn *k)
{
    int r, e;

    if (!k->cdone) {
        r = SSL_do_handshake(k->c);
        e = SSL_get_error(k->c, r);
        if (r == 1)
            k->cdone = 1;
        else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            ERR_print_errors_fp(stderr);
            fail_msg("client handshake failed: %d", e);
        }
    }
    if (k->sdone)
        return 0;
    r = SSL_do_handshake(k->s);
    if (r == 1) {
        k->sdone = 1;
        return 0;
    }
    e = SSL_get_error(k->s, r);
    if (e == SSL_ERROR_WANT_ASYNC) {
        k->waits++;
        return 1;
    }
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        ERR_print_errors_fp(stderr);
        fail_msg("server handshake failed: %d", e);
    }
    return 0;
}

static int ssl_fd(SSL *s)
{
    OSSL_ASYNC_FD fd = -1;
    size_t n = 1;

    assert_int_equal(SSL_get_all_async_fds(s, &fd, &n), 1);
    assert_int_equal(n, 1);
    return fd;
}

static void test_tls_handshakes_wait_for_the_token_together(void **state)
{
    static conn conns[CONNS];
    tls_pair t;
    int i, waiting, done = 0;

    set_faults("C_Sign=delay:200ms");
    tls_pair_new(&t);
    for (i = 0; i < CONNS; i++)
        conn_new(&conns[i], &t);
    /* Step every connection until each server waits for its signature:
     * all of them at once on this one thread. */
    do {
        waiting = 0;
        for (i = 0; i < CONNS; i++)
            waiting += SSL_waiting_for_async(conns[i].s) || conn_step(&conns[i]);
    } while (waiting < CONNS);
    assert_int_equal(live_ops(), CONNS);
    while (done < CONNS) {
        struct pollfd p[CONNS];
        int n = 0;

        for (i = 0; i < CONNS; i++)
            if (SSL_waiting_for_async(conns[i].s)) {
                p[n].fd = ssl_fd(conns[i].s);
                p[n++].events = POLLIN;
            }
        if (n > 0)
            assert_true(poll(p, (nfds_t)n, 60000) > 0);
        done = 0;
        for (i = 0; i < CONNS; i++) {
            (void)conn_step(&conns[i]);
            done += conns[i].sdone && conns[i].cdone;
        }
    }
    for (i = 0; i < CONNS; i++) {
        assert_true(conns[i].waits >= 1);
        assert_non_null(SSL_get0_peer_certificate(conns[i].s));
        assert_int_equal(SSL_get_verify_result(conns[i].c), X509_V_OK);
        SSL_free(conns[i].s);
        SSL_free(conns[i].c);
    }
    tls_pair_free(&t);
    assert_int_equal(live_ops(), 0);
}

/*
 * SSL_free on a connection whose handshake waits for the token. OpenSSL
 * loses the paused job and what the handshake had allocated in it (the
 * signing context holds the key): run in a child that leaves with _exit,
 * so that the leak checkers count what they can attribute, and our own
 * counters say what became of our part.
 */
static void test_ssl_free_while_the_handshake_waits(void **state)
{
    pid_t pid;
    int status = -1;

    set_faults("C_Sign=delay:300ms");
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tls_pair t;
        conn k;
        int fds, i, ok;

        tls_pair_new(&t);
        fds = open_eventfds();
        conn_new(&k, &t);
        for (i = 0; i < 32 && !conn_step(&k); i++)
            ;
        ok = SSL_waiting_for_async(k.s) && live_ops() == 1 && open_eventfds() == fds + 1;
        SSL_free(k.s);
        SSL_free(k.c);
        ok = ok && open_eventfds() == fds;
        for (i = 0; i < 2000 && live_ops() != 0; i++)
            usleep(10000);
        ok = ok && live_ops() == 0;
        tls_pair_free(&t);
        _exit(ok ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_outside_a_job_the_token_is_called_in_the_caller, reset),
        cmocka_unit_test_setup(test_a_job_pauses_while_the_token_signs, reset),
        cmocka_unit_test_setup(test_sixteen_jobs_wait_at_once_on_four_workers, reset),
        cmocka_unit_test_setup(test_the_application_callback_is_called, reset),
        cmocka_unit_test_setup(test_a_failed_token_call_fails_the_job_with_its_reason, reset),
        cmocka_unit_test_setup(test_decryption_in_a_job, reset),
        cmocka_unit_test_setup(test_async_workers_zero_signs_inside_the_job, reset),
        cmocka_unit_test_setup(test_an_abandoned_job_leaks_nothing, reset),
        cmocka_unit_test_setup(test_a_job_abandoned_after_the_answer_leaks_nothing, reset),
        cmocka_unit_test_setup(test_a_forked_child_starts_its_own_workers, reset),
        cmocka_unit_test_setup(test_a_tpm_key_signs_in_a_job, reset),
        cmocka_unit_test_setup(test_tls_handshakes_wait_for_the_token_together, reset),
        cmocka_unit_test_setup(test_ssl_free_while_the_handshake_waits, reset),
    };

    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, setup, teardown);
}
