/*
 * A swtpm for one test program: started on free loopback ports with its own
 * state directory and --flags not-need-init,startup-clear, stopped by PID.
 * Included by the unit tests that need a TPM (not a test itself).
 */
#ifndef MTLSKS_SWTPM_FIXTURE_H
#define MTLSKS_SWTPM_FIXTURE_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct swtpm_fixture {
    char dir[64];  /* state directory, removed by swtpm_stop */
    char tcti[96]; /* "swtpm:host=127.0.0.1,port=N" */
    pid_t pid;
} swtpm_fixture;

static int swtpm_port_free(int port)
{
    struct sockaddr_in a = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Starts swtpm; its state directory is made from dir_template (ending in
 * XXXXXX). Returns 0 once it listens, -1 otherwise. */
static int swtpm_start(swtpm_fixture *t, const char *dir_template)
{
    char server[96], ctrl[96], tpmstate[96];
    int port = 0, i;

    snprintf(t->dir, sizeof(t->dir), "%s", dir_template);
    if (mkdtemp(t->dir) == NULL)
        return -1;
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (i = 0; i < 100 && port == 0; i++) {
        int p = 20000 + rand() % 40000;
        if (swtpm_port_free(p) && swtpm_port_free(p + 1))
            port = p;
    }
    if (port == 0)
        return -1;
    snprintf(server, sizeof(server), "type=tcp,port=%d,bindaddr=127.0.0.1", port);
    snprintf(ctrl, sizeof(ctrl), "type=tcp,port=%d,bindaddr=127.0.0.1", port + 1);
    snprintf(tpmstate, sizeof(tpmstate), "dir=%s", t->dir);
    snprintf(t->tcti, sizeof(t->tcti), "swtpm:host=127.0.0.1,port=%d", port);
    t->pid = fork();
    if (t->pid == 0) {
        execlp("swtpm", "swtpm", "socket", "--tpm2", "--tpmstate", tpmstate, "--server", server,
               "--ctrl", ctrl, "--flags", "not-need-init,startup-clear", (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 100; i++) {
        if (!swtpm_port_free(port))
            return 0;
        usleep(50000);
    }
    return -1;
}

/* Stops swtpm by its PID and removes its state directory. */
static int swtpm_stop(swtpm_fixture *t)
{
    char cmd[128];

    if (t->pid > 0) {
        kill(t->pid, SIGTERM);
        waitpid(t->pid, NULL, 0);
        t->pid = 0;
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
