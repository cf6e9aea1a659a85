/*
 * mtlsks-p11shim.so: a PKCS#11 module for tests and benchmarks that sits in
 * front of a real module, counts every call and injects faults on demand.
 *
 * Load it wherever a PKCS#11 module path goes (pkcs11-module in openssl.cnf,
 * libp11's MODULE_PATH, pkcs11-tool --module). Every C_* call is forwarded to
 * the real module, unless a fault rule says otherwise.
 *
 * Environment (read when the module is loaded, i.e. at the first
 * C_GetFunctionList):
 *   MTLSKS_SHIM_MODULE   the real module (default /usr/lib/softhsm/libsofthsm2.so)
 *   MTLSKS_SHIM_COUNTS   file to which call counts are appended at C_Finalize
 *                        and at process exit (when they changed since):
 *                        one line "PID C_Name COUNT" per function called,
 *                        cumulative since load or the last reset; the last
 *                        line for a PID and name is the final count. Then
 *                        "PID C_Name:peak N" for each function that was in
 *                        progress more than once at a time: the most calls
 *                        at once (a delay counts as in progress), which is
 *                        how a test sees that a server kept several
 *                        signatures waiting on a slow token together
 *   MTLSKS_SHIM_FAULTS   fault rules (below)
 *   MTLSKS_SHIM_CONTROL  a file of fault rules, read again whenever it changes
 *                        (checked on every call; see ctl_refresh), so a test
 *                        can flip faults while a server runs: write the new
 *                        rules to a temporary file and mv it over. A
 *                        missing or empty file means no rules from it. Its
 *                        rules apply in addition to MTLSKS_SHIM_FAULTS.
 *
 * Fault rules: separated by ',', ';', blanks or new lines; '#' starts a
 * comment that runs to the end of the line.
 *   FUNC=ACTION[@WHEN]
 *   FUNC    C_Sign, C_Login, ...; '*' is every function but C_GetFunctionList
 *   ACTION  CKR_DEVICE_ERROR (any CKR_ name below, or a number such as 0x32):
 *           return that code without calling the real module (calls that
 *           end an operation, such as C_Sign, still reach it, see
 *           ends_operation);
 *           delay:200ms (also us, s): wait, then forward the call;
 *           flags:+CKF_USER_PIN_FINAL_TRY (or _LOCKED, _COUNT_LOW), for
 *           C_GetTokenInfo only: forward, then OR the flag into the answer
 *   WHEN    N: only the Nth call; N+: the Nth and every later one; N-M: the
 *           Nth to the Mth. Calls are counted per rule, from the moment the
 *           rule was set (module load, mtlsks_shim_set_faults, or a new
 *           control file). Without @, every call.
 * Examples:
 *   C_Sign=CKR_DEVICE_ERROR@3             the third C_Sign fails
 *   C_Sign=CKR_SESSION_HANDLE_INVALID@2+  every C_Sign from the second fails
 *   C_Login=CKR_PIN_LOCKED                every login fails
 *   C_Sign=delay:200ms                    every signature takes 200 ms more
 *   *=CKR_DEVICE_REMOVED                  the token is gone (control file)
 * When several rules match a call, every delay applies and the first error
 * wins. A malformed MTLSKS_SHIM_FAULTS makes C_GetFunctionList fail (a test
 * must not run without the faults it asked for); a malformed control file is
 * reported on stderr and contributes no rules.
 *
 * In-process use (benchmarks, C tests): p11shim.h declares the exported
 * mtlsks_shim_count, mtlsks_shim_counts_reset, mtlsks_shim_counts_list and
 * mtlsks_shim_set_faults, reached through dlopen(path, RTLD_NOLOAD) + dlsym.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "p11shim.h"

#define SHIM_EXPORT __attribute__((visibility("default")))
#define SHIM_DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"

/* Every function of the 2.40 CK_FUNCTION_LIST, in its order. F: forwarded
 * as is (name, parameters, arguments); S: written out below. */
