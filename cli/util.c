#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>

void cli_err_set(cli_err *err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

/*
 * The reason of an OpenSSL error, or a fallback; clears the queue. The
 * queue's first error that carries text is the innermost cause (a
 * provider's "C_Sign: CKR_DEVICE_ERROR" under OpenSSL's "EVP lib"): it is
 * the one reported; without one, the most recent error is.
 */
static void ossl_reason(char *buf, size_t size)
{
    unsigned long e, last = 0, cause = 0;
    const char *data, *reason, *lib;
    char text[200] = "";
    int flags;

    while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
        last = e;
        if (cause == 0 && (flags & ERR_TXT_STRING) != 0 && data != NULL && *data != '\0') {
            cause = e;
            snprintf(text, sizeof(text), "%s", data);
        }
    }
    e = cause != 0 ? cause : last;
    reason = e != 0 ? ERR_reason_error_string(e) : NULL;
    lib = e != 0 ? ERR_lib_error_string(e) : NULL;
    if (e == 0)
        snprintf(buf, size, "unknown OpenSSL error");
    else if (reason != NULL)
        snprintf(buf, size, "%s%s%s%s%s", lib != NULL ? lib : "", lib != NULL ? ": " : "", reason,
                 *text != '\0' ? ": " : "", text);
    else if (*text != '\0')
        snprintf(buf, size, "%s", text);
    else
        ERR_error_string_n(e, buf, size);
}

void cli_err_set_ossl(cli_err *err, const char *fmt, ...)
{
    va_list ap;
    char reason[256];
    size_t n;

    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    ossl_reason(reason, sizeof(reason));
    n = strlen(err->msg);
    snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", reason);
}

static void vfail(const char *cmd, const char *suffix, const char *fmt, va_list ap)
{
    if (cmd != NULL)
        fprintf(stderr, "%s %s: ", CLI_PROGRAM, cmd);
    else
        fprintf(stderr, "%s: ", CLI_PROGRAM);
    vfprintf(stderr, fmt, ap);
    if (suffix != NULL && *suffix != '\0')
        fprintf(stderr, ": %s", suffix);
    fputc('\n', stderr);
}

void cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfail(cmd, NULL, fmt, ap);
    va_end(ap);
}

void cli_fail_ks(const char *cmd, mks_rv rv, const char *fmt, ...)
{
    va_list ap;
    const char *why = mks_last_error();

    if (why == NULL || *why == '\0')
        why = mks_rv_name(rv);
    va_start(ap, fmt);
    vfail(cmd, why, fmt, ap);
    va_end(ap);
    if (rv == MKS_ERR_PIN_REQUIRED)
        fprintf(stderr, "%s%s%s: give the PIN with --pin-source file:PATH\n", CLI_PROGRAM,
                cmd != NULL ? " " : "", cmd != NULL ? cmd : "");
}

void cli_fail_ossl(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    char reason[256];

    ossl_reason(reason, sizeof(reason));
    va_start(ap, fmt);
    vfail(cmd, reason, fmt, ap);
    va_end(ap);
}

/* The option cli_getopt refused, as typed (up to any '='). */
static char abbreviated[64];

int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts)
{
    int idx = -1, c;
    const char *typed;
    size_t n;

    c = getopt_long(argc, argv, shortopts, longopts, &idx);
    if (c == -1 || c == '?' || c == ':' || idx < 0)
        return c;
    /* "--name=value" leaves optarg inside argv[optind - 1]; "--name value"
     * puts the value there and the option one before. */
    if (longopts[idx].has_arg != no_argument && optarg == argv[optind - 1])
        typed = argv[optind - 2];
    else
        typed = argv[optind - 1];
    if (strncmp(typed, "--", 2) != 0)
        return c; /* cannot happen for a long option; leave it to getopt */
    typed += 2;
    n = strcspn(typed, "=");
    if (n == strlen(longopts[idx].name) && strncmp(typed, longopts[idx].name, n) == 0)
        return c;
    snprintf(abbreviated, sizeof(abbreviated), "--%.*s", (int)n, typed);
    return CLI_OPT_ABBREVIATED;
}

int cli_usage_error(const char *cmd, char **argv, int c)
{
    const char *arg = optind > 0 ? argv[optind - 1] : "";

    /* Long options show as typed; a short one may sit in a cluster ("-fx"). */
    int is_long = strncmp(arg, "--", 2) == 0;

    if (c == CLI_OPT_ABBREVIATED) {
        cli_fail(cmd, "unknown option '%s' (long options are not abbreviated)", abbreviated);
    } else if (c == ':') {
        if (is_long || optopt == 0 || optopt >= 0x100)
            cli_fail(cmd, "option '%s' needs a value", arg);
        else
            cli_fail(cmd, "option '-%c' needs a value", optopt);
    } else if (!is_long && optopt != 0 && optopt < 0x100) {
        cli_fail(cmd, "unknown option '-%c'", optopt);
    } else {
        cli_fail(cmd, "unknown or ambiguous option '%s'", arg);
    }
    fprintf(stderr, "Try '%s%s%s --help'.\n", CLI_PROGRAM, cmd != NULL ? " " : "",
            cmd != NULL ? cmd : "");
    return CLI_EXIT_USAGE;
}

