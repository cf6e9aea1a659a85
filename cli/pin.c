#include "pin.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

void cli_pin_init(cli_pin *st)
{
    memset(st, 0, sizeof(*st));
    st->interactive = isatty(STDIN_FILENO);
}

void cli_pin_wipe(cli_pin *st)
{
    OPENSSL_cleanse(st->pin, sizeof(st->pin));
    st->len = 0;
    st->have = 0;
}

static volatile sig_atomic_t caught_signal;

static void on_signal(int sig)
{
    caught_signal = sig;
}

/* Signals that end or stop a prompt; the terminal gets its echo back first. */
static const int prompt_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP};
#define NSIGNALS (sizeof(prompt_signals) / sizeof(prompt_signals[0]))

static void write_all(int fd, const char *s)
{
    size_t n = strlen(s);

    while (n > 0) {
        ssize_t w = write(fd, s, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/*
 * Reads one line from /dev/tty with echo off into out (NUL-terminated).
 * Returns 1 with a non-empty PIN, MKS_PIN_EMPTY for an empty line, 0
 * otherwise (no terminal, end of input, a signal, too long). out is wiped
 * unless 1 is returned.
 */
static int prompt_tty(const char *token_label, char *out, size_t outsize, size_t *outlen)
{
    struct termios saved, quiet;
    struct sigaction sa, old[NSIGNALS];
    char prompt[96];
    char c = 0;
    size_t n = 0, i;
    int fd, ok = 0, too_long = 0;

    fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    if (tcgetattr(fd, &saved) != 0) {
        close(fd);
        return 0;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: read() returns EINTR */
    sigemptyset(&sa.sa_mask);
    caught_signal = 0;
    for (i = 0; i < NSIGNALS; i++)
        sigaction(prompt_signals[i], &sa, &old[i]);

    quiet = saved;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    quiet.c_lflag |= ECHONL | ICANON;
    if (tcsetattr(fd, TCSAFLUSH, &quiet) != 0)
        goto restore;

    if (token_label != NULL && *token_label != '\0')
        snprintf(prompt, sizeof(prompt), "PIN for token '%.32s': ", token_label);
    else
        snprintf(prompt, sizeof(prompt), "Token PIN: ");
    write_all(fd, prompt);

    for (;;) {
        ssize_t r = read(fd, &c, 1);

        if (r < 0 && errno == EINTR && caught_signal == 0)
            continue;
        if (r <= 0)
            break; /* end of input, error or signal: no PIN */
        if (c == '\n' || c == '\r') {
            ok = n > 0 ? 1 : MKS_PIN_EMPTY;
            break;
        }
        if (n + 1 < outsize)
            out[n++] = c;
        else
            too_long = 1;
    }
    c = 0;
    tcsetattr(fd, TCSAFLUSH, &saved);

restore:
    for (i = 0; i < NSIGNALS; i++)
        sigaction(prompt_signals[i], &old[i], NULL);
    if (too_long) {
        write_all(fd, "PIN too long; not used\n");
        ok = 0;
    }
    close(fd);
    if (ok == 1) {
        out[n] = '\0';
        *outlen = n;
    } else {
        OPENSSL_cleanse(out, outsize);
    }
    if (caught_signal != 0)
        raise(caught_signal); /* the terminal is sane again; now act on it */
    return ok;
}

int cli_pin_cb(char *buf, size_t bufsize, size_t *len, const char *token_label, void *arg)
{
    cli_pin *st = arg;
    int got;

    st->asked = 1;
    if (!st->have || (token_label != NULL && strcmp(st->token, token_label) != 0)) {
        cli_pin_wipe(st);
        got = st->interactive ? prompt_tty(token_label, st->pin, sizeof(st->pin), &st->len) : 0;
        if (got != 1) {
            st->declined = 1;
            return got;
        }
        st->have = 1;
        snprintf(st->token, sizeof(st->token), "%s", token_label != NULL ? token_label : "");
    }
    if (st->len + 1 > bufsize)
        return 0;
    memcpy(buf, st->pin, st->len);
    buf[st->len] = '\0';
    *len = st->len;
    return 1;
}

/* ui_data is the mks_pin_ui that answers: the PIN prompt or a TPM key's password. */
static int ui_read(UI *ui, UI_STRING *uis)
{
    char buf[CLI_PIN_MAX];
    size_t len = 0;
    const mks_pin_ui *pu;
    int ok = 0;

    switch (UI_get_string_type(uis)) {
    case UIT_PROMPT:
    case UIT_VERIFY:
        pu = UI_get0_user_data(ui);
        if (pu != NULL && pu->cb(buf, sizeof(buf), &len, NULL, pu->arg) == 1)
            ok = UI_set_result_ex(ui, uis, buf, (int)len) >= 0;
        OPENSSL_cleanse(buf, sizeof(buf));
        return ok;
    default:
        return 1;
    }
}

UI_METHOD *cli_pin_ui_method_new(void)
{
    UI_METHOD *m = UI_create_method("mtls-keystore PIN");

    if (m != NULL && UI_method_set_reader(m, ui_read) != 0) {
        UI_destroy_method(m);
        return NULL;
    }
    return m;
}