#define SHIM_FUNCTIONS(F, S)                                                                       \
    S(C_Initialize)                                                                                \
    S(C_Finalize)                                                                                  \
    F(C_GetInfo, (CK_INFO * info), (info))                                                         \
    S(C_GetFunctionList)                                                                           \
    F(C_GetSlotList, (unsigned char token_present, CK_SLOT_ID *slot_list, unsigned long *count),   \
      (token_present, slot_list, count))                                                           \
    F(C_GetSlotInfo, (CK_SLOT_ID slot_id, CK_SLOT_INFO * info), (slot_id, info))                   \
    S(C_GetTokenInfo)                                                                              \
    F(C_GetMechanismList,                                                                          \
      (CK_SLOT_ID slot_id, CK_MECHANISM_TYPE * mechanism_list, unsigned long *count),              \
      (slot_id, mechanism_list, count))                                                            \
    F(C_GetMechanismInfo, (CK_SLOT_ID slot_id, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO * info),  \
      (slot_id, type, info))                                                                       \
    F(C_InitToken,                                                                                 \
      (CK_SLOT_ID slot_id, unsigned char *pin, unsigned long pin_len, unsigned char *label),       \
      (slot_id, pin, pin_len, label))                                                              \
    F(C_InitPIN, (CK_SESSION_HANDLE session, unsigned char *pin, unsigned long pin_len),           \
      (session, pin, pin_len))                                                                     \
    F(C_SetPIN,                                                                                    \
      (CK_SESSION_HANDLE session, unsigned char *old_pin, unsigned long old_len,                   \
       unsigned char *new_pin, unsigned long new_len),                                             \
      (session, old_pin, old_len, new_pin, new_len))                                               \
    F(C_OpenSession,                                                                               \
      (CK_SLOT_ID slot_id, CK_FLAGS flags, void *application, CK_NOTIFY notify,                    \
       CK_SESSION_HANDLE *session),                                                                \
      (slot_id, flags, application, notify, session))                                              \
    F(C_CloseSession, (CK_SESSION_HANDLE session), (session))                                      \
    F(C_CloseAllSessions, (CK_SLOT_ID slot_id), (slot_id))                                         \
    F(C_GetSessionInfo, (CK_SESSION_HANDLE session, CK_SESSION_INFO * info), (session, info))      \
    F(C_GetOperationState,                                                                         \
      (CK_SESSION_HANDLE session, unsigned char *operation_state,                                  \
       unsigned long *operation_state_len),                                                        \
      (session, operation_state, operation_state_len))                                             \
    F(C_SetOperationState,                                                                         \
      (CK_SESSION_HANDLE session, unsigned char *operation_state,                                  \
       unsigned long operation_state_len, CK_OBJECT_HANDLE encryption_key,                         \
       CK_OBJECT_HANDLE authentiation_key),                                                        \
      (session, operation_state, operation_state_len, encryption_key, authentiation_key))          \
    F(C_Login,                                                                                     \
      (CK_SESSION_HANDLE session, CK_USER_TYPE user_type, unsigned char *pin,                      \
       unsigned long pin_len),                                                                     \
      (session, user_type, pin, pin_len))                                                          \
    F(C_Logout, (CK_SESSION_HANDLE session), (session))                                            \
    F(C_CreateObject,                                                                              \
      (CK_SESSION_HANDLE session, CK_ATTRIBUTE * templ, unsigned long count,                       \
       CK_OBJECT_HANDLE *object),                                                                  \
      (session, templ, count, object))                                                             \
    F(C_CopyObject,                                                                                \
      (CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE * templ,                   \
       unsigned long count, CK_OBJECT_HANDLE *new_object),                                         \
      (session, object, templ, count, new_object))                                                 \
    F(C_DestroyObject, (CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object), (session, object))    \
    F(C_GetObjectSize, (CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, unsigned long *size),  \
      (session, object, size))                                                                     \
    F(C_GetAttributeValue,                                                                         \
      (CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE * templ,                   \
       unsigned long count),                                                                       \
      (session, object, templ, count))                                                             \
    F(C_SetAttributeValue,                                                                         \
      (CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE * templ,                   \
       unsigned long count),                                                                       \
      (session, object, templ, count))                                                             \
    F(C_FindObjectsInit, (CK_SESSION_HANDLE session, CK_ATTRIBUTE * templ, unsigned long count),   \
      (session, templ, count))                                                                     \
    F(C_FindObjects,                                                                               \
      (CK_SESSION_HANDLE session, CK_OBJECT_HANDLE * object, unsigned long max_object_count,       \
       unsigned long *object_count),                                                               \
      (session, object, max_object_count, object_count))                                           \
    F(C_FindObjectsFinal, (CK_SESSION_HANDLE session), (session))                                  \
    F(C_EncryptInit, (CK_SESSION_HANDLE session, CK_MECHANISM * mechanism, CK_OBJECT_HANDLE key),  \
      (session, mechanism, key))                                                                   \
    F(C_Encrypt,                                                                                   \
      (CK_SESSION_HANDLE session, unsigned char *data, unsigned long data_len,                     \
       unsigned char *encrypted_data, unsigned long *encrypted_data_len),                          \
      (session, data, data_len, encrypted_data, encrypted_data_len))                               \
    F(C_EncryptUpdate,                                                                             \
      (CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len,                     \
       unsigned char *encrypted_part, unsigned long *encrypted_part_len),                          \
      (session, part, part_len, encrypted_part, encrypted_part_len))                               \
    F(C_EncryptFinal,                                                                              \
      (CK_SESSION_HANDLE session, unsigned char *last_encrypted_part,                              \
       unsigned long *last_encrypted_part_len),                                                    \
      (session, last_encrypted_part, last_encrypted_part_len))                                     \
    F(C_DecryptInit, (CK_SESSION_HANDLE session, CK_MECHANISM * mechanism, CK_OBJECT_HANDLE key),  \
      (session, mechanism, key))                                                                   \
    F(C_Decrypt,                                                                                   \
      (CK_SESSION_HANDLE session, unsigned char *encrypted_data, unsigned long encrypted_data_len, \
       unsigned char *data, unsigned long *data_len),                                              \
      (session, encrypted_data, encrypted_data_len, data, data_len))                               \
    F(C_DecryptUpdate,                                                                             \
      (CK_SESSION_HANDLE session, unsigned char *encrypted_part, unsigned long encrypted_part_len, \
       unsigned char *part, unsigned long *part_len),                                              \
      (session, encrypted_part, encrypted_part_len, part, part_len))                               \
    F(C_DecryptFinal,                                                                              \
      (CK_SESSION_HANDLE session, unsigned char *last_part, unsigned long *last_part_len),         \
      (session, last_part, last_part_len))                                                         \
    F(C_DigestInit, (CK_SESSION_HANDLE session, CK_MECHANISM * mechanism), (session, mechanism))   \
    F(C_Digest,                                                                                    \
      (CK_SESSION_HANDLE session, unsigned char *data, unsigned long data_len,                     \
       unsigned char *digest, unsigned long *digest_len),                                          \
      (session, data, data_len, digest, digest_len))                                               \
    F(C_DigestUpdate, (CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len),    \
      (session, part, part_len))                                                                   \
    F(C_DigestKey, (CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key), (session, key))              \
    F(C_DigestFinal,                                                                               \
      (CK_SESSION_HANDLE session, unsigned char *digest, unsigned long *digest_len),               \
      (session, digest, digest_len))                                                               \
    F(C_SignInit, (CK_SESSION_HANDLE session, CK_MECHANISM * mechanism, CK_OBJECT_HANDLE key),     \
      (session, mechanism, key))                                                                   \
    F(C_Sign,                                                                                      \
      (CK_SESSION_HANDLE session, unsigned char *data, unsigned long data_len,                     \
       unsigned char *signature, unsigned long *signature_len),                                    \
      (session, data, data_len, signature, signature_len))                                         \
    F(C_SignUpdate, (CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len),      \
      (session, part, part_len))                                                                   \
    F(C_SignFinal,                                                                                 \
      (CK_SESSION_HANDLE session, unsigned char *signature, unsigned long *signature_len),         \
      (session, signature, signature_len))                                                         \
    F(C_SignRecoverInit,                                                                           \
      (CK_SESSION_HANDLE session, CK_MECHANISM * mechanism, CK_OBJECT_HANDLE key),                 \
      (session, mechanism, key))                                                                   \
    F(C_SignRecover,                                                                               \
      (CK_SESSION_HANDLE session, unsigned char *data, unsigned long data_len,                     \
       unsigned char *signature, unsigned long *signature_len),                                    \
      (session, data, data_len, signature, signature_len))                                         \
    F(C_VerifyInit, (CK_SESSION_HANDLE session, CK_MECHANISM * mechanism, CK_OBJECT_HANDLE key),   \
      (session, mechanism, key))                                                                   \
    F(C_Verify,                                                                                    \
      (CK_SESSION_HANDLE session, unsigned char *data, unsigned long data_len,                     \
       unsigned char *signature, unsigned long signature_len),                                     \
      (session, data, data_len, signature, signature_len))                                         \
    F(C_VerifyUpdate, (CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len),    \
      (session, part, part_len))                                                                   \
    F(C_VerifyFinal,                                                                               \
      (CK_SESSION_HANDLE session, unsigned char *signature, unsigned long signature_len),          \
      (session, signature, signature_len))                                                         \
    F(C_VerifyRecoverInit,                                                                         \
      (CK_SESSION_HANDLE session, CK_MECHANISM * mechanism, CK_OBJECT_HANDLE key),                 \
      (session, mechanism, key))                                                                   \
    F(C_VerifyRecover,                                                                             \
      (CK_SESSION_HANDLE session, unsigned char *signature, unsigned long signature_len,           \
       unsigned char *data, unsigned long *data_len),                                              \
      (session, signature, signature_len, data, data_len))                                         \
    F(C_DigestEncryptUpdate,                                                                       \
      (CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len,                     \
       unsigned char *encrypted_part, unsigned long *encrypted_part_len),                          \
      (session, part, part_len, encrypted_part, encrypted_part_len))                               \
    F(C_DecryptDigestUpdate,                                                                       \
      (CK_SESSION_HANDLE session, unsigned char *encrypted_part, unsigned long encrypted_part_len, \
       unsigned char *part, unsigned long *part_len),                                              \
      (session, encrypted_part, encrypted_part_len, part, part_len))                               \
    F(C_SignEncryptUpdate,                                                                         \
      (CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len,                     \
       unsigned char *encrypted_part, unsigned long *encrypted_part_len),                          \
      (session, part, part_len, encrypted_part, encrypted_part_len))                               \
    F(C_DecryptVerifyUpdate,                                                                       \
      (CK_SESSION_HANDLE session, unsigned char *encrypted_part, unsigned long encrypted_part_len, \
       unsigned char *part, unsigned long *part_len),                                              \
      (session, encrypted_part, encrypted_part_len, part, part_len))                               \
    F(C_GenerateKey,                                                                               \
      (CK_SESSION_HANDLE session, CK_MECHANISM * mechanism, CK_ATTRIBUTE * templ,                  \
       unsigned long count, CK_OBJECT_HANDLE *key),                                                \
      (session, mechanism, templ, count, key))                                                     \
    F(C_GenerateKeyPair,                                                                           \
      (CK_SESSION_HANDLE session, CK_MECHANISM * mechanism, CK_ATTRIBUTE * public_key_template,    \
       unsigned long public_key_attribute_count, CK_ATTRIBUTE *private_key_template,               \
       unsigned long private_key_attribute_count, CK_OBJECT_HANDLE *public_key,                    \
       CK_OBJECT_HANDLE *private_key),                                                             \
      (session, mechanism, public_key_template, public_key_attribute_count, private_key_template,  \
       private_key_attribute_count, public_key, private_key))                                      \
    F(C_WrapKey,                                                                                   \
      (CK_SESSION_HANDLE session, CK_MECHANISM * mechanism, CK_OBJECT_HANDLE wrapping_key,         \
       CK_OBJECT_HANDLE key, unsigned char *wrapped_key, unsigned long *wrapped_key_len),          \
      (session, mechanism, wrapping_key, key, wrapped_key, wrapped_key_len))                       \
    F(C_UnwrapKey,                                                                                 \
      (CK_SESSION_HANDLE session, CK_MECHANISM * mechanism, CK_OBJECT_HANDLE unwrapping_key,       \
       unsigned char *wrapped_key, unsigned long wrapped_key_len, CK_ATTRIBUTE *templ,             \
       unsigned long attribute_count, CK_OBJECT_HANDLE *key),                                      \
      (session, mechanism, unwrapping_key, wrapped_key, wrapped_key_len, templ, attribute_count,   \
       key))                                                                                       \
    F(C_DeriveKey,                                                                                 \
      (CK_SESSION_HANDLE session, CK_MECHANISM * mechanism, CK_OBJECT_HANDLE base_key,             \
       CK_ATTRIBUTE * templ, unsigned long attribute_count, CK_OBJECT_HANDLE *key),                \
      (session, mechanism, base_key, templ, attribute_count, key))                                 \
    F(C_SeedRandom, (CK_SESSION_HANDLE session, unsigned char *seed, unsigned long seed_len),      \
      (session, seed, seed_len))                                                                   \
    F(C_GenerateRandom,                                                                            \
      (CK_SESSION_HANDLE session, unsigned char *random_data, unsigned long random_len),           \
      (session, random_data, random_len))                                                          \
    F(C_GetFunctionStatus, (CK_SESSION_HANDLE session), (session))                                 \
    F(C_CancelFunction, (CK_SESSION_HANDLE session), (session))                                    \
    F(C_WaitForSlotEvent, (CK_FLAGS flags, CK_SLOT_ID * slot, void *reserved),                     \
      (flags, slot, reserved))

