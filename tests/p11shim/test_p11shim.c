/*
 * The PKCS#11 shim counts every call and injects the faults it is told to:
 * by mtlsks_shim_set_faults, and by a control file that changes while the
 * module is in use. Run by test_shim.sh, which makes the SoftHSM token and
 * passes, in the environment:
 *   MTLSKS_SHIM           the shim module
 *   MTLSKS_SHIM_CONTROL   control file path (absent at start)
 *   SHIM_TEST_TOKEN       token label; user PIN in SHIM_TEST_PIN
 *   SHIM_TEST_KEY         label of an EC P-256 private key on it
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "p11shim.h"

static void *dl;
static CK_FUNCTION_LIST *fl;
static CK_SESSION_HANDLE session;
static CK_OBJECT_HANDLE key;
static mtlsks_shim_count_fn *shim_count;
static mtlsks_shim_peak_fn *shim_peak;
static mtlsks_shim_counts_reset_fn *shim_reset;
static mtlsks_shim_counts_list_fn *shim_list;
static mtlsks_shim_set_faults_fn *shim_set_faults;

static const char *env(const char *name)
{
    const char *v = getenv(name);

    if (v == NULL || *v == '\0') {
        fprintf(stderr, "%s is not set (run through test_shim.sh)\n", name);
        exit(1);
    }
    return v;
}

static CK_SLOT_ID find_slot(const char *label)
{
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16, i;
    CK_TOKEN_INFO ti;
    size_t len = strlen(label);

    assert_int_equal(fl->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
    for (i = 0; i < n; i++) {
        assert_int_equal(fl->C_GetTokenInfo(slots[i], &ti), CKR_OK);
        if (memcmp(ti.label, label, len) == 0 && (len == 32 || ti.label[len] == ' '))
            return slots[i];
    }
    fail_msg("no token labelled %s", label);
    return 0;
}

static int setup(void **state)
{
    CK_C_GetFunctionList get_list;
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    const char *pin = env("SHIM_TEST_PIN");
    const char *label = env("SHIM_TEST_KEY");
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE t[2] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, (void *)label, strlen(label)}};
    CK_ULONG n = 0;

    dl = dlopen(env("MTLSKS_SHIM"), RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL)
        return -1;
    get_list = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
    shim_count = (mtlsks_shim_count_fn *)dlsym(dl, "mtlsks_shim_count");
    shim_reset = (mtlsks_shim_counts_reset_fn *)dlsym(dl, "mtlsks_shim_counts_reset");
    shim_peak = (mtlsks_shim_peak_fn *)dlsym(dl, "mtlsks_shim_peak");
    shim_list = (mtlsks_shim_counts_list_fn *)dlsym(dl, "mtlsks_shim_counts_list");
    shim_set_faults = (mtlsks_shim_set_faults_fn *)dlsym(dl, "mtlsks_shim_set_faults");
    if (get_list == NULL || shim_count == NULL || shim_peak == NULL || shim_reset == NULL ||
        shim_list == NULL || shim_set_faults == NULL || get_list(&fl) != CKR_OK ||
        fl->C_Initialize(&args) != CKR_OK)
        return -1;
    if (fl->C_OpenSession(find_slot(env("SHIM_TEST_TOKEN")), CKF_SERIAL_SESSION, NULL, NULL,
                          &session) != CKR_OK ||
        fl->C_Login(session, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)) != CKR_OK ||
        fl->C_FindObjectsInit(session, t, 2) != CKR_OK ||
        fl->C_FindObjects(session, &key, 1, &n) != CKR_OK ||
        fl->C_FindObjectsFinal(session) != CKR_OK || n != 1)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    if (fl != NULL) {
        fl->C_CloseSession(session);
        fl->C_Finalize(NULL);
    }
    return 0;
}

/* Resets faults and counts before each test. */
static int reset(void **state)
{
    assert_int_equal(shim_set_faults(NULL), 0);
    shim_reset();
    return 0;
}

/* One ECDSA signature on session s: C_SignInit + C_Sign; returns C_Sign's result. */
static CK_RV sign_on(CK_SESSION_HANDLE s)
{
    CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
    unsigned char hash[32] = {1, 2, 3}, sig[64];
    CK_ULONG siglen = sizeof(sig);
    CK_RV rv = fl->C_SignInit(s, &mech, key);

    if (rv != CKR_OK)
        return rv;
    return fl->C_Sign(s, hash, sizeof(hash), sig, &siglen);
}

