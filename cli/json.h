/*
 * A small streaming JSON writer for --json output: members and elements are
 * written as they come, commas placed by the writer, strings escaped by
 * cli_json_str (util.c). Output is one line per document.
 *
 * Field names are part of the CLI's interface: once documented (man page
 * mtls-keystore(1), README) they are only ever added to, never renamed.
 */
#ifndef MTLSKS_CLI_JSON_H
#define MTLSKS_CLI_JSON_H

#include <stdio.h>

#define CLI_JSON_MAX_DEPTH 32

typedef struct cli_json {
    FILE *f;
    int depth;
    unsigned char need_comma[CLI_JSON_MAX_DEPTH];
} cli_json;

void cli_json_init(cli_json *j, FILE *f);

/* `key` names the member inside an object; NULL inside an array or at the top. */
void cli_json_obj_begin(cli_json *j, const char *key);
void cli_json_obj_end(cli_json *j);
void cli_json_arr_begin(cli_json *j, const char *key);
void cli_json_arr_end(cli_json *j);

/* A string; NULL writes null. */
void cli_json_string(cli_json *j, const char *key, const char *value);
void cli_json_int(cli_json *j, const char *key, long long value);
void cli_json_uint(cli_json *j, const char *key, unsigned long long value);
/* true/false; a negative value writes null (unknown). */
void cli_json_bool(cli_json *j, const char *key, int value);
void cli_json_null(cli_json *j, const char *key);

/* A key's members "key_type" (NULL: null), "curve" (NULL or "": null) and
 * "bits" (not positive: null), in that order. */
void cli_json_key_type(cli_json *j, const char *type, const char *curve, int bits);

/* Ends the document with a newline. */
void cli_json_end(cli_json *j);

#endif