/* ---- function table ---------------------------------------------------- */

#define ENUM_F(name, params, args) F_##name,
#define ENUM_S(name) F_##name,
enum { SHIM_FUNCTIONS(ENUM_F, ENUM_S) F_COUNT };

#define NAME_F(name, params, args) #name,
#define NAME_S(name) #name,
static const char *const fn_names[F_COUNT] = {SHIM_FUNCTIONS(NAME_F, NAME_S)};

/* ---- state --------------------------------------------------------------- */

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static CK_RV load_rv = CKR_GENERAL_ERROR;
static void *real_dl;
static CK_FUNCTION_LIST *real;

static atomic_ulong counts[F_COUNT];
/* Calls in progress (their delay included), and the most at once. */
static atomic_ulong in_flight[F_COUNT];
static atomic_ulong peaks[F_COUNT];
static atomic_ulong written_total; /* sum of counts when last written; ULONG_MAX: never */

typedef struct rule {
    int fn; /* F_*, or -1 for '*' */
    int has_rv;
    CK_RV rv;
    unsigned long delay_us;
    CK_FLAGS or_flags;      /* C_GetTokenInfo: flags ORed into the real answer */
    unsigned long from, to; /* call numbers, 1-based, inclusive */
    atomic_ulong seen;
} rule;

