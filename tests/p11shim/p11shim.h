/*
 * mtlsks-p11shim.so: what the PKCS#11 test shim exports besides
 * C_GetFunctionList, for programs that hold it in-process (benchmarks, fault
 * tests). The shim is loaded by whatever loads PKCS#11 modules (p11-kit for
 * the provider, libp11 for its engine); a program reaches these functions
 * with
 *
 *     void *h = dlopen(SHIM_PATH, RTLD_NOW | RTLD_NOLOAD);
 *     mtlsks_shim_count_fn *count = (mtlsks_shim_count_fn *)dlsym(h, "mtlsks_shim_count");
 *
 * after the module was loaded (RTLD_NOLOAD finds it by the same path; it
 * returns NULL when the shim is not loaded). See p11shim.c for the
 * environment variables and the fault syntax.
 */
#ifndef MTLSKS_P11SHIM_H
#define MTLSKS_P11SHIM_H

#include <stddef.h>

/* Calls of `name` ("C_Sign") since load or the last reset; name NULL or "*":
 * calls of every function. */
typedef unsigned long mtlsks_shim_count_fn(const char *name);
/* The most calls of `name` in progress at once since load or the last
 * reset (a fault rule's delay counts as in progress). */
typedef unsigned long mtlsks_shim_peak_fn(const char *name);
/* Sets every counter to zero (peaks to the calls in progress). */
typedef void mtlsks_shim_counts_reset_fn(void);
/*
 * Writes "C_SignInit=10 C_Sign=10" (the functions with a non-zero count, in
 * PKCS#11 order) into buf, NUL-terminated and truncated to size. Returns the
 * length the whole list needs (as snprintf).
 */
typedef size_t mtlsks_shim_counts_list_fn(char *buf, size_t size);
/* Replaces the faults MTLSKS_SHIM_FAULTS set (NULL or "": none). Returns 0,
 * or -1 when spec does not parse (the faults are then left as they were). */
typedef int mtlsks_shim_set_faults_fn(const char *spec);

/* The functions themselves, for the shim and for programs linking it. */
mtlsks_shim_count_fn mtlsks_shim_count;
mtlsks_shim_peak_fn mtlsks_shim_peak;
mtlsks_shim_counts_reset_fn mtlsks_shim_counts_reset;
mtlsks_shim_counts_list_fn mtlsks_shim_counts_list;
mtlsks_shim_set_faults_fn mtlsks_shim_set_faults;

#endif
