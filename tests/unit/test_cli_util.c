/*
 * Output files appear whole or not at all, with the mode asked for, never
 * over an existing file without --force; and the text helpers (JSON
 * strings, shell quoting, hex) escape what they must.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static char dir[] = "/tmp/test_cli_util.XXXXXX";

static int setup(void **state)
{
    return mkdtemp(dir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *path_in(const char *name)
{
    static char path[256];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return path;
}

/* Number of entries in DIR (without . and ..), hidden temp files included. */
static int entries(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    }
    closedir(d);
    return n;
}

static void remove_all(void)
{
    char cmd[160];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'/* '%s'/.[!.]*", dir, dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(entries(), 0);
}

static void assert_file(const char *path, const char *content, mode_t mode)
{
    unsigned char *data = NULL;
    size_t len = 0;
    struct stat st;
    cli_err err;

    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, mode);
    assert_true(cli_read_file(path, 4096, &data, &len, &err));
    assert_int_equal(len, strlen(content));
    assert_memory_equal(data, content, len);
    free(data);
}

static void test_write_mode(void **state)
{
    static const struct {
        mode_t umask, mode, want;
    } rows[] = {
        {022, 0600, 0600},
        {022, 0644, 0644},
        {077, 0644, 0600}, /* the umask is honoured */
        {0, 0600, 0600},   /* ...and never widens */
    };
    size_t i;

    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const char *p = path_in("key.pem");
        cli_err err = {{0}};
        mode_t old = umask(rows[i].umask);

        remove_all();
        if (!cli_write_file_atomic(p, "secret\n", 7, rows[i].mode, 0, &err))
            fail_msg("write failed: %s", err.msg);
        umask(old);
        assert_file(p, "secret\n", rows[i].want);
        assert_int_equal(entries(), 1); /* no temp file left beside it */
    }
}

static void test_existing_refused_without_force(void **state)
{
    const char *p = path_in("x.csr");
    cli_err err = {{0}};

    remove_all();
    assert_true(cli_write_file_atomic(p, "old", 3, 0644, 0, &err));
    chmod(p, 0640);
    assert_false(cli_write_file_atomic(p, "new", 3, 0644, 0, &err));
    assert_non_null(strstr(err.msg, "exists"));
    assert_non_null(strstr(err.msg, "--force"));
    assert_file(p, "old", 0640); /* untouched */
    assert_int_equal(entries(), 1);

    assert_true(cli_write_file_atomic(p, "new!", 4, 0600, 1, &err));
    assert_file(p, "new!", 0600);
    assert_int_equal(entries(), 1);
}

static void test_failure_leaves_nothing(void **state)
{
    char p[300];
    cli_err err = {{0}};
    FILE *f;

    remove_all();
    /* The "directory" is a regular file: mkstemp fails. */
    f = fopen(path_in("plain"), "w");
    assert_non_null(f);
    fclose(f);
    snprintf(p, sizeof(p), "%s/out.pem", path_in("plain"));
    assert_false(cli_write_file_atomic(p, "x", 1, 0600, 0, &err));
    assert_non_null(strstr(err.msg, "out.pem"));
    assert_int_equal(entries(), 1);

    /* Target is a directory: rename fails after the temp file was written. */
    remove_all();
    assert_int_equal(mkdir(path_in("adir"), 0755), 0);
    assert_int_equal(mkdir(path_in("adir/inner"), 0755), 0);
    assert_false(cli_write_file_atomic(path_in("adir"), "x", 1, 0600, 1, &err));
    assert_int_equal(entries(), 1); /* only adir: the temp file is gone */
}

static void test_out_check(void **state)
{
    char p[300];
    cli_err err = {{0}};

    remove_all();
    assert_true(cli_out_check(path_in("new.csr"), 0, &err));
    assert_int_equal(entries(), 0); /* the probe file is removed */

    assert_true(cli_write_file_atomic(path_in("there.csr"), "x", 1, 0644, 0, &err));
    assert_false(cli_out_check(path_in("there.csr"), 0, &err));
    assert_non_null(strstr(err.msg, "there.csr exists"));
    assert_true(cli_out_check(path_in("there.csr"), 1, &err));

    assert_int_equal(mkdir(path_in("d"), 0755), 0);
    assert_false(cli_out_check(path_in("d"), 1, &err));
    assert_non_null(strstr(err.msg, "directory"));

    snprintf(p, sizeof(p), "%s/missing/x.csr", dir);
    assert_false(cli_out_check(p, 0, &err));
    assert_non_null(strstr(err.msg, "missing"));

    assert_false(cli_out_check("", 0, &err));
    assert_int_equal(entries(), 2);
}