/* Splits path into its directory ("." when it has none); malloc'd. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static const char *base_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash != NULL ? slash + 1 : path;
}

/* "DIR/.BASE.XXXXXX": hidden, in the same directory so rename() stays atomic. */
static char *temp_template(const char *path)
{
    char *dir = dir_of(path);
    char *tmpl = NULL;
    size_t n;

    if (dir == NULL)
        return NULL;
    n = strlen(dir) + strlen(base_of(path)) + 16;
    tmpl = malloc(n);
    if (tmpl != NULL)
        snprintf(tmpl, n, "%s/.%s.XXXXXX", dir, base_of(path));
    free(dir);
    return tmpl;
}

int cli_out_check(const char *path, int force, cli_err *err)
{
    struct stat st;
    char *tmpl = NULL;
    char *dir = NULL;
    int fd, ok = 0;

    if (path == NULL || *path == '\0') {
        cli_err_set(err, "empty output path");
        return 0;
    }
    if (path[strlen(path) - 1] == '/') {
        cli_err_set(err, "%s: names a directory, not a file", path);
        return 0;
    }
    if (lstat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            cli_err_set(err, "%s is a directory", path);
            return 0;
        }
        if (!force) {
            cli_err_set(err, "%s exists; refusing to overwrite it (use --force)", path);
            return 0;
        }
    } else if (errno != ENOENT) {
        cli_err_set(err, "%s: %s", path, strerror(errno));
        return 0;
    }

    dir = dir_of(path);
    tmpl = temp_template(path);
    if (dir == NULL || tmpl == NULL) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    if (stat(dir, &st) != 0) {
        cli_err_set(err, "cannot write %s: directory %s: %s", path, dir, strerror(errno));
        goto done;
    }
    if (!S_ISDIR(st.st_mode)) {
        cli_err_set(err, "cannot write %s: %s is not a directory", path, dir);
        goto done;
    }
    /* Try it: access(2) says yes to root on a read-only file system. */
    fd = mkstemp(tmpl);
    if (fd < 0) {
        cli_err_set(err, "cannot write %s: cannot create files in %s: %s", path, dir,
                    strerror(errno));
        goto done;
    }
    close(fd);
    unlink(tmpl);
    ok = 1;
done:
    free(dir);
    free(tmpl);
    return ok;
}

static int fsync_dir(const char *path)
{
    char *dir = dir_of(path);
    int fd, rc = -1;

    if (dir == NULL)
        return -1;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        rc = fsync(fd);
        /* Some file systems cannot fsync a directory; the data is still there. */
        if (rc != 0 && (errno == EINVAL || errno == EBADF))
            rc = 0;
        close(fd);
    }
    free(dir);
    return rc;
}

int cli_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, int force,
                          cli_err *err)
{
    char *tmp = NULL;
    const unsigned char *p = data;
    size_t off = 0;
    mode_t mask;
    int fd = -1, ok = 0, placed = 0;

    tmp = temp_template(path);
    if (tmp == NULL) {
        cli_err_set(err, "out of memory");
        return 0;
    }
    /* mkstemp makes the file 0600, so nothing can read it before fchmod. */
    fd = mkstemp(tmp);
    if (fd < 0) {
        cli_err_set(err, "cannot create a temporary file for %s: %s", path, strerror(errno));
        free(tmp);
        return 0;
    }
    mask = umask(0);
    umask(mask);
    if (fchmod(fd, mode & ~mask & 07777) != 0) {
        cli_err_set(err, "cannot set the mode of %s: %s", tmp, strerror(errno));
        goto done;
    }
    while (off < len) {
        ssize_t w = write(fd, p + off, len - off);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            cli_err_set(err, "cannot write %s: %s", path, strerror(errno));
            goto done;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        cli_err_set(err, "cannot write %s: fsync: %s", path, strerror(errno));
        goto done;
    }
    if (close(fd) != 0) {
        fd = -1;
        cli_err_set(err, "cannot write %s: close: %s", path, strerror(errno));
        goto done;
    }
    fd = -1;

    if (force) {
        if (rename(tmp, path) != 0) {
            cli_err_set(err, "cannot write %s: rename: %s", path, strerror(errno));
            goto done;
        }
        placed = 1;
    } else {
        /* link(2) fails with EEXIST instead of replacing: no check-then-write race. */
        if (link(tmp, path) != 0) {
            if (errno == EEXIST) {
                cli_err_set(err, "%s exists; refusing to overwrite it (use --force)", path);
                goto done;
            }
            if (errno != EPERM && errno != ENOTSUP && errno != EOPNOTSUPP) {
                cli_err_set(err, "cannot write %s: %s", path, strerror(errno));
                goto done;
            }
            /* No hard links on this file system: check, then rename. */
            struct stat st;
            if (lstat(path, &st) == 0) {
                cli_err_set(err, "%s exists; refusing to overwrite it (use --force)", path);
                goto done;
            }
            if (rename(tmp, path) != 0) {
                cli_err_set(err, "cannot write %s: rename: %s", path, strerror(errno));
                goto done;
            }
            placed = 1;
        }
    }
    if (fsync_dir(path) != 0) {
        cli_err_set(err, "cannot write %s: fsync of its directory: %s", path, strerror(errno));
        /* The file is in place but may not survive a crash: report, keep it. */
        goto done;
    }
    ok = 1;
done:
    if (fd >= 0)
        close(fd);
    if (!placed)
        unlink(tmp);
    free(tmp);
    return ok;
}