static CK_RV sign_once(void)
{
    return sign_on(session);
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void counts_every_call(void **state)
{
    char list[256];
    int i;

    for (i = 0; i < 3; i++)
        assert_int_equal(sign_once(), CKR_OK);
    assert_int_equal(shim_count("C_SignInit"), 3);
    assert_int_equal(shim_count("C_Sign"), 3);
    assert_int_equal(shim_count("C_Login"), 0);
    assert_int_equal(shim_count(NULL), 6);
    assert_int_equal(shim_list(list, sizeof(list)), strlen("C_SignInit=3 C_Sign=3"));
    assert_string_equal(list, "C_SignInit=3 C_Sign=3");
    /* Truncated like snprintf, and says how long the whole list is. */
    assert_int_equal(shim_list(list, 5), strlen("C_SignInit=3 C_Sign=3"));
    assert_string_equal(list, "C_Si");
    shim_reset();
    assert_int_equal(shim_count("C_Sign"), 0);
    assert_int_equal(shim_list(list, sizeof(list)), 0);
    assert_string_equal(list, "");
}

/* Table: a rule, and what each of six signatures returns under it. */
static const struct {
    const char *spec;
    CK_RV want[6];
} fault_cases[] = {
    {"C_Sign=CKR_DEVICE_ERROR@3", {CKR_OK, CKR_OK, CKR_DEVICE_ERROR, CKR_OK, CKR_OK, CKR_OK}},
    {"C_Sign=CKR_SESSION_HANDLE_INVALID@2+",
     {CKR_OK, CKR_SESSION_HANDLE_INVALID, CKR_SESSION_HANDLE_INVALID, CKR_SESSION_HANDLE_INVALID,
      CKR_SESSION_HANDLE_INVALID, CKR_SESSION_HANDLE_INVALID}},
    {"C_SignInit=CKR_KEY_HANDLE_INVALID@2-3",
     {CKR_OK, CKR_KEY_HANDLE_INVALID, CKR_KEY_HANDLE_INVALID, CKR_OK, CKR_OK, CKR_OK}},
    {"C_Sign=0x30", {0x30, 0x30, 0x30, 0x30, 0x30, 0x30}},
    {"# a comment\n*=CKR_DEVICE_REMOVED@5+ C_Login=CKR_PIN_LOCKED",
     {CKR_OK, CKR_OK, CKR_DEVICE_REMOVED, CKR_DEVICE_REMOVED, CKR_DEVICE_REMOVED,
      CKR_DEVICE_REMOVED}},
    {"C_Sign=CKR_DEVICE_ERROR@1; C_Sign=CKR_GENERAL_ERROR@1-2",
     {CKR_DEVICE_ERROR, CKR_GENERAL_ERROR, CKR_OK, CKR_OK, CKR_OK, CKR_OK}},
};

static void injects_faults(void **state)
{
    size_t i, j;

    for (i = 0; i < sizeof(fault_cases) / sizeof(fault_cases[0]); i++) {
        assert_int_equal(shim_set_faults(fault_cases[i].spec), 0);
        for (j = 0; j < 6; j++) {
            CK_RV rv = sign_once();
            if (rv != fault_cases[i].want[j])
                fail_msg("'%s', signature %zu: got 0x%lx, expected 0x%lx", fault_cases[i].spec,
                         j + 1, (unsigned long)rv, (unsigned long)fault_cases[i].want[j]);
        }
    }
    /* A failed C_Sign ended the operation in the real module too. */
    assert_int_equal(shim_set_faults(NULL), 0);
    assert_int_equal(sign_once(), CKR_OK);
}

static void delays(void **state)
{
    double t0;

    assert_int_equal(shim_set_faults("C_Sign=delay:150ms"), 0);
    t0 = now();
    assert_int_equal(sign_once(), CKR_OK);
    assert_true(now() - t0 >= 0.15);
    assert_int_equal(shim_set_faults("C_SignInit=delay:100000us@2"), 0);
    t0 = now();
    assert_int_equal(sign_once(), CKR_OK);
    assert_true(now() - t0 < 0.1);
    t0 = now();
    assert_int_equal(sign_once(), CKR_OK);
    assert_true(now() - t0 >= 0.1);
}

/* A slow signature on its own session, in a thread. */
static atomic_int slow_done;
static CK_RV slow_rv;

static void *slow_sign(void *arg)
{
    slow_rv = sign_on(*(CK_SESSION_HANDLE *)arg);
    atomic_store(&slow_done, 1);
    return NULL;
}

/*
 * A delay holds no lock of the shim's: while one signature waits out its
 * delay, a signature on another session goes through. (A slow network HSM
 * answers several sessions at once; the asynchronous signing tests rely on
 * the shim doing the same.) The slow call is known to be inside its delay
 * once C_Sign's count says it entered; the second signature must finish
 * while the first is still waiting.
 */
static void delay_holds_no_lock(void **state)
{
    CK_SESSION_HANDLE second;
    pthread_t t;

    assert_int_equal(fl->C_OpenSession(find_slot(env("SHIM_TEST_TOKEN")), CKF_SERIAL_SESSION, NULL,
                                       NULL, &second),
                     CKR_OK);
    assert_int_equal(shim_set_faults("C_Sign=delay:3s@1"), 0);
    atomic_store(&slow_done, 0);
    assert_int_equal(pthread_create(&t, NULL, slow_sign, &second), 0);
    while (shim_count("C_Sign") == 0)
        usleep(1000);
    assert_int_equal(sign_once(), CKR_OK);
    assert_int_equal(atomic_load(&slow_done), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(slow_rv, CKR_OK);
    assert_int_equal(shim_count("C_Sign"), 2);
    /* Both signatures were in progress at once. */
    assert_int_equal(shim_peak("C_Sign"), 2);
    assert_int_equal(shim_peak("C_SignInit"), 1);
    assert_int_equal(fl->C_CloseSession(second), CKR_OK);
}

static void rejects_bad_specs(void **state)
{
    static const char *const bad[] = {
        "C_Sign",        "C_Nope=CKR_OK",       "C_Sign=CKR_NOPE",   "C_Sign=delay:5h",
        "C_Sign=delay:", "C_Sign=CKR_OK@0",     "C_Sign=CKR_OK@3-2", "C_Sign=CKR_OK@x",
        "C_Sign=12z",    "C_GetFunctionList=1", "=CKR_OK",
    };
    size_t i;

    assert_int_equal(shim_set_faults("C_Sign=CKR_DEVICE_ERROR"), 0);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (shim_set_faults(bad[i]) != -1)
            fail_msg("'%s' was accepted", bad[i]);
    /* The rules in force stay. */
    assert_int_equal(sign_once(), CKR_DEVICE_ERROR);
}

/* Writes the control file by replacing it, as a test flipping faults does. */
static void write_control(const char *text)
{
    const char *path = env("MTLSKS_SHIM_CONTROL");
    char tmp[4096];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, path), 0);
}

