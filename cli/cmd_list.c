/*
 * mtls-keystore list [--json]: the slots --slot counts, their tokens' keys
 * and certificates with the URIs that name them, and apart from those the
 * slots that cannot hold keys.
 *
 * mtls-keystore list --tpm [--json]: the TPM's persistent keys (list_tpm.c).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/x509.h>

#include "json.h"
#include "list.h"

static void list_usage(FILE *f)
{
    fprintf(f,
            "Usage: %s list [--json] [--public]\n"
            "       %s list --tpm [--json]\n"
            "\n"
            "Shows every slot of the PKCS#11 module. Slots whose token can hold keys are\n"
            "numbered with the index that 'enroll --slot' takes; write-protected,\n"
            "uninitialised and empty slots are shown apart, without a number. For each\n"
            "token: its keys and certificates with type, size, label, id and URI.\n"
            "Private keys are shown when a PIN is available (--pin-source, the config's\n"
            "pkcs11-pin-source, or a prompt on the terminal).\n"
            "\n"
            "  --public  public objects only (public keys and certificates, which carry\n"
            "            the keys' labels): never logs in to a token, never reads a PIN;\n"
            "            what shell completion uses\n"
            "\n"
            "With --tpm: the TPM's persistent keys (reached through --tcti or the config's\n"
            "tpm2-tcti), each with the tpmkey:handle= URI that names it. Keys in TPM key\n"
            "files (enroll --tpm without --persist) are not listed: the file is the key.\n"
            "\n"
            "  --tpm     list the TPM's persistent keys instead of the PKCS#11 module's slots\n"
            "  --json    one JSON object: {\"module\", \"slots\": [...], \"unusable_slots\": "
            "[...]};\n"
            "            with --tpm {\"tcti\", \"persistent_keys\": [{\"handle\", \"uri\",\n"
            "            \"key_type\", \"curve\", \"bits\"}]}\n"
            "\n"
            "Global options (--config, --module, --pin-source, --tcti) are accepted here too.\n",
            CLI_PROGRAM, CLI_PROGRAM);
}

static const char *unusable_reason(const mks_slot_info *si)
{
    if (!si->token_present)
        return "no token";
    if (!si->token_initialized)
        return "token not initialized";
    if (si->write_protected)
        return "write-protected token";
    return "cannot hold keys";
}

/* Subject (RFC 2253) and notAfter (ISO 8601) of a certificate; malloc'd or NULL. */
static void cert_summary(const mks_object *o, char **subject, char **not_after)
{
    const unsigned char *p = o->der;
    X509 *x = NULL;
    BIO *bio = NULL;
    struct tm tm;
    char *data;
    long n;

    *subject = NULL;
    *not_after = NULL;
    if (o->der == NULL || (x = d2i_X509(NULL, &p, (long)o->der_len)) == NULL)
        return;
    bio = BIO_new(BIO_s_mem());
    if (bio != NULL && X509_NAME_print_ex(bio, X509_get_subject_name(x), 0,
                                          XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        n = BIO_get_mem_data(bio, &data);
        *subject = strndup(data, (size_t)n);
    }
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm)) {
        *not_after = malloc(24);
        if (*not_after != NULL)
            strftime(*not_after, 24, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    BIO_free(bio);
    X509_free(x);
}

static int by_index(const void *a, const void *b)
{
    const mks_slot_info *x = *(const mks_slot_info *const *)a;
    const mks_slot_info *y = *(const mks_slot_info *const *)b;

    return (x->index > y->index) - (x->index < y->index);
}

/* Objects grouped by key: label, then id, then private key, public key, certificate. */
static int by_label(const void *a, const void *b)
{
    const mks_object *x = a, *y = b;
    size_t n = x->id_len < y->id_len ? x->id_len : y->id_len;
    int c = strcmp(x->label != NULL ? x->label : "", y->label != NULL ? y->label : "");

    if (c == 0 && n > 0)
        c = memcmp(x->id, y->id, n);
    if (c == 0)
        c = (x->id_len > y->id_len) - (x->id_len < y->id_len);
    if (c == 0)
        c = ((int)x->cls > (int)y->cls) - ((int)x->cls < (int)y->cls);
    return c;
}

typedef struct token_listing {
    mks_object *objs;
    size_t n;
    mks_rv rv;
    char *error;        /* when rv != MKS_OK */
    int private_hidden; /* login needed and no PIN was at hand */
} token_listing;

/* public_only: no private keys, so mks_objects_find never logs in. */
static void list_token(cli_session *s, const mks_slot_info *si, int public_only, token_listing *tl)
{
    unsigned classes = public_only ? MKS_OBJ_PUBLIC_KEY | MKS_OBJ_CERTIFICATE : MKS_OBJ_ANY;

    memset(tl, 0, sizeof(*tl));
    if (si->token_uri == NULL) {
        tl->rv = MKS_ERR_GENERAL;
        tl->error = strdup("the module reports no URI for this token");
        return;
    }
    tl->rv = mks_objects_find(s->ks, si->token_uri, classes, public_only ? NULL : &s->pin_ui,
                              &tl->objs, &tl->n);
    if (tl->rv != MKS_OK) {
        const char *why = mks_last_error();

        tl->error = strdup(why != NULL && *why != '\0' ? why : mks_rv_name(tl->rv));
        tl->objs = NULL;
        tl->n = 0;
        return;
    }
    if (tl->n > 1)
        qsort(tl->objs, tl->n, sizeof(*tl->objs), by_label);
    tl->private_hidden =
        public_only || (si->login_required && !cli_session_has_pin_source(s) &&
                        !(s->pin.have && strcmp(s->pin.token, si->token_label) == 0));
}

static void token_listing_clear(token_listing *tl)
{
    mks_objects_free(tl->objs, tl->n);
    free(tl->error);
    memset(tl, 0, sizeof(*tl));
}

/* ------------------------------------------------------------------------ */
/* Text                                                                      */

static void print_object_text(const mks_object *o)
{
    char *id = cli_hex(o->id, o->id_len);
    char type[32] = "";
    const char *kt = cli_key_type_name(o->key_type);

    if (kt != NULL && o->curve[0] != '\0')
        snprintf(type, sizeof(type), "%s %s", kt, o->curve);
    else if (kt != NULL && o->bits > 0)
        snprintf(type, sizeof(type), "%s %d", kt, o->bits);
    else if (kt != NULL)
        snprintf(type, sizeof(type), "%s", kt);
    printf("  %-12s %-10s label '%s'  id %s\n", cli_class_name(o->cls), type,
           o->label != NULL ? o->label : "", id != NULL && *id != '\0' ? id : "(none)");
    if (o->cls == MKS_OBJ_CERTIFICATE) {
        char *subject, *not_after;

        cert_summary(o, &subject, &not_after);
        if (subject != NULL || not_after != NULL)
            printf("  %-12s subject %s, expires %s\n", "", subject != NULL ? subject : "?",
                   not_after != NULL ? not_after : "?");
        free(subject);
        free(not_after);
    }
    if (o->cls == MKS_OBJ_PRIVATE_KEY && (o->sensitive == 0 || o->extractable == 1))
        printf("  %-12s warning: %s%s%s\n", "", o->sensitive == 0 ? "not sensitive" : "",
               o->sensitive == 0 && o->extractable == 1 ? ", " : "",
               o->extractable == 1 ? "extractable" : "");
    printf("  %-12s %s\n", "", o->uri != NULL ? o->uri : "(no URI)");
    free(id);
}

/* "Slot 0: SoftHSM slot ID 0x4313a40f"; the raw ID only when the description lacks it. */
static void print_slot_name(const mks_slot_info *si)
{
    char hexid[32];

    snprintf(hexid, sizeof(hexid), "0x%lx", si->slot_id);
    printf("\nSlot %d: %s", si->index, si->slot_description);
    if (strstr(si->slot_description, hexid) == NULL)
        printf(" (slot ID %s)", hexid);
    printf("\n");
}

static void print_slot_head(const mks_slot_info *si)
{
    printf("  token  '%s'  %s / %s / serial %s\n", si->token_label, si->token_manufacturer,
           si->token_model, si->token_serial);
}

static int list_text(cli_session *s, mks_slot_info **sorted, size_t count, int public_only)
{
    size_t i, j, nunusable = 0;
    int failed = 0;

    printf("Module: %s\n", cli_session_module(s));
    for (i = 0; i < count; i++) {
        const mks_slot_info *si = sorted[i];
        token_listing tl;

        if (si->index < 0) {
            nunusable++;
            continue;
        }
        print_slot_name(si);
        print_slot_head(si);
        printf("  uri    %s\n", si->token_uri != NULL ? si->token_uri : "(none)");
        list_token(s, si, public_only, &tl);
        if (tl.rv != MKS_OK) {
            cli_fail(CMD, "cannot list the objects of token '%s': %s", si->token_label,
                     tl.error != NULL ? tl.error : mks_rv_name(tl.rv));
            failed = 1;
        } else if (tl.n == 0) {
            printf("  (no keys or certificates%s)\n", tl.private_hidden ? " in public view" : "");
        } else {
            for (j = 0; j < tl.n; j++)
                print_object_text(&tl.objs[j]);
        }
        if (tl.rv == MKS_OK && tl.private_hidden && !public_only)
            printf("  log in to see private keys (--pin-source)\n");
        token_listing_clear(&tl);
    }
    if (count == nunusable)
        printf("\nNo slot whose token can hold keys.\n");
    if (nunusable > 0) {
        printf("\nSlots that cannot hold keys (not counted by --slot):\n");
        for (i = 0; i < count; i++) {
            const mks_slot_info *si = sorted[i];

            if (si->index >= 0)
                continue;
            printf("  slot ID 0x%lx: %s: %s", si->slot_id, si->slot_description,
                   unusable_reason(si));
            if (si->token_present && si->token_initialized)
                printf(" '%s'", si->token_label);
            printf("\n");
        }
    }
    return failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */

static void json_object(cli_json *j, const mks_object *o)
{
    char *id = cli_hex(o->id, o->id_len);

    cli_json_obj_begin(j, NULL);
    cli_json_string(j, "class", cli_class_name(o->cls));
    cli_json_key_type(j, cli_key_type_name(o->key_type), o->curve, o->bits);
    cli_json_string(j, "label", o->label != NULL ? o->label : "");
    cli_json_string(j, "id", id != NULL ? id : "");
    cli_json_string(j, "uri", o->uri);
    if (o->cls == MKS_OBJ_PRIVATE_KEY) {
        cli_json_bool(j, "sensitive", o->sensitive);
        cli_json_bool(j, "extractable", o->extractable);
    }
    if (o->cls == MKS_OBJ_CERTIFICATE) {
        char *subject, *not_after;

        cert_summary(o, &subject, &not_after);
        cli_json_string(j, "subject", subject);
        cli_json_string(j, "not_after", not_after);
        free(subject);
        free(not_after);
    }
    cli_json_obj_end(j);
    free(id);
}

/* The members every slot has: its ID, description, module and token. */
static void json_slot_common(cli_json *j, const mks_slot_info *si)
{
    cli_json_uint(j, "slot_id", si->slot_id);
    cli_json_string(j, "description", si->slot_description);
    cli_json_string(j, "module", si->module);
    if (!si->token_present) {
        cli_json_null(j, "token");
        return;
    }
    cli_json_obj_begin(j, "token");
    cli_json_string(j, "label", si->token_label);
    cli_json_string(j, "manufacturer", si->token_manufacturer);
    cli_json_string(j, "model", si->token_model);
    cli_json_string(j, "serial", si->token_serial);
    cli_json_string(j, "uri", si->token_uri);
    cli_json_obj_end(j);
}

/* A slot that can hold keys, with its objects; 0 when they cannot be listed. */
static int json_usable_slot(cli_json *j, cli_session *s, const mks_slot_info *si, int public_only)
{
    token_listing tl;
    size_t i;
    int ok = 1;

    list_token(s, si, public_only, &tl);
    cli_json_obj_begin(j, NULL);
    cli_json_int(j, "index", si->index);
    json_slot_common(j, si);
    cli_json_bool(j, "login_required", si->login_required);
    cli_json_bool(j, "private_keys_listed", tl.rv == MKS_OK && !tl.private_hidden);
    cli_json_arr_begin(j, "objects");
    for (i = 0; i < tl.n; i++)
        json_object(j, &tl.objs[i]);
    cli_json_arr_end(j);
    if (tl.rv != MKS_OK) {
        cli_json_string(j, "error", tl.error != NULL ? tl.error : mks_rv_name(tl.rv));
        cli_fail(CMD, "cannot list the objects of token '%s': %s", si->token_label,
                 tl.error != NULL ? tl.error : mks_rv_name(tl.rv));
        ok = 0;
    }
    cli_json_obj_end(j);
    token_listing_clear(&tl);
    return ok;
}

static int list_json(cli_session *s, mks_slot_info **sorted, size_t count, int public_only)
{
    size_t i;
    int failed = 0;
    cli_json j;

    cli_json_init(&j, stdout);
    cli_json_obj_begin(&j, NULL);
    cli_json_string(&j, "module", cli_session_module(s));
    cli_json_arr_begin(&j, "slots");
    for (i = 0; i < count; i++)
        if (sorted[i]->index >= 0 && !json_usable_slot(&j, s, sorted[i], public_only))
            failed = 1;
    cli_json_arr_end(&j);
    cli_json_arr_begin(&j, "unusable_slots");
    for (i = 0; i < count; i++) {
        if (sorted[i]->index >= 0)
            continue;
        cli_json_obj_begin(&j, NULL);
        json_slot_common(&j, sorted[i]);
        cli_json_string(&j, "reason", unusable_reason(sorted[i]));
        cli_json_obj_end(&j);
    }
    cli_json_arr_end(&j);
    cli_json_obj_end(&j);
    cli_json_end(&j);
    return failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

int cmd_list(cli_globals *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"tpm", no_argument, NULL, 't'},
        {"public", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    cli_session s;
    mks_slot_info *slots = NULL;
    mks_slot_info **sorted = NULL;
    size_t count = 0, i;
    int json = 0, tpm = 0, public_only = 0, c, ret = CLI_EXIT_FAIL;
    mks_rv rv;

    while ((c = cli_next_opt(g, argc, argv, longopts, CMD, list_usage, &ret)) > 0) {
        switch (c) {
        case 'j':
            json = 1;
            break;
        case 't':
            tpm = 1;
            break;
        case 'p':
            public_only = 1;
            break;
        }
    }
    if (c == CLI_OPT_EXIT)
        return ret;
    if (!cli_no_operands(CMD, argc, argv) || !cli_globals_check(g, CMD))
        return CLI_EXIT_USAGE;
    ret = CLI_EXIT_FAIL;

    if (!cli_session_open(&s, g, CMD)) {
        cli_session_close(&s);
        return CLI_EXIT_FAIL;
    }
    if (tpm) {
        ret = list_tpm(&s, json);
        cli_session_close(&s);
        return ret;
    }
    rv = mks_slots_list(s.ks, &slots, &count);
    if (rv != MKS_OK) {
        cli_fail_ks(CMD, rv, "cannot list the slots of %s", cli_session_module(&s));
        slots = NULL;
        count = 0;
        goto done;
    }
    sorted = calloc(count > 0 ? count : 1, sizeof(*sorted));
    if (sorted == NULL) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    /* Usable slots by index, then the others in the module's order (qsort is not stable). */
    {
        size_t nusable = 0;

        for (i = 0; i < count; i++) {
            if (slots[i].index >= 0)
                sorted[nusable++] = &slots[i];
        }
        qsort(sorted, nusable, sizeof(*sorted), by_index);
        for (i = 0; i < count; i++) {
            if (slots[i].index < 0)
                sorted[nusable++] = &slots[i];
        }
    }
    ret = json ? list_json(&s, sorted, count, public_only)
               : list_text(&s, sorted, count, public_only);
done:
    free(sorted);
    if (slots != NULL)
        mks_slots_free(slots, count);
    cli_session_close(&s);
    return ret;
}