int cli_write_replacing(const char *cmd, const char *path, const void *data, size_t len,
                        mode_t mode)
{
    struct stat old;
    int had = lstat(path, &old) == 0 && S_ISREG(old.st_mode);
    cli_err err;

    if (!cli_write_file_atomic(path, data, len, had ? (old.st_mode & 0600) : mode, 1, &err)) {
        cli_fail(cmd, "%s", err.msg);
        return 0;
    }
    if (!had)
        return 1;
    if (chown(path, old.st_uid, old.st_gid) != 0 || chmod(path, old.st_mode & 07777) != 0)
        cli_fail(cmd,
                 "warning: %s is written, but not with the owner, group and mode of the file "
                 "it replaced (%u:%u, %o): %s",
                 path, (unsigned)old.st_uid, (unsigned)old.st_gid, (unsigned)(old.st_mode & 07777),
                 strerror(errno));
    return 1;
}

int cli_same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    if (strcmp(a, b) == 0)
        return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

int cli_read_file(const char *path, size_t max, unsigned char **data, size_t *len, cli_err *err)
{
    FILE *f = NULL;
    unsigned char *buf = NULL;
    size_t n = 0, cap = 4096;
    int ok = 0;

    *data = NULL;
    *len = 0;
    f = fopen(path, "rb");
    if (f == NULL) {
        cli_err_set(err, "cannot read %s: %s", path, strerror(errno));
        return 0;
    }
    buf = malloc(cap + 1);
    if (buf == NULL) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    for (;;) {
        size_t r;

        if (n == cap) {
            unsigned char *nb;

            if (cap >= max) {
                cli_err_set(err, "%s is larger than %zu bytes", path, max);
                goto done;
            }
            cap *= 2;
            nb = realloc(buf, cap + 1);
            if (nb == NULL) {
                cli_err_set(err, "out of memory");
                goto done;
            }
            buf = nb;
        }
        r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                cli_err_set(err, "cannot read %s: %s", path, strerror(errno));
                goto done;
            }
            break;
        }
    }
    if (n > max) {
        cli_err_set(err, "%s is larger than %zu bytes", path, max);
        goto done;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    buf = NULL;
    ok = 1;
done:
    free(buf);
    fclose(f);
    return ok;
}

const char *cli_class_name(mks_obj_class c)
{
    switch (c) {
    case MKS_OBJ_PRIVATE_KEY:
        return "private-key";
    case MKS_OBJ_PUBLIC_KEY:
        return "public-key";
    case MKS_OBJ_CERTIFICATE:
        return "certificate";
    }
    return "object";
}

const char *cli_key_type_name(mks_key_type t)
{
    switch (t) {
    case MKS_KEY_RSA:
        return "rsa";
    case MKS_KEY_EC:
        return "ec";
    case MKS_KEY_NONE:
        break;
    }
    return NULL;
}

char *cli_hex(const unsigned char *p, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    char *s = malloc(len * 2 + 1);
    size_t i;

    if (s == NULL)
        return NULL;
    for (i = 0; i < len; i++) {
        s[2 * i] = digits[p[i] >> 4];
        s[2 * i + 1] = digits[p[i] & 0x0f];
    }
    s[2 * len] = '\0';
    return s;
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629), 0 when ill-formed. */
static size_t utf8_seq_len(const unsigned char *p)
{
    size_t n, i;
    unsigned min;
    unsigned long cp;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2, min = 0x80, cp = p[0] & 0x1f;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3, min = 0x800, cp = p[0] & 0x0f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4, min = 0x10000, cp = p[0] & 0x07;
    } else {
        return 0;
    }
    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0; /* also stops at the NUL */
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

void cli_json_str(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n;

    if (s == NULL) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (; *p != '\0'; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\b':
            fputs("\\b", f);
            break;
        case '\f':
            fputs("\\f", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                fprintf(f, "\\u%04x", *p);
            } else if ((n = utf8_seq_len(p)) == 0) {
                /* Token labels are bytes; JSON must be UTF-8. */
                fputs("\\ufffd", f);
            } else {
                fwrite(p, 1, n, f);
                p += n - 1;
            }
        }
    }
    fputc('"', f);
}

void cli_shell_quote(FILE *f, const char *s)
{
    static const char plain[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "0123456789_./:=@%+,-";

    if (*s != '\0' && s[strspn(s, plain)] == '\0') {
        fputs(s, f);
        return;
    }
    fputc('\'', f);
    for (; *s != '\0'; s++) {
        if (*s == '\'')
            fputs("'\\''", f);
        else
            fputc(*s, f);
    }
    fputc('\'', f);
}