typedef struct ruleset {
    size_t n;
    rule r[];
} ruleset;

/* rules_lock guards the two rule sets; ctl_lock the control file's state. */
static pthread_rwlock_t rules_lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_mutex_t ctl_lock = PTHREAD_MUTEX_INITIALIZER;
static ruleset *env_rules; /* MTLSKS_SHIM_FAULTS or mtlsks_shim_set_faults */
static ruleset *ctl_rules; /* MTLSKS_SHIM_CONTROL */
static char *ctl_path;
static struct stat ctl_stat;
static char *ctl_text;
static int ctl_exists;
static atomic_int faults_possible; /* 0: no rules and no control file */

/* ---- CKR names ------------------------------------------------------------ */

#define CKR_ENTRY(x)                                                                               \
    {                                                                                              \
#x, x                                                                                      \
    }
static const struct {
    const char *name;
    CK_RV rv;
} ckr_names[] = {
    CKR_ENTRY(CKR_OK),
    CKR_ENTRY(CKR_CANCEL),
    CKR_ENTRY(CKR_HOST_MEMORY),
    CKR_ENTRY(CKR_SLOT_ID_INVALID),
    CKR_ENTRY(CKR_GENERAL_ERROR),
    CKR_ENTRY(CKR_FUNCTION_FAILED),
    CKR_ENTRY(CKR_ARGUMENTS_BAD),
    CKR_ENTRY(CKR_NO_EVENT),
    CKR_ENTRY(CKR_CANT_LOCK),
    CKR_ENTRY(CKR_ATTRIBUTE_READ_ONLY),
    CKR_ENTRY(CKR_ATTRIBUTE_SENSITIVE),
    CKR_ENTRY(CKR_ATTRIBUTE_TYPE_INVALID),
    CKR_ENTRY(CKR_DATA_INVALID),
    CKR_ENTRY(CKR_DATA_LEN_RANGE),
    CKR_ENTRY(CKR_DEVICE_ERROR),
    CKR_ENTRY(CKR_DEVICE_MEMORY),
    CKR_ENTRY(CKR_DEVICE_REMOVED),
    CKR_ENTRY(CKR_FUNCTION_CANCELED),
    CKR_ENTRY(CKR_FUNCTION_NOT_SUPPORTED),
    CKR_ENTRY(CKR_KEY_HANDLE_INVALID),
    CKR_ENTRY(CKR_KEY_TYPE_INCONSISTENT),
    CKR_ENTRY(CKR_KEY_FUNCTION_NOT_PERMITTED),
    CKR_ENTRY(CKR_MECHANISM_INVALID),
    CKR_ENTRY(CKR_MECHANISM_PARAM_INVALID),
    CKR_ENTRY(CKR_OBJECT_HANDLE_INVALID),
    CKR_ENTRY(CKR_OPERATION_ACTIVE),
    CKR_ENTRY(CKR_OPERATION_NOT_INITIALIZED),
    CKR_ENTRY(CKR_PIN_INCORRECT),
    CKR_ENTRY(CKR_PIN_INVALID),
    CKR_ENTRY(CKR_PIN_LEN_RANGE),
    CKR_ENTRY(CKR_PIN_EXPIRED),
    CKR_ENTRY(CKR_PIN_LOCKED),
    CKR_ENTRY(CKR_SESSION_CLOSED),
    CKR_ENTRY(CKR_SESSION_COUNT),
    CKR_ENTRY(CKR_SESSION_HANDLE_INVALID),
    CKR_ENTRY(CKR_SESSION_READ_ONLY),
    CKR_ENTRY(CKR_SIGNATURE_INVALID),
    CKR_ENTRY(CKR_TOKEN_NOT_PRESENT),
    CKR_ENTRY(CKR_TOKEN_NOT_RECOGNIZED),
    CKR_ENTRY(CKR_TOKEN_WRITE_PROTECTED),
    CKR_ENTRY(CKR_USER_ALREADY_LOGGED_IN),
    CKR_ENTRY(CKR_USER_NOT_LOGGED_IN),
    CKR_ENTRY(CKR_USER_PIN_NOT_INITIALIZED),
    CKR_ENTRY(CKR_USER_TYPE_INVALID),
    CKR_ENTRY(CKR_BUFFER_TOO_SMALL),
    CKR_ENTRY(CKR_CRYPTOKI_NOT_INITIALIZED),
    CKR_ENTRY(CKR_CRYPTOKI_ALREADY_INITIALIZED),
    CKR_ENTRY(CKR_FUNCTION_REJECTED),
};

