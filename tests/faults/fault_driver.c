/*
 * fault_driver: what the provider does when the token misbehaves, checked
 * call by call in one process.
 *
 *   fault_driver CONFIG SHIM KEY SCENARIO
 *
 * CONFIG is an openssl.cnf whose mtlsks section names the fault-injecting
 * PKCS#11 shim (tests/p11shim) as pkcs11-module; SHIM is the shim's path (the
 * driver reaches its counters and fault switch through dlopen(RTLD_NOLOAD));
 * KEY is the key as a program gives it (a key-reference file or a pkcs11:
 * URI), loaded through OSSL_STORE in a library context of its own, exactly as
 * s_server loads its key. Signatures are made with EVP_DigestSign and checked
 * in software.
 *
 * Each scenario flips faults between operations and checks what the
 * provider did: the operation that met the fault either recovered (new
 * session, new login, object found again) or failed with an OpenSSL error
 * that names the PKCS#11 call and the CKR (a key file whose key cannot be
 * opened may load as a stand-in that fails so at first use); the next
 * operation after the fault is gone succeeds; nothing hangs; a PIN the token
 * rejected is never tried again; and the provider keeps no more sessions
 * than it needs: every one it opened is closed, idle in its pool, or was
 * given up because the token declared it invalid.
 *
 * Output: one line per check ("ok   ..." / "FAIL ..."); exit 0 when all
 * passed, 1 when one failed, 2 on a usage or setup error.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/store.h>
#include <openssl/x509.h>

#include "p11shim.h"

static const char *config_path, *shim_path, *key_ref;
static OSSL_LIB_CTX *libctx;   /* default + mtlsks (through the shim) */
static OSSL_LIB_CTX *plainctx; /* default only: verification */
static OSSL_PROVIDER *plain_default;
static void *shim_dl;
static mtlsks_shim_count_fn *shim_count;
static mtlsks_shim_set_faults_fn *shim_set_faults;
static int failures;

/* Sessions: opens the token really performed, closes the provider asked for,
 * and sessions the token itself declared gone (dropped without a close). */
static unsigned long real_opens, dropped_by_token;

/* ---- reporting -------------------------------------------------------------- */

