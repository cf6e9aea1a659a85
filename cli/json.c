#include "json.h"

#include "util.h"

void cli_json_init(cli_json *j, FILE *f)
{
    j->f = f;
    j->depth = 0;
    j->need_comma[0] = 0;
}

/* The comma before a value and its member name. */
static void json_member(cli_json *j, const char *key)
{
    if (j->need_comma[j->depth])
        fputc(',', j->f);
    j->need_comma[j->depth] = 1;
    if (key != NULL) {
        cli_json_str(j->f, key);
        fputc(':', j->f);
    }
}

static void json_open(cli_json *j, const char *key, int c)
{
    json_member(j, key);
    fputc(c, j->f);
    if (j->depth + 1 < CLI_JSON_MAX_DEPTH)
        j->depth++;
    j->need_comma[j->depth] = 0;
}

static void json_close(cli_json *j, int c)
{
    fputc(c, j->f);
    if (j->depth > 0)
        j->depth--;
}

void cli_json_obj_begin(cli_json *j, const char *key)
{
    json_open(j, key, '{');
}

void cli_json_obj_end(cli_json *j)
{
    json_close(j, '}');
}

void cli_json_arr_begin(cli_json *j, const char *key)
{
    json_open(j, key, '[');
}

void cli_json_arr_end(cli_json *j)
{
    json_close(j, ']');
}

void cli_json_string(cli_json *j, const char *key, const char *value)
{
    json_member(j, key);
    cli_json_str(j->f, value);
}

void cli_json_int(cli_json *j, const char *key, long long value)
{
    json_member(j, key);
    fprintf(j->f, "%lld", value);
}

void cli_json_uint(cli_json *j, const char *key, unsigned long long value)
{
    json_member(j, key);
    fprintf(j->f, "%llu", value);
}

void cli_json_bool(cli_json *j, const char *key, int value)
{
    json_member(j, key);
    fputs(value < 0 ? "null" : value ? "true" : "false", j->f);
}

void cli_json_null(cli_json *j, const char *key)
{
    json_member(j, key);
    fputs("null", j->f);
}

void cli_json_key_type(cli_json *j, const char *type, const char *curve, int bits)
{
    cli_json_string(j, "key_type", type);
    cli_json_string(j, "curve", curve != NULL && *curve != '\0' ? curve : NULL);
    if (bits > 0)
        cli_json_int(j, "bits", bits);
    else
        cli_json_null(j, "bits");
}

void cli_json_end(cli_json *j)
{
    fputc('\n', j->f);
    fflush(j->f);
}
