/* Older symbol versions for the libc functions glibc 2.34 moved out of libdl and
 * libpthread (dlopen, dlsym, dlerror, dlclose, pthread_condattr_setclock).
 *
 * Built against glibc 2.34 or newer, a module would ask for them at version
 * GLIBC_2.34 and load nowhere older, so a wheel built on a current system could
 * not be tagged manylinux_2_28, the tag confluent-kafka's wheels need anyway.
 * Every glibc since 2.34 still exports the old versions, and older ones have
 * nothing newer: binding to the old version works on both. setup.py puts this
 * header in front of every extension (-include). */
#ifndef DDC_GLIBC_COMPAT_H
#define DDC_GLIBC_COMPAT_H

#include <features.h>

#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 34)
#if defined(__x86_64__)
#define DDC_GLIBC_BASE "GLIBC_2.2.5"
#define DDC_GLIBC_CONDATTR "GLIBC_2.3.3"
#elif defined(__aarch64__)
#define DDC_GLIBC_BASE "GLIBC_2.17"
#define DDC_GLIBC_CONDATTR "GLIBC_2.17"
#endif
#ifdef DDC_GLIBC_BASE
__asm__(".symver dlopen,dlopen@" DDC_GLIBC_BASE);
__asm__(".symver dlsym,dlsym@" DDC_GLIBC_BASE);
__asm__(".symver dlerror,dlerror@" DDC_GLIBC_BASE);
__asm__(".symver dlclose,dlclose@" DDC_GLIBC_BASE);
__asm__(".symver pthread_condattr_setclock,pthread_condattr_setclock@" DDC_GLIBC_CONDATTR);
#endif
#endif

#endif