static void check(int ok, const char *fmt, ...)
{
    va_list ap;

    printf("%s ", ok ? "ok  " : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    if (!ok)
        failures++;
}

static void die(const char *what)
{
    fprintf(stderr, "fault_driver: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(2);
}

/* The thread's OpenSSL errors as one line ("reason | reason"), queue cleared. */
static int collect_cb(const char *str, size_t len, void *u)
{
    char *buf = u;
    size_t used = strlen(buf);

    while (len > 0 && (str[len - 1] == '\n' || str[len - 1] == '\r'))
        len--;
    if (used + len + 4 < 2048)
        snprintf(buf + used, 2048 - used, "%s%.*s", used > 0 ? " | " : "", (int)len, str);
    return 1;
}

static void collect_errors(char err[2048])
{
    err[0] = '\0';
    ERR_print_errors_cb(collect_cb, err);
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the shim ----------------------------------------------------------------- */

typedef struct counts {
    unsigned long open, close, login, sign, signinit, find;
} counts;

static counts snap(void)
{
    counts c = {shim_count("C_OpenSession"), shim_count("C_CloseSession"),
                shim_count("C_Login"),       shim_count("C_Sign"),
                shim_count("C_SignInit"),    shim_count("C_FindObjectsInit")};
    return c;
}

static void faults(const char *spec)
{
    if (shim_set_faults(spec) != 0)
        die("the shim refused the fault rules");
}

/* The shim is loaded by p11-kit when the provider first needs the keystore;
 * from then on its functions are reachable. */
static void shim_attach(void)
{
    if (shim_dl != NULL)
        return;
    shim_dl = dlopen(shim_path, RTLD_NOW | RTLD_NOLOAD);
    if (shim_dl == NULL)
        die("the shim is not loaded (is it the config's pkcs11-module?)");
    shim_count = (mtlsks_shim_count_fn *)dlsym(shim_dl, "mtlsks_shim_count");
    shim_set_faults = (mtlsks_shim_set_faults_fn *)dlsym(shim_dl, "mtlsks_shim_set_faults");
    if (shim_count == NULL || shim_set_faults == NULL)
        die("the shim lacks mtlsks_shim_count / mtlsks_shim_set_faults");
}

/* ---- keys and signatures ------------------------------------------------------- */

static void setup(void)
{
    libctx = OSSL_LIB_CTX_new();
    plainctx = OSSL_LIB_CTX_new();
    if (libctx == NULL || plainctx == NULL || !OSSL_LIB_CTX_load_config(libctx, config_path) ||
        (plain_default = OSSL_PROVIDER_load(plainctx, "default")) == NULL)
        die("cannot load the configuration");
}

/* Loads the key that ref names (NULL with the errors in err). */
static EVP_PKEY *load_ref(const char *ref, char err[2048])
{
    OSSL_STORE_CTX *st;
    EVP_PKEY *pkey = NULL;

    err[0] = '\0';
    st = OSSL_STORE_open_ex(ref, libctx, NULL, NULL, NULL, NULL, NULL, NULL);
    if (st != NULL) {
        (void)OSSL_STORE_expect(st, OSSL_STORE_INFO_PKEY);
        while (pkey == NULL && !OSSL_STORE_eof(st)) {
            OSSL_STORE_INFO *info = OSSL_STORE_load(st);
            if (info == NULL) {
                if (OSSL_STORE_error(st))
                    break;
                continue;
            }
            if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
                pkey = OSSL_STORE_INFO_get1_PKEY(info);
            OSSL_STORE_INFO_free(info);
        }
        OSSL_STORE_close(st);
    }
    collect_errors(err);
    if (pkey == NULL && err[0] == '\0')
        snprintf(err, 2048, "(no error on the queue)");
    shim_attach();
    return pkey;
}

static EVP_PKEY *load_key(char err[2048])
{
    return load_ref(key_ref, err);
}

/* One signature over a fixed message, checked with the public half in
 * software. 1: signed and verified; 0: failed, errors in err. */
static int sign_once(EVP_PKEY *pkey, char err[2048])
{
    static const unsigned char msg[] = "mtls-keystore fault test";
    unsigned char sig[1024], *spki = NULL;
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *mctx = EVP_MD_CTX_new(), *vctx = EVP_MD_CTX_new();
    EVP_PKEY *pub = NULL;
    const unsigned char *p;
    int ok = 0, n;

    err[0] = '\0';
    if (mctx == NULL || vctx == NULL ||
        EVP_DigestSignInit_ex(mctx, NULL, "SHA256", libctx, NULL, pkey, NULL) != 1 ||
        EVP_DigestSign(mctx, sig, &siglen, msg, sizeof(msg)) != 1)
        goto done;
    n = i2d_PUBKEY(pkey, &spki);
    p = spki;
    if (n <= 0 || (pub = d2i_PUBKEY_ex(NULL, &p, n, plainctx, NULL)) == NULL ||
        EVP_DigestVerifyInit_ex(vctx, NULL, "SHA256", plainctx, NULL, pub, NULL) != 1 ||
        EVP_DigestVerify(vctx, sig, siglen, msg, sizeof(msg)) != 1) {
        snprintf(err, 2048, "the signature does not verify");
        ERR_clear_error();
        goto done;
    }
    ok = 1;
done:
    if (!ok && err[0] == '\0') {
        collect_errors(err);
        if (err[0] == '\0')
            snprintf(err, 2048, "(no error on the queue)");
    }
    ERR_clear_error();
    OPENSSL_free(spki);
    EVP_PKEY_free(pub);
    EVP_MD_CTX_free(mctx);
    EVP_MD_CTX_free(vctx);
    return ok;
}

static int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

/* The key, loaded and tried once without faults. */
static EVP_PKEY *ready_key(void)
{
    char err[2048];
    EVP_PKEY *pkey = load_key(err);

    if (pkey == NULL) {
        fprintf(stderr, "fault_driver: the key does not load without faults: %s\n", err);
        exit(2);
    }
    if (!sign_once(pkey, err)) {
        fprintf(stderr, "fault_driver: the key does not sign without faults: %s\n", err);
        exit(2);
    }
    return pkey;
}

/*
 * One signature under `rules` (then cleared). want_ok: the signature must
 * succeed (recovery) or fail with an error naming `ckr`. Checks the C_Login
 * calls it cost and, when max_sign >= 0, the C_Sign calls. Returns the
 * counts' differences through *d.
 */
static void sign_under(const char *name, EVP_PKEY *pkey, const char *rules, int want_ok,
                       const char *ckr, long logins, long max_sign, counts *d)
{
    char err[2048];
    counts a, b;
    int ok;
    double t;

    a = snap();
    faults(rules);
    t = now();
    ok = sign_once(pkey, err);
    t = now() - t;
    faults("");
    b = snap();
    d->open = b.open - a.open;
    d->close = b.close - a.close;
    d->login = b.login - a.login;
    d->sign = b.sign - a.sign;
    d->find = b.find - a.find;
    if (want_ok)
        check(ok, "%s [%s]: the signature %s (%.2f s, C_Sign x%lu, C_OpenSession x%lu)", name,
              rules, ok ? "recovered" : "failed", t, d->sign, d->open);
    else
        check(!ok && contains(err, ckr), "%s [%s]: the signature failed cleanly: %s", name, rules,
              ok ? "(it succeeded)" : err);
    if (!want_ok && !ok)
        check(!contains(err, "(no error"), "%s: an OpenSSL error says why", name);
    if (logins >= 0)
        check(d->login == (unsigned long)logins, "%s: C_Login x%lu (expected %ld)", name, d->login,
              logins);
    if (max_sign >= 0)
        check(d->sign <= (unsigned long)max_sign, "%s: C_Sign x%lu (at most %ld: no retry loop)",
              name, d->sign, max_sign);
    check(t < 10.0, "%s: took %.2f s (no hang)", name, t);
    real_opens += d->open;
}

static void sign_ok_after(const char *name, EVP_PKEY *pkey)
{
    char err[2048];
    counts a = snap(), b;
    int ok = sign_once(pkey, err);

    b = snap();
    real_opens += b.open - a.open;
    check(ok, "%s: the next signature, fault gone, succeeds%s%s", name, ok ? "" : ": ",
          ok ? "" : err);
}

/*
 * Sessions: of those the token really opened, every one the provider did not
 * give up because the token declared it gone is either closed or idle in the
 * pool (at most `pool`, the most operations the scenario ran at once). Then
 * everything is freed (the provider closes its pool and finalizes the module;
 * p11-kit closes whatever the module still has open).
 */
static void teardown_check(unsigned long pool)
{
    unsigned long closes = shim_count("C_CloseSession");
    long live = (long)real_opens - (long)closes - (long)dropped_by_token;

    check(live >= 0 && live <= (long)pool,
          "sessions: %lu opened, %lu closed, %lu given up because the token declared them "
          "invalid: %ld left idle in the pool (at most %lu)",
          real_opens, closes, dropped_by_token, live, pool);
    OSSL_LIB_CTX_free(libctx);
    libctx = NULL;
    printf("-- after teardown: C_CloseSession x%lu, C_Finalize x%lu\n",
           shim_count("C_CloseSession") - closes, shim_count("C_Finalize"));
}

/* ---- scenarios ------------------------------------------------------------------ */

/* Faults during signing: the session, login or handle lost (recover within
 * the operation), a device error (fail this one signature). */
static void scenario_sign(void)
{
    EVP_PKEY *pkey = ready_key();
    counts d;

    real_opens = shim_count("C_OpenSession");
    sign_under("device-error", pkey, "C_Sign=CKR_DEVICE_ERROR@1", 0, "CKR_DEVICE_ERROR", 0, 1, &d);
    sign_ok_after("device-error", pkey);
    sign_under("general-error-signinit", pkey, "C_SignInit=CKR_GENERAL_ERROR@1", 0,
               "CKR_GENERAL_ERROR", 0, 0, &d);
    sign_ok_after("general-error-signinit", pkey);

    sign_under("session-handle-invalid", pkey, "C_Sign=CKR_SESSION_HANDLE_INVALID@1", 1, NULL, 0, 2,
               &d);
    dropped_by_token += 1;
    check(d.open == 1, "session-handle-invalid: a new session was opened (x%lu)", d.open);
    sign_ok_after("session-handle-invalid", pkey);

    sign_under("session-closed", pkey, "C_Sign=CKR_SESSION_CLOSED@1", 1, NULL, 0, 2, &d);
    dropped_by_token += 1;
    sign_ok_after("session-closed", pkey);

    sign_under("session-handle-invalid-signinit", pkey, "C_SignInit=CKR_SESSION_HANDLE_INVALID@1",
               1, NULL, 0, 1, &d);
    dropped_by_token += 1;
    sign_ok_after("session-handle-invalid-signinit", pkey);

    sign_under("user-not-logged-in", pkey, "C_Sign=CKR_USER_NOT_LOGGED_IN@1", 1, NULL, 1, 2, &d);
    sign_ok_after("user-not-logged-in", pkey);

    sign_under("key-handle-invalid", pkey, "C_SignInit=CKR_KEY_HANDLE_INVALID@1", 1, NULL, 0, 1,
               &d);
    check(d.find >= 1, "key-handle-invalid: the key was found again (C_FindObjectsInit x%lu)",
          d.find);
    sign_ok_after("key-handle-invalid", pkey);

    /* A token that keeps refusing the session: one retry, then a clean failure. */
    sign_under("session-handle-invalid-always", pkey, "C_Sign=CKR_SESSION_HANDLE_INVALID", 0,
               "CKR_SESSION_HANDLE_INVALID", 0, 2, &d);
    dropped_by_token += d.sign;
    sign_ok_after("session-handle-invalid-always", pkey);

    /* A token that was reset: the session is gone and so is the login. One
     * operation must reopen the session and log in again. */
    sign_under("token-reset", pkey,
               "C_Sign=CKR_SESSION_HANDLE_INVALID@1,C_Sign=CKR_USER_NOT_LOGGED_IN@2", 1, NULL, 1,
               -1, &d);
    dropped_by_token += 1;
    sign_ok_after("token-reset", pkey);

    EVP_PKEY_free(pkey);
    teardown_check(1);
}

/* The token is removed (every call fails) and comes back. */
static void removed(EVP_PKEY *pkey, const char *ckr)
{
    char rules[64], name[64], err[2048];
    counts a, b;
    EVP_PKEY *other;
    int i, ok;

    snprintf(rules, sizeof(rules), "*=%s", ckr);
    snprintf(name, sizeof(name), "removed-%s", ckr + 4);
    a = snap();
    faults(rules);
    for (i = 0; i < 3; i++) {
        double t = now();
        ok = sign_once(pkey, err);
        t = now() - t;
        check(!ok &&
                  (contains(err, "CKR_DEVICE_REMOVED") || contains(err, "CKR_TOKEN_NOT_PRESENT")),
              "%s [%s]: signature %d while the token is gone fails cleanly (%.2f s): %s", name,
              rules, i + 1, t, ok ? "(it succeeded)" : err);
    }
    other = load_key(err);
    if (other != NULL) {
        /* A stand-in for the key file: its first use says why. */
        ok = sign_once(other, err);
        check(!ok &&
                  (contains(err, "CKR_DEVICE_REMOVED") || contains(err, "CKR_TOKEN_NOT_PRESENT")),
              "%s: the key file loaded while the token is gone fails at first use: %s", name,
              ok ? "(it signed)" : err);
        EVP_PKEY_free(other);
    } else {
        check(contains(err, "CKR_DEVICE_REMOVED") || contains(err, "CKR_TOKEN_NOT_PRESENT"),
              "%s: loading the key while the token is gone fails cleanly: %s", name, err);
    }
    faults("");
    b = snap();
    /* Opens while the token was gone all failed; they opened nothing. */
    a = snap();
    ok = sign_once(pkey, err);
    b = snap();
    real_opens += b.open - a.open;
    check(ok, "%s: token back: the next signature succeeds%s%s", name, ok ? "" : ": ",
          ok ? "" : err);
    check(b.login - a.login == 1 && b.open - a.open >= 1,
          "%s: token back: new session (x%lu) and login again (C_Login x%lu)", name,
          b.open - a.open, b.login - a.login);
    check(b.find - a.find >= 1, "%s: token back: the key was found again (C_FindObjectsInit x%lu)",
          name, b.find - a.find);
    sign_ok_after(name, pkey);
}

static void scenario_removed(void)
{
    EVP_PKEY *pkey = ready_key();
    counts d;

    real_opens = shim_count("C_OpenSession");
    removed(pkey, "CKR_DEVICE_REMOVED");
    removed(pkey, "CKR_TOKEN_NOT_PRESENT");
    /* Removed between two signatures: only C_Sign sees it. */
    sign_under("removed-during-sign", pkey, "C_Sign=CKR_DEVICE_REMOVED@1", 0, "CKR_DEVICE_REMOVED",
               0, 1, &d);
    sign_ok_after("removed-during-sign", pkey);
    EVP_PKEY_free(pkey);
    teardown_check(1);
}

/*
 * Loads the key that ref names under `rules` (then cleared) and signs once
 * with it. A key reference whose key cannot be opened may load as a stand-in
 * that fails at first use with the reason (OpenSSL 3.0's file store drops the
 * errors of decoders): either way the failure must name `ckr`. *where says
 * which ("at load" / "at first use"); NULL when the key loaded and signed.
 * Returns 1 when it loaded and signed, with the C_Login calls in *logins.
 */
static int load_and_sign(const char *ref, const char *rules, char err[2048], const char **where,
                         unsigned long *logins, double *secs)
{
    counts a, b;
    EVP_PKEY *pkey;
    int ok = 0;
    double t;

    *where = "at load";
    a = snap();
    faults(rules);
    t = now();
    pkey = load_ref(ref, err);
    *secs = now() - t;
    faults("");
    if (pkey != NULL) {
        *where = "at first use";
        ok = sign_once(pkey, err);
        if (ok)
            *where = NULL;
        EVP_PKEY_free(pkey);
    }
    b = snap();
    real_opens += b.open - a.open;
    *logins = b.login - a.login;
    return ok;
}

/* Loading a key (as ref names it) under faults of the login and the search:
 * it loads and signs (want_ok), or fails with an error naming ckr. */
static void load_ref_under(const char *name, const char *ref, const char *rules, int want_ok,
                           const char *ckr, long logins)
{
    char err[2048];
    const char *where;
    unsigned long l;
    double t;
    int ok = load_and_sign(ref, rules, err, &where, &l, &t);

    if (want_ok)
        check(ok, "%s [%s]: the key loads and signs (%.2f s)%s%s", name, rules, t, ok ? "" : ": ",
              ok ? "" : err);
    else
        check(!ok && contains(err, ckr), "%s [%s]: fails %s with an error naming %s: %s", name,
              rules, ok ? "nowhere" : where, ckr, ok ? "(it loaded and signed)" : err);
    if (logins >= 0)
        check(l == (unsigned long)logins, "%s: C_Login x%lu (expected %ld)", name, l, logins);
    check(t < 10.0, "%s: loading took %.2f s (no hang)", name, t);
}

/* The same, for the key-reference file (as servers load keys) and for the
 * key's pkcs11: URI (FAULT_KEY_URI). */
static void load_under(const char *name, const char *rules, int want_ok, const char *ckr,
                       long logins)
{
    const char *uri = getenv("FAULT_KEY_URI");
    char n[128];

    snprintf(n, sizeof(n), "%s (key file)", name);
    load_ref_under(n, key_ref, rules, want_ok, ckr, logins);
    if (uri != NULL && *uri != '\0') {
        snprintf(n, sizeof(n), "%s (URI)", name);
        load_ref_under(n, uri, rules, want_ok, ckr, logins);
    }
}

/* Before any login: list the token's certificates (no login needed), so the
 * module is loaded and the shim's switch reachable. */
static void warm_module(void)
{
    char uri[512], err[2048];
    const char *tok = getenv("FAULT_TOKEN_LABEL");
    OSSL_STORE_CTX *st;

    snprintf(uri, sizeof(uri), "pkcs11:token=%s;type=cert", tok != NULL ? tok : "faults");
    st = OSSL_STORE_open_ex(uri, libctx, NULL, NULL, NULL, NULL, NULL, NULL);
    if (st == NULL || !OSSL_STORE_expect(st, OSSL_STORE_INFO_CERT))
        die("cannot open the token's certificates");
    while (!OSSL_STORE_eof(st)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(st);
        if (info == NULL && OSSL_STORE_error(st))
            break;
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(st);
    collect_errors(err);
    shim_attach();
    real_opens = shim_count("C_OpenSession");
}

static void scenario_login(void)
{
    warm_module();
    load_under("login-device-error", "C_Login=CKR_DEVICE_ERROR@1", 0, "CKR_DEVICE_ERROR", 1);
    load_under("login-pin-locked", "C_Login=CKR_PIN_LOCKED@1", 0, "CKR_PIN_LOCKED", 1);
    load_ref_under("login-slow", key_ref, "C_Login=delay:1s", 1, NULL, 1);
    teardown_check(1);
}

/* A PIN the token rejected is never offered again in this process: not for
 * the same key file, not for the key's URI. */
static void scenario_pin_incorrect(void)
{
    const char *uri = getenv("FAULT_KEY_URI");

    warm_module();
    load_ref_under("pin-incorrect (key file)", key_ref, "C_Login=CKR_PIN_INCORRECT@1", 0,
                   "CKR_PIN_INCORRECT", 1);
    /* The token would take the PIN now: the provider must not offer it. */
    load_ref_under("pin-incorrect, again (key file)", key_ref, "", 0, "PIN", 0);
    if (uri != NULL && *uri != '\0')
        load_ref_under("pin-incorrect, again (URI)", uri, "", 0, "PIN", 0);
    teardown_check(1);
}

/* Faults while the key is found. */
static void scenario_load(void)
{
    warm_module();
    load_under("find-device-error", "C_FindObjectsInit=CKR_DEVICE_ERROR@1", 0, "CKR_DEVICE_ERROR",
               -1);
    load_under("attribute-device-error", "C_GetAttributeValue=CKR_DEVICE_ERROR", 0,
               "CKR_DEVICE_ERROR", -1);
    load_under("find-slow", "C_FindObjects=delay:300ms", 1, NULL, -1);
    /* A session the token forgot, or a login it lost, while the key is looked
     * up: a new session (and login) and one more try, as for signatures. */
    load_under("find-session-invalid", "C_FindObjectsInit=CKR_SESSION_HANDLE_INVALID@1", 1, NULL,
               -1);
    dropped_by_token += 2; /* one session for the key file, one for the URI */
    load_under("find-not-logged-in", "C_FindObjectsInit=CKR_USER_NOT_LOGGED_IN@1", 1, NULL, 1);
    load_under("attribute-session-closed", "C_GetAttributeValue=CKR_SESSION_CLOSED@1", 1, NULL, -1);
    dropped_by_token += 2;
    /* A token that keeps forgetting: one more try, then a clean failure. */
    load_under("find-session-invalid-always", "C_FindObjectsInit=CKR_SESSION_HANDLE_INVALID", 0,
               "CKR_SESSION_HANDLE_INVALID", -1);
    dropped_by_token += 4; /* two tries each */
    load_under("after-faults", "", 1, NULL, -1);
    teardown_check(1);
}

/* A slow token: signatures wait, but never for each other (no lock is held
 * across C_Sign), and nothing times out. */
struct job {
    EVP_PKEY *pkey;
    int ok;
    char err[2048];
};

static void *sign_thread(void *arg)
{
    struct job *j = arg;

    j->ok = sign_once(j->pkey, j->err);
    return NULL;
}

static void scenario_delay(void)
{
    EVP_PKEY *pkey = ready_key();
    struct job jobs[4];
    pthread_t th[4];
    counts a, b, d;
    double t;
    int i, all = 1;

    real_opens = shim_count("C_OpenSession");
    sign_under("slow-sign", pkey, "C_Sign=delay:1s", 1, NULL, 0, 1, &d);
    a = snap();
    faults("C_Sign=delay:1500ms");
    t = now();
    for (i = 0; i < 4; i++) {
        jobs[i].pkey = pkey;
        jobs[i].ok = 0;
        jobs[i].err[0] = '\0';
        if (pthread_create(&th[i], NULL, sign_thread, &jobs[i]) != 0)
            die("pthread_create");
    }
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        all &= jobs[i].ok;
    }
    t = now() - t;
    faults("");
    b = snap();
    real_opens += b.open - a.open;
    check(all, "slow-sign-concurrent: 4 threads signed with a 1.5 s C_Sign");
    check(t < 4.5,
          "slow-sign-concurrent: in %.2f s (serialised would be 6 s: no lock held "
          "across C_Sign)",
          t);
    check(b.login == a.login, "slow-sign-concurrent: no new login (C_Login x%lu)",
          b.login - a.login);
    sign_ok_after("slow-sign-concurrent", pkey);
    EVP_PKEY_free(pkey);
    teardown_check(4);
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } scenarios[] = {
        {"sign", scenario_sign},   {"removed", scenario_removed},
        {"login", scenario_login}, {"pin-incorrect", scenario_pin_incorrect},
        {"load", scenario_load},   {"delay", scenario_delay},
    };
    size_t i;

    if (argc != 5) {
        fprintf(stderr, "usage: fault_driver CONFIG SHIM KEY SCENARIO\n");
        return 2;
    }
    config_path = argv[1];
    shim_path = argv[2];
    key_ref = argv[3];
    setup();
    for (i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
        if (strcmp(argv[4], scenarios[i].name) == 0)
            break;
    if (i == sizeof(scenarios) / sizeof(scenarios[0])) {
        fprintf(stderr, "fault_driver: unknown scenario '%s'\n", argv[4]);
        return 2;
    }
    scenarios[i].fn();
    OSSL_LIB_CTX_free(libctx);
    OSSL_PROVIDER_unload(plain_default);
    OSSL_LIB_CTX_free(plainctx);
    printf("%s: %d check%s failed\n", argv[4], failures, failures == 1 ? "" : "s");
    return failures == 0 ? 0 : 1;
}
