/*
 * One status line on the terminal while the CA works: what it is doing and
 * for how long ("the CA is validating DNS:web.example (http-01) 1.4 s").
 * Redrawn in place; cleared before anything else is printed. Nothing at all
 * when standard error is not a terminal (logs, timers, pipes).
 */
#include "acme.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct {
    int tty; /* -1: not asked yet */
    int shown;
    char what[200];
    struct timespec since;
} line = {-1, 0, "", {0, 0}};

static int on_tty(void)
{
    if (line.tty < 0)
        line.tty = isatty(STDERR_FILENO);
    return line.tty;
}

static double elapsed(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - line.since.tv_sec) +
           (double)(now.tv_nsec - line.since.tv_nsec) / 1e9;
}

void acme_status(const char *fmt, ...)
{
    va_list ap;

    if (!on_tty())
        return;
    va_start(ap, fmt);
    vsnprintf(line.what, sizeof(line.what), fmt, ap);
    va_end(ap);
    clock_gettime(CLOCK_MONOTONIC, &line.since);
    acme_status_tick();
}

void acme_status_tick(void)
{
    if (!on_tty() || line.what[0] == '\0')
        return;
    /* \r and erase-line: the line is redrawn where it is. */
    fprintf(stderr, "\r\033[K%s: %s %.1f s", CLI_PROGRAM, line.what, elapsed());
    fflush(stderr);
    line.shown = 1;
}

void acme_status_clear(void)
{
    if (!line.shown)
        return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    line.shown = 0;
    line.what[0] = '\0';
}

void acme_sleep_ms(long ms)
{
    while (ms > 0) {
        long step = ms > 100 ? 100 : ms;
        struct timespec ts = {step / 1000, (step % 1000) * 1000000L};

        nanosleep(&ts, NULL);
        ms -= step;
        acme_status_tick();
    }
}
