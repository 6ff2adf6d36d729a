/*
 * pyconfig.h for cross-compiling leaky against CPython's headers
 * (.ci/platforms.sh): Linux (glibc and musl) and macOS, x86-64 and arm64.
 *
 * Why not the host's: it belongs to another CPython version and to one
 * target (x86-64 glibc), and the header is target-specific.  A real one
 * comes from running ./configure on the target, which a cross compile
 * cannot do.  What CPython's public headers read from pyconfig.h is small
 * (the sizes of C types, a few HAVE_* switches, the feature-test macros),
 * so it is written out here: the sizes from the compiler's own predefined
 * macros (so they are right for every target), the rest as configure sets
 * it on these systems.  Py_GIL_DISABLED comes from the command line for
 * the free-threaded variant, as a 3.13t pyconfig.h would define it.
 */
#ifndef LEAKY_CI_PYCONFIG_H
#define LEAKY_CI_PYCONFIG_H

/* Feature-test macros as configure defines them (AC_USE_SYSTEM_EXTENSIONS
   everywhere; X/Open 7 everywhere but macOS, where configure leaves it off
   because it hides Darwin's own extensions).  leaky.c relies on these
   arriving through Python.h (sched_getaffinity and CPU_COUNT need
   _GNU_SOURCE). */
#define _ALL_SOURCE 1
#define _GNU_SOURCE 1
#define _POSIX_PTHREAD_SEMANTICS 1
#define _TANDEM_SOURCE 1
#define __EXTENSIONS__ 1
#define _DARWIN_C_SOURCE 1
#define _NETBSD_SOURCE 1
#define __BSD_VISIBLE 1
#ifndef __APPLE__
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700
#define _XOPEN_SOURCE_EXTENDED 1
#endif

/* Sizes, from the compiler (every target here is LP64). */
#define SIZEOF__BOOL 1
#define SIZEOF_INT __SIZEOF_INT__
#define SIZEOF_LONG __SIZEOF_LONG__
#define SIZEOF_LONG_LONG __SIZEOF_LONG_LONG__
#define SIZEOF_LONG_DOUBLE __SIZEOF_LONG_DOUBLE__
#define SIZEOF_SIZE_T __SIZEOF_SIZE_T__
#define SIZEOF_VOID_P __SIZEOF_POINTER__
#define SIZEOF_UINTPTR_T __SIZEOF_POINTER__
#define SIZEOF_WCHAR_T __SIZEOF_WCHAR_T__
#define SIZEOF_TIME_T __SIZEOF_LONG__
#define SIZEOF_PTHREAD_T __SIZEOF_POINTER__
#define SIZEOF_PID_T 4
#define SIZEOF_OFF_T 8
#define SIZEOF_FPOS_T 16
#define SIZEOF_DOUBLE 8
#define SIZEOF_FLOAT 4
#define SIZEOF_SHORT 2
#define ALIGNOF_LONG __SIZEOF_LONG__
#define ALIGNOF_SIZE_T __SIZEOF_SIZE_T__
#define ALIGNOF_MAX_ALIGN_T 16
#define DOUBLE_IS_LITTLE_ENDIAN_IEEE754 1
#define PYLONG_BITS_IN_DIGIT 30

/* Headers and functions every one of these systems has. */
#define HAVE_UNISTD_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_PTHREAD_H 1
#define HAVE_WCHAR_H 1
#define HAVE_LANGINFO_H 1
#define HAVE_SSIZE_T 1
#define HAVE_CLOCK_GETTIME 1
#define HAVE_DLOPEN 1
#define HAVE_DYNAMIC_LOADING 1
#define HAVE_FORK 1
#define HAVE_SIGACTION 1
#define HAVE_READLINK 1
#define HAVE_REALPATH 1
#define HAVE_STDLIB_H 1
#define HAVE_STRING_H 1
#define HAVE_STDINT_H 1
#define HAVE_INTTYPES_H 1
#define STDC_HEADERS 1

/* The build options of a release CPython. */
#define WITH_DOC_STRINGS 1
#define WITH_FREELISTS 1
#define WITH_PYMALLOC 1
#define WITH_MIMALLOC 1

#endif /* LEAKY_CI_PYCONFIG_H */
