/*
 * PKCS#11 slots and tokens: the slot list, which slots a URI matches, and
 * the token objects of a module (one per token, holding its session pool,
 * login state and PIN; see p11_session.c).
 */
#include "p11.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/p11-kit.h>

/* ---- slots ------------------------------------------------------------- */

static mks_rv get_slots(p11_module *mod, CK_BBOOL present, CK_SLOT_ID **out, CK_ULONG *n)
{
    CK_SLOT_ID *slots = NULL;
    CK_ULONG count = 0;
    CK_RV rv;
    int tries;

    *out = NULL;
    *n = 0;
    for (tries = 0; tries < 4; tries++) {
        rv = P11(mod, C_GetSlotList, present, NULL, &count);
        if (rv != CKR_OK)
            return p11_fail(rv, "C_GetSlotList", NULL);
        free(slots);
        slots = calloc(count + 1, sizeof(*slots));
        if (slots == NULL)
            return mks_error(MKS_ERR_NOMEM, "out of memory");
        rv = P11(mod, C_GetSlotList, present, slots, &count);
        if (rv == CKR_BUFFER_TOO_SMALL)
            continue; /* a slot appeared in between */
        if (rv != CKR_OK) {
            free(slots);
            return p11_fail(rv, "C_GetSlotList", NULL);
        }
        *out = slots;
        *n = count;
        return MKS_OK;
    }
    free(slots);
    return mks_error(MKS_ERR_TOKEN, "C_GetSlotList kept changing size");
}

/* A blank (all spaces) field becomes unset, which p11_kit_uri_format leaves out. */
static void blank_unset(unsigned char *field, size_t len)
{
    size_t i;

    for (i = 0; i < len && field[i] == ' '; i++)
        ;
    if (i == len)
        memset(field, 0, len);
}

/* The token's URI, naming only the attributes the token has: an uninitialised
 * token's blank label and serial give no empty "serial=;token=". */
char *p11_token_uri(const CK_TOKEN_INFO *info)
{
    P11KitUri *uri = p11_kit_uri_new();
    CK_TOKEN_INFO *ti;
    char *s = NULL;

    if (uri == NULL)
        return NULL;
    ti = p11_kit_uri_get_token_info(uri);
    memcpy(ti, info, sizeof(*info));
    blank_unset(ti->label, sizeof(ti->label));
    blank_unset(ti->manufacturerID, sizeof(ti->manufacturerID));
    blank_unset(ti->model, sizeof(ti->model));
    blank_unset(ti->serialNumber, sizeof(ti->serialNumber));
    if (p11_kit_uri_format(uri, P11_KIT_URI_FOR_TOKEN, &s) != P11_KIT_URI_OK)
        s = NULL;
    p11_kit_uri_free(uri);
    return s;
}

