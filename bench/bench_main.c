/*
 * mtlsks-bench COMMAND [OPTIONS]: one benchmark row per run, one JSON line
 * on stdout (ci/bench runs the rows and prints the table).
 */
#include "bench.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "Usage: mtlsks-bench COMMAND [OPTIONS]\n"
    "\n"
    "Commands (one row each; one JSON object on stdout):\n"
    "  sign        signatures per second: --impl raw (a session-object copy of the key) |\n"
    "              raw-token | keystore | provider | p11prov (pkcs11-provider) | engine |\n"
    "              soft | tpm2-openssl, or several separated by commas: they run in\n"
    "              one process taking turns (--slice), one JSON line each\n"
    "  tls         mutual-TLS 1.3 handshakes per second over memory BIOs: --impl provider |\n"
    "              p11prov | engine | soft | tpm2-openssl (--key server, --key2 client)\n"
    "  startup     provider/engine load, key load, first signature; VmRSS\n"
    "  tpm-keygen  make a TPM key with the keystore (TSS2 PRIVATE KEY file): --tcti --out\n"
    "  pcap-count FILE   TPM commands in a pcapng file written by the pcap TCTI\n"
    "  tls-load    clients against a running server (HAProxy): --connect HOST:PORT, --cert,\n"
    "              --key, --ca; --threads clients at once, --count requests each, a new\n"
    "              TLS 1.3 connection per request (HTTP/1.0 GET, 200 and --expect required)\n"
    "  tls-async   mutual-TLS handshakes on one thread, --inflight at once over memory\n"
    "              BIOs, the server's key in a token made slow by --latency-ms (the shim,\n"
    "              --config naming it as the module, --shim): --impl async (SSL_MODE_ASYNC\n"
    "              on the server) or sync, or both (async,sync: taking turns)\n"
    "\n"
    "Options:\n"
    "  --impl NAME        the path to the key (see above)\n"
    "  --alg ALG          ec (ECDSA P-256), rsa-pkcs1, rsa-pss (RSA-2048); default ec\n"
    "  --key SPEC         raw, engine: pkcs11: URI; keystore, provider, p11prov, tpm2-openssl:\n"
    "                     pkcs11: URI or key file; soft: key file (default, or with a URI:\n"
    "                     a new key)\n"
    "  --key2 SPEC        tls: the client's key\n"
    "  --module PATH      PKCS#11 module (raw, keystore, engine)\n"
    "  --pin-file PATH    user PIN, first line (raw, keystore, engine)\n"
    "  --config FILE      openssl.cnf loading the provider (provider; p11prov: pkcs11-provider;\n"
    "                     with another impl: loaded all the same, to see what it costs that\n"
    "                     impl)\n"
    "  --shim PATH        count token calls through mtlsks-p11shim.so (it must be the module)\n"
    "  --tcti CONF        TPM TCTI (keystore, tpm-keygen)\n"
    "  --pass-file PATH   TPM key password, first line (keystore, provider, tls; tpm-keygen:\n"
    "                     the new key's)\n"
    "  --out FILE         tpm-keygen output\n"
    "  --threads N        threads (default 1)\n"
    "  --warmup S         unmeasured seconds first (default 0.5)\n"
    "  --seconds S        measured seconds (default 2)\n"
    "  --slice S          several paths: seconds per turn (default 0.02)\n"
    "  --count N          N operations on one thread instead of a duration (for counting)\n"
    "  --init-only        sign: time only the EVP context set-up, no signature (diagnostic)\n"
    "  --note TEXT        copied into the JSON\n"
    "  --connect H:P      tls-load: the server\n"
    "  --cert FILE        tls-load: the client's certificate (--key: its key file)\n"
    "  --ca FILE          tls-load: the CA that issued the server's certificate\n"
    "  --expect TEXT      tls-load: what every answer must contain\n"
    "  --inflight N       tls-async: handshakes in flight at once (default 64)\n"
    "  --latency-ms MS    tls-async: what the token adds to each C_Sign (default 0)\n";

static int usage(int rc)
{
    fputs(usage_text, rc == 0 ? stdout : stderr);
    return rc;
}

static int parse_alg(const char *s, bench_opts *o)
{
    if (strcmp(s, "ec") == 0)
        o->alg = BENCH_EC;
    else if (strcmp(s, "rsa-pkcs1") == 0)
        o->alg = BENCH_RSA_PKCS1;
    else if (strcmp(s, "rsa-pss") == 0 || strcmp(s, "rsa") == 0)
        o->alg = BENCH_RSA_PSS;
    else
        return 0;
    o->alg_name = s;
    return 1;
}

