/*
 * The CLI reads the mtlsks provider's section of openssl.cnf the way
 * OpenSSL's loader finds it. Each test writes a configuration to a temp file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char dir[] = "/tmp/test_cli_config.XXXXXX";

static int setup(void **state)
{
    if (mkdtemp(dir) == NULL)
        return -1;
    unsetenv("OPENSSL_CONF");
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes text to DIR/name; returns the path (static buffer). */
static const char *write_conf(const char *name, const char *text)
{
    static char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return path;
}

static const char sample[] = "# as in the README\n"
                             "openssl_conf = openssl_init\n"
                             "\n"
                             "[openssl_init]\n"
                             "providers = provider_sect\n"
                             "\n"
                             "[provider_sect]\n"
                             "default = default_sect\n"
                             "mtlsks = mtlsks_sect\n"
                             "\n"
                             "[default_sect]\n"
                             "activate = 1\n"
                             "\n"
                             "[mtlsks_sect]\n"
                             "module = /usr/lib/x86_64-linux-gnu/ossl-modules/mtlsks.so\n"
                             "pkcs11-module = /usr/lib/softhsm/libsofthsm2.so\n"
                             "pkcs11-pin-source = file:/etc/mtlsks/pin\n"
                             "tpm2-tcti = swtpm:host=127.0.0.1,port=2400\n"
                             "activate = 1\n";

static void test_section_found(void **state)
{
    const char *path = write_conf("sample.cnf", sample);
    cli_config c;
    cli_err err = {{0}};

    if (!cli_config_load(path, &c, &err))
        fail_msg("load failed: %s", err.msg);
    assert_string_equal(c.file, path);
    assert_string_equal(c.section, "mtlsks_sect");
    assert_string_equal(c.pkcs11_module, "/usr/lib/softhsm/libsofthsm2.so");
    assert_string_equal(c.pin_source, "file:/etc/mtlsks/pin");
    assert_string_equal(c.tpm2_tcti, "swtpm:host=127.0.0.1,port=2400");
    cli_config_clear(&c);
    assert_null(c.pkcs11_module);
}

static void test_section_by_identity(void **state)
{
    /* An entry with another name whose section says identity = mtlsks. */
    const char *path = write_conf("identity.cnf", "openssl_conf = init\n"
                                                  "[init]\n"
                                                  "providers = provs\n"
                                                  "[provs]\n"
                                                  "default = dflt\n"
                                                  "hw = hw_sect\n"
                                                  "[dflt]\n"
                                                  "activate = 1\n"
                                                  "[hw_sect]\n"
                                                  "identity = mtlsks\n"
                                                  "pkcs11-module = /opt/hsm.so\n");
    cli_config c;
    cli_err err = {{0}};

    assert_true(cli_config_load(path, &c, &err));
    assert_string_equal(c.section, "hw_sect");
    assert_string_equal(c.pkcs11_module, "/opt/hsm.so");
    assert_null(c.pin_source);
    assert_null(c.tpm2_tcti);
    cli_config_clear(&c);
}

static void test_no_mtlsks_section(void **state)
{
    /* Another provider configured, not ours: defaults. Values in the default
     * section or in other sections must not be picked up. */
    const char *path = write_conf("other.cnf", "openssl_conf = init\n"
                                               "pkcs11-module = /wrong/default-section.so\n"
                                               "[init]\n"
                                               "providers = provs\n"
                                               "[provs]\n"
                                               "pkcs11 = pkcs11_sect\n"
                                               "[pkcs11_sect]\n"
                                               "pkcs11-module = /wrong/other-provider.so\n");
    cli_config c;
    cli_err err = {{0}};

    assert_true(cli_config_load(path, &c, &err));
    assert_string_equal(c.file, path);
    assert_null(c.section);
    assert_null(c.pkcs11_module);
    assert_null(c.pin_source);
    cli_config_clear(&c);
}

static void test_no_fallback_to_default_section(void **state)
{
    /* Our section lacks pkcs11-module; the default section's must not leak in. */
    const char *path = write_conf("partial.cnf", "openssl_conf = init\n"
                                                 "pkcs11-module = /wrong/default-section.so\n"
                                                 "[init]\n"
                                                 "providers = provs\n"
                                                 "[provs]\n"
                                                 "mtlsks = m\n"
                                                 "[m]\n"
                                                 "pkcs11-pin-source = file:/run/pin\n");
    cli_config c;
    cli_err err = {{0}};

    assert_true(cli_config_load(path, &c, &err));
    assert_string_equal(c.section, "m");
    assert_null(c.pkcs11_module);
    assert_string_equal(c.pin_source, "file:/run/pin");
    cli_config_clear(&c);
}

static void test_no_openssl_conf_line(void **state)
{
    const char *path = write_conf("plain.cnf", "[req]\ndefault_bits = 2048\n");
    cli_config c;
    cli_err err = {{0}};

    assert_true(cli_config_load(path, &c, &err));
    assert_null(c.section);
    assert_null(c.pkcs11_module);
    cli_config_clear(&c);
}

static void test_missing_file(void **state)
{
    char path[256];
    cli_config c;
    cli_err err = {{0}};

    snprintf(path, sizeof(path), "%s/does-not-exist.cnf", dir);
    assert_false(cli_config_load(path, &c, &err));
    assert_non_null(strstr(err.msg, path));
    assert_null(c.file);
}

static void test_syntax_error_names_line(void **state)
{
    const char *path = write_conf("broken.cnf", "openssl_conf = init\n"
                                                "[init\n"
                                                "providers = provs\n");
    cli_config c;
    cli_err err = {{0}};

    assert_false(cli_config_load(path, &c, &err));
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "line 2"));
}

static void test_openssl_conf_env(void **state)
{
    const char *path = write_conf("env.cnf", sample);
    cli_config c;
    cli_err err = {{0}};

    assert_int_equal(setenv("OPENSSL_CONF", path, 1), 0);
    assert_true(cli_config_load(NULL, &c, &err));
    assert_string_equal(c.file, path);
    assert_string_equal(c.pkcs11_module, "/usr/lib/softhsm/libsofthsm2.so");
    cli_config_clear(&c);

    /* An explicit file wins over $OPENSSL_CONF. */
    path = write_conf("explicit.cnf", "[x]\n");
    assert_true(cli_config_load(path, &c, &err));
    assert_string_equal(c.file, path);
    assert_null(c.pkcs11_module);
    cli_config_clear(&c);

    /* $OPENSSL_CONF naming a missing file is an error, not silently ignored. */
    assert_int_equal(setenv("OPENSSL_CONF", "/nonexistent/openssl.cnf", 1), 0);
    assert_false(cli_config_load(NULL, &c, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/openssl.cnf"));
    assert_non_null(strstr(err.msg, "OPENSSL_CONF"));
    unsetenv("OPENSSL_CONF");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_section_found),
        cmocka_unit_test(test_section_by_identity),
        cmocka_unit_test(test_no_mtlsks_section),
        cmocka_unit_test(test_no_fallback_to_default_section),
        cmocka_unit_test(test_no_openssl_conf_line),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_syntax_error_names_line),
        cmocka_unit_test(test_openssl_conf_env),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