static void control_file_flips_faults(void **state)
{
    const char *path = env("MTLSKS_SHIM_CONTROL");

    assert_int_equal(sign_once(), CKR_OK);
    write_control("# token removed\nC_SignInit=CKR_DEVICE_REMOVED\n");
    assert_int_equal(sign_once(), CKR_DEVICE_REMOVED);
    assert_int_equal(sign_once(), CKR_DEVICE_REMOVED);
    write_control("# token back\n");
    assert_int_equal(sign_once(), CKR_OK);
    /* @N counts from the moment the file changed. */
    write_control("C_Sign=CKR_DEVICE_ERROR@2\n");
    assert_int_equal(sign_once(), CKR_OK);
    assert_int_equal(sign_once(), CKR_DEVICE_ERROR);
    assert_int_equal(sign_once(), CKR_OK);
    /* Control rules apply on top of the program's. */
    write_control("C_Sign=CKR_DEVICE_ERROR\n");
    assert_int_equal(shim_set_faults("C_SignInit=CKR_GENERAL_ERROR@1"), 0);
    assert_int_equal(sign_once(), CKR_GENERAL_ERROR);
    assert_int_equal(sign_once(), CKR_DEVICE_ERROR);
    /* A malformed file contributes nothing (and says so on stderr). */
    write_control("C_Sign=garbage\n");
    assert_int_equal(sign_once(), CKR_OK);
    write_control("C_Sign=CKR_DEVICE_ERROR\n");
    assert_int_equal(sign_once(), CKR_DEVICE_ERROR);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(sign_once(), CKR_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(counts_every_call, reset),
        cmocka_unit_test_setup(injects_faults, reset),
        cmocka_unit_test_setup(delays, reset),
        cmocka_unit_test_setup(delay_holds_no_lock, reset),
        cmocka_unit_test_setup(rejects_bad_specs, reset),
        cmocka_unit_test_setup(control_file_flips_faults, reset),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
