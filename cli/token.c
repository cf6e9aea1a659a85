#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lifecycle.h"

/* The choices a command accepts: --slot and --token, or (slot_ok 0) --token only. */
static void list_choices(const char *cmd, const mks_slot_info *slots, size_t count, int slot_ok)
{
    const char *what = slot_ok ? "slot" : "token";
    size_t i;
    int any = 0;

    for (i = 0; i < count; i++) {
        if (slots[i].index < 0)
            continue;
        if (!any)
            fprintf(stderr, "%s %s: %ss that can hold keys:\n", CLI_PROGRAM, cmd, what);
        any = 1;
        if (slot_ok)
            fprintf(stderr, "  --slot %d   --token '%s'   (%s)\n", slots[i].index,
                    slots[i].token_label, slots[i].slot_description);
        else
            fprintf(stderr, "  --token '%s'   (%s)\n", slots[i].token_label,
                    slots[i].slot_description);
    }
    if (!any)
        fprintf(stderr, "%s %s: no %s of this module can hold keys; see '%s list'\n", CLI_PROGRAM,
                cmd, what, CLI_PROGRAM);
}

/* The token chosen: its URI (malloc'd) and label, out of the slot list. */
static int take_token(cli_session *s, const mks_slot_info *found, char **token_uri,
                      char token_label[33])
{
    if (found->token_uri == NULL) {
        cli_fail(s->cmd, "the module gives no URI for token '%s'", found->token_label);
        return 0;
    }
    *token_uri = strdup(found->token_uri);
    if (*token_uri == NULL) {
        cli_fail(s->cmd, "out of memory");
        return 0;
    }
    snprintf(token_label, 33, "%s", found->token_label);
    return 1;
}

int cli_session_find_token(cli_session *s, int slot_index, const char *label, int slot_ok,
                           char **token_uri, char token_label[33])
{
    mks_slot_info *slots = NULL, *found = NULL;
    size_t count = 0, i;
    int matches = 0, ok = 0;
    mks_rv rv;

    *token_uri = NULL;
    rv = mks_slots_list(s->ks, &slots, &count);
    if (rv != MKS_OK) {
        cli_fail_ks(s->cmd, rv, "cannot list the slots of %s", cli_session_module(s));
        return 0;
    }
    for (i = 0; i < count; i++) {
        if (label != NULL ? strcmp(slots[i].token_label, label) == 0 && slots[i].token_present
                          : slots[i].index == slot_index) {
            if (slots[i].index < 0) {
                cli_fail(s->cmd,
                         "token '%s' (%s) cannot hold keys: it is write-protected or not "
                         "initialized",
                         slots[i].token_label, slots[i].slot_description);
                list_choices(s->cmd, slots, count, slot_ok);
                goto done;
            }
            if (found == NULL)
                found = &slots[i];
            matches++;
        }
    }
    if (found == NULL) {
        if (label != NULL)
            cli_fail(s->cmd, "no token labelled '%s' in %s", label, cli_session_module(s));
        else
            cli_fail(s->cmd, "no slot %d in %s", slot_index, cli_session_module(s));
        list_choices(s->cmd, slots, count, slot_ok);
        goto done;
    }
    if (matches > 1) {
        if (slot_ok)
            cli_fail(s->cmd, "%d tokens are labelled '%s'; choose one with --slot", matches, label);
        else
            cli_fail(s->cmd,
                     "%d tokens are labelled '%s' and --token cannot tell them apart: give each "
                     "token its own label",
                     matches, label);
        list_choices(s->cmd, slots, count, slot_ok);
        goto done;
    }
    ok = take_token(s, found, token_uri, token_label);
done:
    mks_slots_free(slots, count);
    return ok;
}

int cli_find_label_token(cli_session *s, const char *const *labels, size_t nlabels,
                         unsigned classes, const char *token, char **token_uri,
                         char token_label[33])
{
    mks_slot_info *slots = NULL;
    size_t count = 0, i, k, nfound = 0;
    const mks_slot_info *found = NULL;
    char names[256] = "";
    mks_rv rv;
    int ok = 0;

    *token_uri = NULL;
    /* The commands on existing keys take --token, never --slot. */
    if (token != NULL)
        return cli_session_find_token(s, -1, token, 0, token_uri, token_label);
    rv = mks_slots_list(s->ks, &slots, &count);
    if (rv != MKS_OK) {
        cli_fail_ks(s->cmd, rv, "cannot list the slots of %s", cli_session_module(s));
        return 0;
    }
    for (i = 0; i < count; i++) {
        int here = 0;

        if (slots[i].index < 0 || slots[i].token_uri == NULL)
            continue;
        for (k = 0; k < nlabels && !here; k++) {
            mks_object *objs = NULL;
            size_t n = 0;

            if (!cli_find_objects(s, slots[i].token_uri, labels[k], NULL, 0, 0, classes, &objs, &n))
                goto done;
            here = n > 0;
            mks_objects_free(objs, n);
        }
        if (!here)
            continue;
        if (nfound++ == 0)
            found = &slots[i];
        snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s'%s'",
                 nfound > 1 ? ", " : "", slots[i].token_label);
    }
    if (nfound == 0) {
        cli_fail(s->cmd, "no key or certificate labelled '%s' on any token of %s (see '%s list')",
                 labels[0], cli_session_module(s), CLI_PROGRAM);
        goto done;
    }
    if (nfound > 1) {
        cli_fail(s->cmd, "'%s' is on several tokens (%s); choose one with --token LABEL", labels[0],
                 names);
        goto done;
    }
    ok = take_token(s, found, token_uri, token_label);
done:
    mks_slots_free(slots, count);
    return ok;
}
