/*
 * A SoftHSM token for fuzz targets that need real objects behind the parser
 * (certificate import, URIs as the provider receives them): made once per
 * fuzzing process in a temporary directory, with an EC P-256 key pair
 * labelled "fuzz-key" (PIN from a 0600 file, already logged in) and a
 * certificate for it under the same label. The directory is removed at exit.
 *
 * Needs softhsm2-util and the SoftHSM module (MTLSKS_SOFTHSM_MODULE, default
 * /usr/lib/softhsm/libsofthsm2.so); a target that cannot set the token up
 * stops at once with the reason rather than fuzz nothing.
 *
 * Header-only (static functions): included by keystore/fuzz/ and
 * provider/fuzz/ targets.
 */
#ifndef MTLSKS_FUZZ_TOKEN_H
#define MTLSKS_FUZZ_TOKEN_H

#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <mtlsks/keystore.h>

extern char **environ;

#define FUZZ_TOKEN_LABEL "fuzz"
#define FUZZ_KEY_LABEL "fuzz-key"

static char fuzz_token_dir[256];

static void fuzz_token_die(const char *what)
{
    fprintf(stderr, "fuzz token setup: %s: %s\n", what, mks_last_error());
    exit(1);
}

static int fuzz_token_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void fuzz_token_cleanup(void)
{
    if (fuzz_token_dir[0] != '\0')
        nftw(fuzz_token_dir, fuzz_token_rm, 16, FTW_DEPTH | FTW_PHYS);
}

static void fuzz_token_write(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    size_t len = strlen(text);

    if (fd < 0 || write(fd, text, len) != (ssize_t)len || close(fd) != 0) {
        perror(path);
        exit(1);
    }
}

/* softhsm2-util --init-token, its output thrown away. */
static void fuzz_token_init(void)
{
    char *argv[] = {"softhsm2-util", "--init-token", "--free",   "--label", FUZZ_TOKEN_LABEL,
                    "--pin",         "1234",         "--so-pin", "5678",    NULL};
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int status;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ) != 0 ||
        waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "fuzz token setup: softhsm2-util --init-token failed\n");
        exit(1);
    }
    posix_spawn_file_actions_destroy(&fa);
}

/* A certificate for the token key, signed by a throwaway software key (the
 * keystore checks that the public keys match, not the signature). */
static void fuzz_token_add_cert(mks_key *key)
{
    size_t spki_len;
    const unsigned char *spki = mks_key_get0_spki(key, &spki_len);
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &spki, (long)spki_len);
    EVP_PKEY *signer = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    unsigned char *der = NULL;
    int len;

    if (pub == NULL || signer == NULL || x == NULL || !X509_set_version(x, X509_VERSION_3) ||
        !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) ||
        !X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                    (const unsigned char *)"fuzz", -1, -1, 0) ||
        !X509_set_issuer_name(x, X509_get_subject_name(x)) ||
        X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), 86400) == NULL || !X509_set_pubkey(x, pub) ||
        !X509_sign(x, signer, EVP_sha256()) || (len = i2d_X509(x, &der)) <= 0) {
        fprintf(stderr, "fuzz token setup: cannot make a certificate\n");
        exit(1);
    }
    if (mks_cert_import(key, FUZZ_KEY_LABEL, der, (size_t)len) != MKS_OK)
        fuzz_token_die("mks_cert_import");
    OPENSSL_free(der);
    X509_free(x);
    EVP_PKEY_free(signer);
    EVP_PKEY_free(pub);
}

/*
 * Makes the token and returns a keystore context on it (TPM: a TCTI that
 * refuses connections, so tpmkey: URIs fail fast instead of finding a TPM)
 * and the key. Both live until the process exits.
 */
static void fuzz_token_setup(mks_ctx **ctx, mks_key **key)
{
    const char *tmp = getenv("TMPDIR");
    const char *module = getenv("MTLSKS_SOFTHSM_MODULE");
    char path[512], conf[1024], pin_source[512];
    mks_keygen_params kp = {MKS_KEY_EC, 0, "P-256", FUZZ_KEY_LABEL};
    mks_config cfg = {0};

    if (module == NULL || *module == '\0')
        module = "/usr/lib/softhsm/libsofthsm2.so";
    snprintf(fuzz_token_dir, sizeof(fuzz_token_dir), "%s/mtlsks-fuzz-XXXXXX",
             tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
    if (mkdtemp(fuzz_token_dir) == NULL) {
        perror(fuzz_token_dir);
        exit(1);
    }
    atexit(fuzz_token_cleanup);
    snprintf(path, sizeof(path), "%s/tokens", fuzz_token_dir);
    if (mkdir(path, 0700) != 0) {
        perror(path);
        exit(1);
    }
    snprintf(conf, sizeof(conf),
             "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", path);
    snprintf(path, sizeof(path), "%s/softhsm2.conf", fuzz_token_dir);
    fuzz_token_write(path, conf, 0600);
    setenv("SOFTHSM2_CONF", path, 1);
    setenv("TSS2_LOG", "all+none", 1);
    snprintf(path, sizeof(path), "%s/pin", fuzz_token_dir);
    fuzz_token_write(path, "1234", 0600);
    snprintf(pin_source, sizeof(pin_source), "file:%s", path);
    fuzz_token_init();

    cfg.pkcs11_module = module;
    cfg.pin_source = pin_source;
    cfg.tpm2_tcti = "swtpm:host=127.0.0.1,port=1";
    if (mks_ctx_new(&cfg, ctx) != MKS_OK)
        fuzz_token_die("mks_ctx_new");
    if (mks_keygen(*ctx, "pkcs11:token=" FUZZ_TOKEN_LABEL, &kp, NULL, key) != MKS_OK)
        fuzz_token_die("mks_keygen");
    fuzz_token_add_cert(*key);
}

#endif
