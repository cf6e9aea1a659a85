/*
 * Counting what an operation costs the hardware.
 *
 * PKCS#11: the rows load tests/p11shim's mtlsks-p11shim.so as their module
 * (through openssl.cnf or the engine's MODULE_PATH); once the key is loaded
 * the module is in the process, and dlopen(RTLD_NOLOAD) finds it to read
 * its counters: reset after the warm-up, read after the measured operations.
 *
 * TPM: tpm2-tss's pcap TCTI ("pcap:swtpm:...", TCTI_PCAP_FILE) writes every
 * command and response as a packet of a pcapng file. pcap-count reads one
 * and counts the commands by code; ci/bench runs a row twice with different
 * operation counts and divides the difference, so set-up commands drop out.
 */
#include "bench.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p11shim.h"

static mtlsks_shim_counts_reset_fn *shim_reset_fn;
static mtlsks_shim_counts_list_fn *shim_list_fn;
static mtlsks_shim_set_faults_fn *shim_faults_fn;
static mtlsks_shim_peak_fn *shim_peak_fn;

int shim_attach(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);

    if (h != NULL) {
        shim_reset_fn = (mtlsks_shim_counts_reset_fn *)dlsym(h, "mtlsks_shim_counts_reset");
        shim_list_fn = (mtlsks_shim_counts_list_fn *)dlsym(h, "mtlsks_shim_counts_list");
        shim_faults_fn = (mtlsks_shim_set_faults_fn *)dlsym(h, "mtlsks_shim_set_faults");
        shim_peak_fn = (mtlsks_shim_peak_fn *)dlsym(h, "mtlsks_shim_peak");
    }
    if (shim_reset_fn == NULL || shim_list_fn == NULL) {
        fprintf(stderr, "mtlsks-bench: %s is not loaded in this process: is it the module?\n",
                path);
        return 0;
    }
    return 1;
}

void shim_reset(void)
{
    if (shim_reset_fn != NULL)
        shim_reset_fn();
}

int shim_set_faults(const char *spec)
{
    return shim_faults_fn != NULL && shim_faults_fn(spec) == 0;
}

unsigned long shim_peak(const char *name)
{
    return shim_peak_fn != NULL ? shim_peak_fn(name) : 0;
}

void shim_json_per_op(const char *key, unsigned long ops)
{
    char list[2048], out[4096], *p, *save = NULL;
    size_t len = 0;

    if (shim_list_fn == NULL || ops == 0)
        return;
    shim_list_fn(list, sizeof(list));
    len += (size_t)snprintf(out + len, sizeof(out) - len, "{");
    for (p = strtok_r(list, " ", &save); p != NULL && len < sizeof(out) - 64;
         p = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(p, '=');
        if (eq == NULL)
            continue;
        *eq = '\0';
        len += (size_t)snprintf(out + len, sizeof(out) - len, "%s\"%s\":%.4g", len > 1 ? "," : "",
                                p, (double)strtoul(eq + 1, NULL, 10) / ops);
    }
    snprintf(out + len, sizeof(out) - len, "}");
    json_raw(key, out);
}

/* ---- pcapng ------------------------------------------------------------------- */

static const struct {
    unsigned cc;
    const char *name;
} tpm_cc[] = {
    {0x120, "TPM2_EvictControl"},
    {0x131, "TPM2_CreatePrimary"},
    {0x13e, "TPM2_SequenceComplete"},
    {0x153, "TPM2_Create"},
    {0x154, "TPM2_ECDH_ZGen"},
    {0x157, "TPM2_Load"},
    {0x159, "TPM2_RSA_Decrypt"},
    {0x15c, "TPM2_SequenceUpdate"},
    {0x15d, "TPM2_Sign"},
    {0x161, "TPM2_ContextLoad"},
    {0x162, "TPM2_ContextSave"},
    {0x163, "TPM2_ECDH_KeyGen"},
    {0x165, "TPM2_FlushContext"},
    {0x167, "TPM2_LoadExternal"},
    {0x173, "TPM2_ReadPublic"},
    {0x174, "TPM2_RSA_Encrypt"},
    {0x176, "TPM2_StartAuthSession"},
    {0x177, "TPM2_VerifySignature"},
    {0x178, "TPM2_ECC_Parameters"},
    {0x17a, "TPM2_GetCapability"},
    {0x17b, "TPM2_GetRandom"},
    {0x17c, "TPM2_GetTestResult"},
    {0x17d, "TPM2_Hash"},
    {0x181, "TPM2_ReadClock"},
    {0x186, "TPM2_HashSequenceStart"},
    {0x18a, "TPM2_TestParms"},
    {0x191, "TPM2_CreateLoaded"},
};