/* The options after COMMAND into o; 0 when they end the program (*rc). */
static int parse_options(int argc, char **argv, bench_opts *o, int *rc)
{
    static const struct option longopts[] = {
        {"impl", required_argument, NULL, 'i'},     {"alg", required_argument, NULL, 'a'},
        {"key", required_argument, NULL, 'k'},      {"key2", required_argument, NULL, 'K'},
        {"module", required_argument, NULL, 'm'},   {"pin-file", required_argument, NULL, 'p'},
        {"config", required_argument, NULL, 'c'},   {"shim", required_argument, NULL, 'S'},
        {"tcti", required_argument, NULL, 'T'},     {"pass-file", required_argument, NULL, 'P'},
        {"out", required_argument, NULL, 'o'},      {"threads", required_argument, NULL, 'n'},
        {"warmup", required_argument, NULL, 'w'},   {"seconds", required_argument, NULL, 's'},
        {"count", required_argument, NULL, 'N'},    {"note", required_argument, NULL, 'x'},
        {"init-only", no_argument, NULL, 'I'},      {"slice", required_argument, NULL, 'L'},
        {"connect", required_argument, NULL, 'C'},  {"cert", required_argument, NULL, 'e'},
        {"ca", required_argument, NULL, 'A'},       {"expect", required_argument, NULL, 'E'},
        {"inflight", required_argument, NULL, 'F'}, {"latency-ms", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    int c;

    optind = 2;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'i':
            o->impl = optarg;
            break;
        case 'a':
            if (!parse_alg(optarg, o)) {
                fprintf(stderr, "mtlsks-bench: unknown --alg '%s'\n", optarg);
                *rc = 2;
                return 0;
            }
            break;
        case 'k':
            o->key = optarg;
            break;
        case 'K':
            o->key2 = optarg;
            break;
        case 'm':
            o->module = optarg;
            break;
        case 'p':
            o->pin_file = optarg;
            break;
        case 'c':
            o->config = optarg;
            break;
        case 'S':
            o->shim = optarg;
            break;
        case 'T':
            o->tcti = optarg;
            break;
        case 'P':
            o->pass_file = optarg;
            break;
        case 'o':
            o->out = optarg;
            break;
        case 'n':
            o->threads = atoi(optarg);
            break;
        case 'w':
            o->warmup = atof(optarg);
            break;
        case 's':
            o->seconds = atof(optarg);
            break;
        case 'N':
            o->count = atol(optarg);
            break;
        case 'x':
            o->note = optarg;
            break;
        case 'I':
            o->init_only = 1;
            break;
        case 'L':
            o->slice = atof(optarg);
            break;
        case 'C':
            o->connect = optarg;
            break;
        case 'e':
            o->cert = optarg;
            break;
        case 'A':
            o->ca = optarg;
            break;
        case 'E':
            o->expect = optarg;
            break;
        case 'F':
            o->inflight = atoi(optarg);
            break;
        case 'l':
            o->latency_ms = atof(optarg);
            break;
        case 'h':
            *rc = usage(0);
            return 0;
        default:
            *rc = usage(2);
            return 0;
        }
    }
    return 1;
}

int main(int argc, char **argv)
{
    bench_opts o = {0};
    const char *arg = NULL;
    int ok, rc;

    o.alg = BENCH_EC;
    o.alg_name = "ec";
    o.threads = 1;
    o.warmup = 0.5;
    o.seconds = 2;
    o.slice = 0.02;
    o.inflight = 64;
    if (argc < 2)
        return usage(2);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)
        return usage(0);
    o.cmd = argv[1];
    if (!parse_options(argc, argv, &o, &rc))
        return rc;
    if (optind < argc)
        arg = argv[optind];
    if (o.threads < 1 || o.threads > BENCH_MAX_THREADS || o.seconds <= 0 || o.warmup < 0 ||
        o.slice <= 0 || o.inflight < 1 || o.latency_ms < 0) {
        fprintf(stderr,
                "mtlsks-bench: --threads 1..%d, --seconds > 0, --warmup >= 0, --slice > 0, "
                "--inflight >= 1, --latency-ms >= 0\n",
                BENCH_MAX_THREADS);
        return 2;
    }
    if (o.impl == NULL && (strcmp(o.cmd, "sign") == 0 || strcmp(o.cmd, "tls") == 0 ||
                           strcmp(o.cmd, "startup") == 0 || strcmp(o.cmd, "tls-async") == 0)) {
        fprintf(stderr, "mtlsks-bench: %s needs --impl\n", o.cmd);
        return 2;
    }
    if (strcmp(o.cmd, "sign") == 0)
        ok = cmd_sign(&o);
    else if (strcmp(o.cmd, "tls") == 0)
        ok = cmd_tls(&o);
    else if (strcmp(o.cmd, "startup") == 0)
        ok = cmd_startup(&o);
    else if (strcmp(o.cmd, "tpm-keygen") == 0)
        ok = cmd_tpm_keygen(&o);
    else if (strcmp(o.cmd, "tls-load") == 0)
        ok = cmd_tls_load(&o);
    else if (strcmp(o.cmd, "tls-async") == 0)
        ok = cmd_tls_async(&o);
    else if (strcmp(o.cmd, "pcap-count") == 0 && arg != NULL)
        ok = cmd_pcap_count(&o, arg);
    else
        return usage(2);
    return ok ? 0 : 1;
}