static char *json_of(const char *s)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    cli_json_str(f, s);
    fclose(f);
    return buf;
}

static void test_json_str(void **state)
{
    static const struct {
        const char *in, *out;
    } rows[] = {
        {"plain", "\"plain\""},
        {"a\"b\\c", "\"a\\\"b\\\\c\""},
        {"line\nbreak\ttab\r", "\"line\\nbreak\\ttab\\r\""},
        {"\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\""},
        {"J\xc3\xbcrgen \xe2\x82\xac", "\"J\xc3\xbcrgen \xe2\x82\xac\""}, /* UTF-8 passes */
        {"bad\xff", "\"bad\\ufffd\""},                                    /* not UTF-8 */
        {"\xc3", "\"\\ufffd\""},                                          /* truncated */
        {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""},                    /* surrogate */
        {"", "\"\""},
        {NULL, "null"},
    };
    size_t i;

    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char *s = json_of(rows[i].in);

        assert_string_equal(s, rows[i].out);
        free(s);
    }
}

static void test_shell_quote(void **state)
{
    static const struct {
        const char *in, *out;
    } rows[] = {
        {"plain/path.pem", "plain/path.pem"},
        {"a b", "'a b'"},
        {"it's", "'it'\\''s'"},
        {"pkcs11:token=t;object=k", "'pkcs11:token=t;object=k'"},
        {"", "''"},
        {"$HOME", "'$HOME'"},
    };
    size_t i;

    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        assert_non_null(f);
        cli_shell_quote(f, rows[i].in);
        fclose(f);
        assert_string_equal(buf, rows[i].out);
        free(buf);
    }
}

static void test_hex(void **state)
{
    static const unsigned char id[] = {0x00, 0x1a, 0xff, 0x80};
    char *s = cli_hex(id, sizeof(id));

    assert_string_equal(s, "001aff80");
    free(s);
    s = cli_hex(id, 0);
    assert_string_equal(s, "");
    free(s);
}

/* Runs cli_getopt over args; returns what it returned last before -1 (or the refusal). */
static int getopt_run(char **args, int n, const char **value)
{
    static const struct option longopts[] = {
        {"pin-source", required_argument, NULL, 'p'},
        {"label", required_argument, NULL, 'l'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    int c, last = -1;

    optind = 0;
    opterr = 0;
    *value = NULL;
    while ((c = cli_getopt(n, args, ":", longopts)) != -1) {
        last = c;
        if (c == CLI_OPT_ABBREVIATED || c == '?' || c == ':')
            break;
        *value = optarg;
    }
    return last;
}

static void test_getopt_no_abbreviations(void **state)
{
    static const struct {
        const char *a1, *a2;
        int want;
        const char *value;
    } rows[] = {
        {"--pin-source", "file:/p", 'p', "file:/p"},
        {"--pin-source=file:/p", NULL, 'p', "file:/p"},
        {"--pin", "1234", CLI_OPT_ABBREVIATED, NULL}, /* never a PIN option */
        {"--pin=1234", NULL, CLI_OPT_ABBREVIATED, NULL},
        {"--pin-sourc", "x", CLI_OPT_ABBREVIATED, NULL},
        {"--label", "--json", 'l', "--json"}, /* a value that looks like an option */
        {"--js", NULL, CLI_OPT_ABBREVIATED, NULL},
        {"--json", NULL, 'j', NULL},
        {"--nope", NULL, '?', NULL},
    };
    size_t i;

    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char a0[] = "cmd", a1[64], a2[64];
        char *args[] = {a0, a1, a2, NULL};
        const char *value;
        int c;

        snprintf(a1, sizeof(a1), "%s", rows[i].a1);
        snprintf(a2, sizeof(a2), "%s", rows[i].a2 != NULL ? rows[i].a2 : "");
        c = getopt_run(args, rows[i].a2 != NULL ? 3 : 2, &value);
        if (c != rows[i].want)
            fail_msg("%s %s: got %d, expected %d", rows[i].a1, rows[i].a2 ? rows[i].a2 : "", c,
                     rows[i].want);
        if (rows[i].value != NULL)
            assert_string_equal(value, rows[i].value);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_mode),
        cmocka_unit_test(test_existing_refused_without_force),
        cmocka_unit_test(test_failure_leaves_nothing),
        cmocka_unit_test(test_out_check),
        cmocka_unit_test(test_json_str),
        cmocka_unit_test(test_shell_quote),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_getopt_no_abbreviations),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