#define TPM_PORT 2321 /* what the pcap TCTI writes as the TPM's TCP port */

static unsigned be16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static unsigned long le32(const unsigned char *p)
{
    return (unsigned long)p[0] | (unsigned long)p[1] << 8 | (unsigned long)p[2] << 16 |
           (unsigned long)p[3] << 24;
}

int cmd_pcap_count(const bench_opts *o, const char *file)
{
    FILE *f = fopen(file, "rb");
    unsigned char *buf = NULL;
    long size, off = 0;
    unsigned long counts[sizeof(tpm_cc) / sizeof(tpm_cc[0])] = {0}, total = 0;
    unsigned other_cc[16], nother = 0;
    unsigned long other[16] = {0};
    char by[4096];
    size_t i, len = 0;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0 || (buf = malloc((size_t)size + 1)) == NULL ||
        fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "mtlsks-bench: cannot read %s\n", file);
        if (f != NULL)
            fclose(f);
        free(buf);
        return 0;
    }
    fclose(f);
    /* Blocks: type, total length, body, total length. Enhanced Packet
     * Blocks (type 6) hold one IPv4 packet each: IP, TCP, TPM bytes. */
    while (off + 12 <= size) {
        unsigned long type = le32(buf + off), blen = le32(buf + off + 4);
        if (blen < 12 || off + (long)blen > size)
            break;
        if (type == 6 && blen >= 32) {
            const unsigned char *pkt = buf + off + 28;
            unsigned long caplen = le32(buf + off + 20);
            size_t ihl, thl;
            if (caplen + 28 <= blen && caplen >= 40 && (pkt[0] >> 4) == 4 && pkt[9] == 6) {
                ihl = (size_t)(pkt[0] & 0xf) * 4;
                thl = (size_t)(pkt[ihl + 12] >> 4) * 4;
                if (ihl + thl + 10 <= caplen && be16(pkt + ihl + 2) == TPM_PORT) {
                    const unsigned char *cmd = pkt + ihl + thl;
                    unsigned cc = (unsigned)(be16(cmd + 6) << 16 | be16(cmd + 8));
                    total++;
                    for (i = 0; i < sizeof(tpm_cc) / sizeof(tpm_cc[0]); i++)
                        if (tpm_cc[i].cc == cc)
                            break;
                    if (i < sizeof(tpm_cc) / sizeof(tpm_cc[0])) {
                        counts[i]++;
                    } else {
                        unsigned j;
                        for (j = 0; j < nother && other_cc[j] != cc; j++)
                            ;
                        if (j == nother && nother < 16)
                            other_cc[nother++] = cc;
                        if (j < nother)
                            other[j]++;
                    }
                }
            }
        }
        off += (long)blen;
    }
    free(buf);
    len += (size_t)snprintf(by + len, sizeof(by) - len, "{");
    for (i = 0; i < sizeof(tpm_cc) / sizeof(tpm_cc[0]); i++)
        if (counts[i] > 0)
            len += (size_t)snprintf(by + len, sizeof(by) - len, "%s\"%s\":%lu", len > 1 ? "," : "",
                                    tpm_cc[i].name, counts[i]);
    for (i = 0; i < nother; i++)
        len += (size_t)snprintf(by + len, sizeof(by) - len, "%s\"TPM_CC_0x%x\":%lu",
                                len > 1 ? "," : "", other_cc[i], other[i]);
    snprintf(by + len, sizeof(by) - len, "}");
    json_begin(o, "pcap");
    json_str("file", file);
    json_int("commands", (long)total);
    json_raw("by_command", by);
    json_end();
    return 1;
}