/* ---- fault rules ------------------------------------------------------------ */

static int fn_by_name(const char *name, size_t len)
{
    int i;

    if (len == 1 && name[0] == '*')
        return -1;
    for (i = 0; i < F_COUNT; i++)
        if (strlen(fn_names[i]) == len && strncmp(fn_names[i], name, len) == 0)
            return i;
    return -2;
}

static int parse_ulong(const char **p, unsigned long *out)
{
    char *end;

    if (**p < '0' || **p > '9')
        return 0;
    errno = 0;
    *out = strtoul(*p, &end, 0);
    if (errno != 0)
        return 0;
    *p = end;
    return 1;
}

/* Parses one rule from the token [s, e). Returns 0 on success, else writes
 * a reason to why. */
static int parse_rule(const char *s, const char *e, rule *r, char *why, size_t whysz)
{
    const char *eq = memchr(s, '=', (size_t)(e - s));
    const char *act, *at, *p;
    size_t i, len;

    memset(r, 0, sizeof(*r));
    r->from = 1;
    r->to = ULONG_MAX;
    if (eq == NULL) {
        snprintf(why, whysz, "'%.*s': expected FUNC=ACTION", (int)(e - s), s);
        return -1;
    }
    r->fn = fn_by_name(s, (size_t)(eq - s));
    if (r->fn == -2 || r->fn == F_C_GetFunctionList) {
        snprintf(why, whysz, "'%.*s': no such PKCS#11 function", (int)(eq - s), s);
        return -1;
    }
    act = eq + 1;
    at = memchr(act, '@', (size_t)(e - act));
    len = (size_t)((at != NULL ? at : e) - act);
    if (len > 7 && strncmp(act, "flags:+", 7) == 0) {
        static const struct {
            const char *name;
            CK_FLAGS flag;
        } flags[] = {{"CKF_USER_PIN_FINAL_TRY", CKF_USER_PIN_FINAL_TRY},
                     {"CKF_USER_PIN_LOCKED", CKF_USER_PIN_LOCKED},
                     {"CKF_USER_PIN_COUNT_LOW", CKF_USER_PIN_COUNT_LOW}};
        p = act + 7;
        len = (size_t)((at != NULL ? at : e) - p);
        for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
            if (strlen(flags[i].name) == len && strncmp(flags[i].name, p, len) == 0)
                r->or_flags = flags[i].flag;
        if (r->or_flags == 0 || r->fn != F_C_GetTokenInfo)
            goto bad_action;
    } else if (len > 6 && strncmp(act, "delay:", 6) == 0) {
        unsigned long v;
        p = act + 6;
        if (!parse_ulong(&p, &v))
            goto bad_action;
        len = (size_t)((at != NULL ? at : e) - p);
        if (len == 0 || (len == 2 && strncmp(p, "ms", 2) == 0))
            r->delay_us = v * 1000;
        else if (len == 2 && strncmp(p, "us", 2) == 0)
            r->delay_us = v;
        else if (len == 1 && *p == 's')
            r->delay_us = v * 1000000;
        else
            goto bad_action;
    } else if (len > 4 && strncmp(act, "CKR_", 4) == 0) {
        for (i = 0; i < sizeof(ckr_names) / sizeof(ckr_names[0]); i++)
            if (strlen(ckr_names[i].name) == len && strncmp(ckr_names[i].name, act, len) == 0)
                break;
        if (i == sizeof(ckr_names) / sizeof(ckr_names[0]))
            goto bad_action;
        r->has_rv = 1;
        r->rv = ckr_names[i].rv;
    } else {
        unsigned long v;
        p = act;
        if (!parse_ulong(&p, &v) || p != act + len)
            goto bad_action;
        r->has_rv = 1;
        r->rv = v;
    }
    if (at != NULL) {
        p = at + 1;
        if (!parse_ulong(&p, &r->from) || r->from == 0)
            goto bad_when;
        r->to = r->from;
        if (p < e && *p == '+') {
            r->to = ULONG_MAX;
            p++;
        } else if (p < e && *p == '-') {
            p++;
            if (!parse_ulong(&p, &r->to) || r->to < r->from)
                goto bad_when;
        }
        if (p != e)
            goto bad_when;
    }
    return 0;
bad_action:
    snprintf(why, whysz,
             "'%.*s': ACTION must be CKR_NAME, a number, delay:N(ms|us|s) or (for "
             "C_GetTokenInfo) flags:+CKF_USER_PIN_FINAL_TRY|LOCKED|COUNT_LOW",
             (int)(e - s), s);
    return -1;
bad_when:
    snprintf(why, whysz, "'%.*s': expected @N, @N+ or @N-M (N >= 1)", (int)(e - s), s);
    return -1;
}