mks_rv mks_slots_list(mks_ctx *ctx, mks_slot_info **out, size_t *count)
{
    p11_module *mod = mks_ctx_p11(ctx);
    mks_rv rv;
    CK_SLOT_ID *slots = NULL;
    CK_ULONG n = 0, i;
    mks_slot_info *info = NULL;
    char *name;
    int index = 0;

    *out = NULL;
    *count = 0;
    rv = p11_module_ready(mod);
    if (rv != MKS_OK)
        return rv;
    rv = get_slots(mod, CK_FALSE, &slots, &n);
    if (rv != MKS_OK)
        return rv;
    info = calloc(n + 1, sizeof(*info));
    if (info == NULL) {
        rv = mks_error(MKS_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < n; i++) {
        mks_slot_info *si = &info[i];
        CK_SLOT_INFO sinfo;
        CK_TOKEN_INFO tinfo;
        CK_RV crv;

        si->index = -1;
        si->slot_id = slots[i];
        crv = P11(mod, C_GetSlotInfo, slots[i], &sinfo);
        if (crv != CKR_OK)
            continue;
        mks_copy_padded(si->slot_description, sizeof(si->slot_description), sinfo.slotDescription,
                        sizeof(sinfo.slotDescription));
        mks_copy_padded(si->module, sizeof(si->module), sinfo.manufacturerID,
                        sizeof(sinfo.manufacturerID));
        name = p11_kit_module_get_filename(mod->fl);
        if (name != NULL) {
            snprintf(si->module, sizeof(si->module), "%s", name);
            free(name);
        }
        si->token_present = (sinfo.flags & CKF_TOKEN_PRESENT) != 0;
        if (!si->token_present)
            continue;
        crv = P11(mod, C_GetTokenInfo, slots[i], &tinfo);
        if (crv != CKR_OK) {
            si->token_present = 0;
            continue;
        }
        si->token_initialized = (tinfo.flags & CKF_TOKEN_INITIALIZED) != 0;
        si->write_protected = (tinfo.flags & CKF_WRITE_PROTECTED) != 0;
        si->login_required = (tinfo.flags & CKF_LOGIN_REQUIRED) != 0;
        mks_copy_padded(si->token_label, sizeof(si->token_label), tinfo.label, sizeof(tinfo.label));
        mks_copy_padded(si->token_manufacturer, sizeof(si->token_manufacturer),
                        tinfo.manufacturerID, sizeof(tinfo.manufacturerID));
        mks_copy_padded(si->token_model, sizeof(si->token_model), tinfo.model, sizeof(tinfo.model));
        mks_copy_padded(si->token_serial, sizeof(si->token_serial), tinfo.serialNumber,
                        sizeof(tinfo.serialNumber));
        si->token_uri = p11_token_uri(&tinfo);
        /* Only writable, initialised tokens can hold new keys; they get the
         * index --slot takes, in the module's slot order. */
        if (si->token_initialized && !si->write_protected)
            si->index = index++;
    }
    *out = info;
    *count = n;
    info = NULL;
    rv = MKS_OK;
done:
    free(slots);
    free(info);
    return rv;
}

void mks_slots_free(mks_slot_info *slots, size_t count)
{
    size_t i;

    if (slots == NULL)
        return;
    for (i = 0; i < count; i++)
        free(slots[i].token_uri);
    free(slots);
}

mks_rv p11_match_slots(mks_ctx *ctx, P11KitUri *uri, CK_SLOT_ID **out, size_t *count)
{
    p11_module *mod = mks_ctx_p11(ctx);
    mks_rv rv;
    CK_SLOT_ID *slots = NULL;
    CK_ULONG n = 0, i;
    size_t m = 0;

    *out = NULL;
    *count = 0;
    rv = p11_module_ready(mod);
    if (rv != MKS_OK)
        return rv;
    rv = get_slots(mod, CK_TRUE, &slots, &n);
    if (rv != MKS_OK)
        return rv;
    for (i = 0; i < n; i++) {
        CK_SLOT_INFO sinfo;
        CK_TOKEN_INFO tinfo;

        if (P11(mod, C_GetTokenInfo, slots[i], &tinfo) != CKR_OK)
            continue;
        if (!(tinfo.flags & CKF_TOKEN_INITIALIZED))
            continue;
        if (uri != NULL) {
            if (!p11_kit_uri_match_token_info(uri, &tinfo))
                continue;
            if (P11(mod, C_GetSlotInfo, slots[i], &sinfo) != CKR_OK ||
                !p11_kit_uri_match_slot_info(uri, &sinfo))
                continue;
            if (p11_kit_uri_get_slot_id(uri) != (CK_SLOT_ID)-1 &&
                p11_kit_uri_get_slot_id(uri) != slots[i])
                continue;
        }
        slots[m++] = slots[i];
    }
    *out = slots;
    *count = m;
    return MKS_OK;
}

/* ---- tokens ------------------------------------------------------------ */

static int same_token(const CK_TOKEN_INFO *a, const CK_TOKEN_INFO *b)
{
    return memcmp(a->label, b->label, sizeof(a->label)) == 0 &&
           memcmp(a->serialNumber, b->serialNumber, sizeof(a->serialNumber)) == 0 &&
           memcmp(a->manufacturerID, b->manufacturerID, sizeof(a->manufacturerID)) == 0 &&
           memcmp(a->model, b->model, sizeof(a->model)) == 0;
}

mks_rv p11_token_for_slot(mks_ctx *ctx, CK_SLOT_ID slot, const CK_TOKEN_INFO *info, p11_token **out)
{
    p11_module *mod = mks_ctx_p11(ctx);
    p11_token *tok;

    pthread_mutex_lock(&mod->lock);
    for (tok = mod->tokens; tok != NULL; tok = tok->next)
        if (tok->slot == slot && same_token(&tok->info, info))
            break;
    if (tok == NULL) {
        tok = calloc(1, sizeof(*tok));
        if (tok == NULL) {
            pthread_mutex_unlock(&mod->lock);
            return mks_error(MKS_ERR_NOMEM, "out of memory");
        }
        tok->ctx = ctx;
        tok->mod = mod;
        tok->slot = slot;
        tok->info = *info;
        tok->gen = 1;
        mks_copy_padded(tok->label, sizeof(tok->label), info->label, sizeof(info->label));
        tok->max_sessions = P11_POOL_MAX;
        if (info->ulMaxSessionCount != CK_EFFECTIVELY_INFINITE &&
            info->ulMaxSessionCount != CK_UNAVAILABLE_INFORMATION && info->ulMaxSessionCount > 0 &&
            info->ulMaxSessionCount < tok->max_sessions)
            tok->max_sessions = info->ulMaxSessionCount;
        pthread_mutex_init(&tok->lock, NULL);
        pthread_cond_init(&tok->cond, NULL);
        tok->next = mod->tokens;
        mod->tokens = tok;
    }
    pthread_mutex_unlock(&mod->lock);
    *out = tok;
    return MKS_OK;
}

int p11_token_login_required(const p11_token *tok)
{
    return (tok->info.flags & CKF_LOGIN_REQUIRED) != 0;
}

int p11_token_pin_available(p11_token *tok, const char *uri_pin_source)
{
    int yes;

    pthread_mutex_lock(&tok->lock);
    yes = tok->pin_len > 0 || uri_pin_source != NULL || tok->mod->pin_source != NULL;
    pthread_mutex_unlock(&tok->lock);
    return yes;
}