static int is_sep(char c)
{
    return c == ',' || c == ';' || c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parses a rule list. *out is NULL for an empty list. Returns 0, or -1 with a
 * reason in why. */
static int parse_rules(const char *spec, ruleset **out, char *why, size_t whysz)
{
    ruleset *rs;
    size_t cap = 0, n = 0;
    const char *p, *s;

    *out = NULL;
    if (spec == NULL)
        return 0;
    for (p = spec; *p != '\0'; p++)
        if (*p == '=')
            cap++;
    if (cap == 0) {
        for (p = spec; *p != '\0' && (is_sep(*p) || *p == '#'); p++)
            if (*p == '#')
                while (*p != '\0' && *p != '\n')
                    p++;
        if (*p == '\0')
            return 0;
    }
    rs = calloc(1, sizeof(*rs) + (cap + 1) * sizeof(rule));
    if (rs == NULL) {
        snprintf(why, whysz, "out of memory");
        return -1;
    }
    p = spec;
    for (;;) {
        while (*p != '\0' && (is_sep(*p) || *p == '#')) {
            if (*p == '#')
                while (*p != '\0' && *p != '\n')
                    p++;
            else
                p++;
        }
        if (*p == '\0')
            break;
        s = p;
        while (*p != '\0' && !is_sep(*p) && *p != '#')
            p++;
        if (n == cap) {
            snprintf(why, whysz, "'%.*s': expected FUNC=ACTION", (int)(p - s), s);
            free(rs);
            return -1;
        }
        if (parse_rule(s, p, &rs->r[n], why, whysz) != 0) {
            free(rs);
            return -1;
        }
        n++;
    }
    rs->n = n;
    if (n == 0) {
        free(rs);
        rs = NULL;
    }
    *out = rs;
    return 0;
}

static void update_faults_possible(void)
{
    atomic_store(&faults_possible, env_rules != NULL || ctl_path != NULL);
}

/* The control file's content (NULL when absent or unreadable). */
static char *read_control(void)
{
    FILE *f = fopen(ctl_path, "r");
    char *text;
    size_t len;

    if (f == NULL)
        return NULL;
    text = calloc(1, 65536);
    if (text != NULL) {
        len = fread(text, 1, 65535, f);
        text[len] = '\0';
    }
    fclose(f);
    return text;
}

/*
 * Reads the control file again when it changed: its inode, size or mtime
 * differ, or (file systems keep mtime in clock ticks, so a rewrite within
 * the same tick looks unchanged) its content differs while its mtime is
 * less than two seconds old.
 */
static void ctl_refresh(void)
{
    struct stat st;
    struct timespec now;
    int exists, changed;
    ruleset *rs = NULL, *old;
    char *text = NULL;
    char why[256];

    pthread_mutex_lock(&ctl_lock);
    exists = stat(ctl_path, &st) == 0;
    changed = exists != ctl_exists ||
              (exists &&
               (st.st_ino != ctl_stat.st_ino || st.st_dev != ctl_stat.st_dev ||
                st.st_size != ctl_stat.st_size || st.st_mtim.tv_sec != ctl_stat.st_mtim.tv_sec ||
                st.st_mtim.tv_nsec != ctl_stat.st_mtim.tv_nsec));
    if (exists && !changed) {
        clock_gettime(CLOCK_REALTIME, &now);
        if (now.tv_sec - st.st_mtim.tv_sec < 2) {
            text = read_control();
            changed = (text == NULL) != (ctl_text == NULL) ||
                      (text != NULL && strcmp(text, ctl_text) != 0);
        }
    }
    if (!changed) {
        free(text);
        pthread_mutex_unlock(&ctl_lock);
        return;
    }
    ctl_exists = exists;
    ctl_stat = st;
    if (exists && text == NULL)
        text = read_control();
    if (text != NULL && parse_rules(text, &rs, why, sizeof(why)) != 0) {
        fprintf(stderr, "mtlsks-p11shim: %s: %s; no faults from it\n", ctl_path, why);
        rs = NULL;
    }
    free(ctl_text);
    ctl_text = text;
    pthread_rwlock_wrlock(&rules_lock);
    old = ctl_rules;
    ctl_rules = rs;
    pthread_rwlock_unlock(&rules_lock);
    free(old);
    pthread_mutex_unlock(&ctl_lock);
}

static void apply_rules_locked(ruleset *rs, int fn, int *inject, CK_RV *rv, unsigned long *delay_us,
                               CK_FLAGS *or_flags)
{
    size_t i;

    if (rs == NULL)
        return;
    for (i = 0; i < rs->n; i++) {
        rule *r = &rs->r[i];
        unsigned long n;

        if (r->fn != fn && !(r->fn == -1 && fn != F_C_GetFunctionList))
            continue;
        n = atomic_fetch_add(&r->seen, 1) + 1;
        if (n < r->from || n > r->to)
            continue;
        *delay_us += r->delay_us;
        *or_flags |= r->or_flags;
        if (r->has_rv && !*inject) {
            *inject = 1;
            *rv = r->rv;
        }
    }
}

/*
 * Every call starts here: counts it and applies the fault rules. Returns 1
 * when the call must return *rv without reaching the real module.
 */
static int shim_enter_flags(int fn, CK_RV *rv, CK_FLAGS *or_flags)
{
    int inject = 0;
    unsigned long delay_us = 0;

    atomic_fetch_add_explicit(&counts[fn], 1, memory_order_relaxed);
    if (!atomic_load_explicit(&faults_possible, memory_order_relaxed))
        return 0;
    if (ctl_path != NULL)
        ctl_refresh();
    pthread_rwlock_rdlock(&rules_lock);
    apply_rules_locked(env_rules, fn, &inject, rv, &delay_us, or_flags);
    apply_rules_locked(ctl_rules, fn, &inject, rv, &delay_us, or_flags);
    pthread_rwlock_unlock(&rules_lock);
    if (delay_us > 0) {
        struct timespec ts = {(time_t)(delay_us / 1000000), (long)(delay_us % 1000000) * 1000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    return inject;
}

static int shim_enter(int fn, CK_RV *rv)
{
    CK_FLAGS ignored = 0;

    return shim_enter_flags(fn, rv, &ignored);
}

/* ---- counts ------------------------------------------------------------------ */

static void call_begin(int fn)
{
    unsigned long n = atomic_fetch_add(&in_flight[fn], 1) + 1;
    unsigned long p = atomic_load(&peaks[fn]);

    while (n > p && !atomic_compare_exchange_weak(&peaks[fn], &p, n))
        ;
}

static void call_end(int fn)
{
    atomic_fetch_sub(&in_flight[fn], 1);
}

static unsigned long total_count(void)
{
    unsigned long t = 0;
    int i;

    for (i = 0; i < F_COUNT; i++)
        t += atomic_load(&counts[i]);
    return t;
}

static void write_counts(void)
{
    const char *path = getenv("MTLSKS_SHIM_COUNTS");
    char buf[F_COUNT * 64];
    size_t len = 0;
    int i, fd;
    unsigned long total = total_count();

    if (path == NULL || *path == '\0')
        return;
    atomic_store(&written_total, total);
    for (i = 0; i < F_COUNT; i++) {
        unsigned long c = atomic_load(&counts[i]);
        if (c > 0)
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%ld %s %lu\n", (long)getpid(),
                                    fn_names[i], c);
    }
    for (i = 0; i < F_COUNT; i++) {
        unsigned long p = atomic_load(&peaks[i]);
        if (p > 1)
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%ld %s:peak %lu\n",
                                    (long)getpid(), fn_names[i], p);
    }
    if (len == 0)
        return;
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    /* One write: lines of processes sharing the file do not interleave. */
    if (write(fd, buf, len) != (ssize_t)len)
        fprintf(stderr, "mtlsks-p11shim: cannot write counts to %s\n", path);
    close(fd);
}

__attribute__((destructor)) static void shim_exit(void)
{
    unsigned long w = atomic_load(&written_total);

    if (w == ULONG_MAX || w != total_count())
        write_counts();
}

SHIM_EXPORT unsigned long mtlsks_shim_count(const char *name)
{
    int fn;

    if (name == NULL || strcmp(name, "*") == 0)
        return total_count();
    fn = fn_by_name(name, strlen(name));
    return fn >= 0 ? atomic_load(&counts[fn]) : 0;
}

SHIM_EXPORT unsigned long mtlsks_shim_peak(const char *name)
{
    int fn = fn_by_name(name, strlen(name));

    return fn >= 0 ? atomic_load(&peaks[fn]) : 0;
}

SHIM_EXPORT void mtlsks_shim_counts_reset(void)
{
    int i;

    for (i = 0; i < F_COUNT; i++) {
        atomic_store(&counts[i], 0);
        atomic_store(&peaks[i], atomic_load(&in_flight[i]));
    }
}

SHIM_EXPORT size_t mtlsks_shim_counts_list(char *buf, size_t size)
{
    size_t len = 0;
    int i, n;

    if (size > 0)
        buf[0] = '\0';
    for (i = 0; i < F_COUNT; i++) {
        unsigned long c = atomic_load(&counts[i]);
        if (c == 0)
            continue;
        n = snprintf(len < size ? buf + len : NULL, len < size ? size - len : 0, "%s%s=%lu",
                     len > 0 ? " " : "", fn_names[i], c);
        if (n > 0)
            len += (size_t)n;
    }
    return len;
}

SHIM_EXPORT int mtlsks_shim_set_faults(const char *spec)
{
    ruleset *rs, *old;
    char why[256];

    if (parse_rules(spec, &rs, why, sizeof(why)) != 0) {
        fprintf(stderr, "mtlsks-p11shim: %s\n", why);
        return -1;
    }
    pthread_rwlock_wrlock(&rules_lock);
    old = env_rules;
    env_rules = rs;
    update_faults_possible();
    pthread_rwlock_unlock(&rules_lock);
    free(old);
    return 0;
}

/* ---- loading the real module -------------------------------------------------- */

static void atfork_child(void)
{
    /* Another thread may have held a lock at fork(). */
    pthread_rwlock_init(&rules_lock, NULL);
    pthread_mutex_init(&ctl_lock, NULL);
}

static void load_real(void)
{
    const char *path = getenv("MTLSKS_SHIM_MODULE");
    const char *faults = getenv("MTLSKS_SHIM_FAULTS");
    const char *ctl = getenv("MTLSKS_SHIM_CONTROL");
    CK_C_GetFunctionList get_list;
    char why[256];

    atomic_store(&written_total, ULONG_MAX);
    pthread_atfork(NULL, NULL, atfork_child);
    if (parse_rules(faults, &env_rules, why, sizeof(why)) != 0) {
        fprintf(stderr, "mtlsks-p11shim: MTLSKS_SHIM_FAULTS: %s\n", why);
        return;
    }
    if (ctl != NULL && *ctl != '\0' && (ctl_path = strdup(ctl)) == NULL)
        return;
    update_faults_possible();
    if (path == NULL || *path == '\0')
        path = SHIM_DEFAULT_MODULE;
    real_dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (real_dl == NULL) {
        fprintf(stderr, "mtlsks-p11shim: cannot load %s: %s\n", path, dlerror());
        return;
    }
    get_list = (CK_C_GetFunctionList)dlsym(real_dl, "C_GetFunctionList");
    if (get_list == NULL || get_list(&real) != CKR_OK || real == NULL) {
        fprintf(stderr, "mtlsks-p11shim: %s is not a PKCS#11 module\n", path);
        real = NULL;
        return;
    }
    load_rv = CKR_OK;
}

/* ---- the module's functions -------------------------------------------------- */

/*
 * A call that fails ends the session's active operation (PKCS#11 2.40,
 * 5.2): with an injected failure of such a call the real module still runs
 * it, so that the session is left as a real failure would leave it (no
 * CKR_OPERATION_ACTIVE at the next C_SignInit).
 */
static int ends_operation(int fn)
{
    switch (fn) {
    case F_C_Encrypt:
    case F_C_EncryptUpdate:
    case F_C_EncryptFinal:
    case F_C_Decrypt:
    case F_C_DecryptUpdate:
    case F_C_DecryptFinal:
    case F_C_Digest:
    case F_C_DigestUpdate:
    case F_C_DigestKey:
    case F_C_DigestFinal:
    case F_C_Sign:
    case F_C_SignUpdate:
    case F_C_SignFinal:
    case F_C_SignRecover:
    case F_C_Verify:
    case F_C_VerifyUpdate:
    case F_C_VerifyFinal:
    case F_C_VerifyRecover:
    case F_C_DigestEncryptUpdate:
    case F_C_DecryptDigestUpdate:
    case F_C_SignEncryptUpdate:
    case F_C_DecryptVerifyUpdate:
        return 1;
    default:
        return 0;
    }
}

#define WRAP_F(name, params, args)                                                                 \
    static CK_RV shim_##name params                                                                \
    {                                                                                              \
        CK_RV rv;                                                                                  \
        call_begin(F_##name);                                                                      \
        if (!shim_enter(F_##name, &rv))                                                            \
            rv = real->name args;                                                                  \
        else if (ends_operation(F_##name))                                                         \
            (void)real->name args;                                                                 \
        call_end(F_##name);                                                                        \
        return rv;                                                                                 \
    }
#define WRAP_S(name)
SHIM_FUNCTIONS(WRAP_F, WRAP_S)

static CK_RV shim_C_Initialize(void *init_args)
{
    CK_RV rv;

    pthread_once(&load_once, load_real);
    if (load_rv != CKR_OK)
        return load_rv;
    if (shim_enter(F_C_Initialize, &rv))
        return rv;
    return real->C_Initialize(init_args);
}

/* Forwarded, then the flags rules (flags:+CKF_USER_PIN_FINAL_TRY ...) add
 * theirs: a token that reports a PIN about to lock. */
static CK_RV shim_C_GetTokenInfo(CK_SLOT_ID slot_id, CK_TOKEN_INFO *info)
{
    CK_FLAGS or_flags = 0;
    CK_RV rv;

    if (shim_enter_flags(F_C_GetTokenInfo, &rv, &or_flags))
        return rv;
    rv = real->C_GetTokenInfo(slot_id, info);
    if (rv == CKR_OK && info != NULL)
        info->flags |= or_flags;
    return rv;
}

static CK_RV shim_C_Finalize(void *reserved)
{
    CK_RV rv;

    if (!shim_enter(F_C_Finalize, &rv))
        rv = real->C_Finalize(reserved);
    write_counts();
    return rv;
}

SHIM_EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST **function_list);

#define LIST_F(name, params, args) .name = shim_##name,
#define LIST_S(name) .name = shim_##name,
#define shim_C_GetFunctionList C_GetFunctionList
static CK_FUNCTION_LIST shim_list = {.version = {CRYPTOKI_VERSION_MAJOR, CRYPTOKI_VERSION_MINOR},
                                     SHIM_FUNCTIONS(LIST_F, LIST_S)};
#undef shim_C_GetFunctionList

CK_RV C_GetFunctionList(CK_FUNCTION_LIST **function_list)
{
    atomic_fetch_add_explicit(&counts[F_C_GetFunctionList], 1, memory_order_relaxed);
    pthread_once(&load_once, load_real);
    if (load_rv != CKR_OK)
        return load_rv;
    if (function_list == NULL)
        return CKR_ARGUMENTS_BAD;
    *function_list = &shim_list;
    return CKR_OK;
}
