/*
 * cpu_dispatch.c: which kernel tables this CPU can run.  leaky.c asks once,
 * at import, and keeps the best (or the one LEAKY_KERNELS names) in the
 * module state.
 */
#include "leaky.h"

#ifdef LEAKY_X86_64
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#ifdef __APPLE__
#include <stdio.h>
#include <sys/sysctl.h>

/* A sysctl that is a nonzero int (hw.optional.*); 0 if absent. */
static int
sysctl_flag(const char *name)
{
    int value = 0;
    size_t size = sizeof value;
    return sysctlbyname(name, &value, &size, NULL, 0) == 0 && value != 0;
}

/*
 * AVX-512 on macOS.  The kernel enables the AVX-512 state per thread, at
 * its first AVX-512 instruction, so XCR0 does not show it and Apple's word
 * is the hw.optional.avx512* sysctls.  Before macOS 12.2 (Darwin 21.3) the
 * kernel could corrupt the opmask registers (k0-k7) across a signal or a
 * context switch (Go turns its AVX-512 code off there for this), and
 * leaky's AVX-512 loops mask every ragged end with them: there it keeps to
 * AVX2 (LEAKY_KERNELS cannot force AVX-512 either, as it only picks among
 * what this check allows).
 */
static int
macos_avx512(void)
{
    char release[32] = "";
    size_t size = sizeof release;
    int major = 0, minor = 0;
    if (sysctlbyname("kern.osrelease", release, &size, NULL, 0) != 0 ||
        sscanf(release, "%d.%d", &major, &minor) != 2 || major < 21 ||
        (major == 21 && minor < 3)) {
        return 0;
    }
    return sysctl_flag("hw.optional.avx512f") && sysctl_flag("hw.optional.avx512dq") &&
           sysctl_flag("hw.optional.avx512bw") && sysctl_flag("hw.optional.avx512vl");
}
#endif

/* CPUID leaf 7 feature bits, plus the OS's promise (XCR0) to save the registers. */
static void
cpu_features(int *has_avx2, int *has_avx512)
{
    unsigned int b, c;
    *has_avx2 = *has_avx512 = 0;
#if defined(_MSC_VER) && !defined(__clang__)
    int regs[4];
    __cpuid(regs, 0);
    if (regs[0] < 7) return;
    __cpuid(regs, 1);
    c = (unsigned int)regs[2];
    if (!(c & (1u << 27)) || !(c & (1u << 29))) return;  /* OSXSAVE, F16C */
    unsigned long long xcr0 = _xgetbv(0);
    __cpuidex(regs, 7, 0);
    b = (unsigned int)regs[1];
#else
    /* The functions, not cpuid.h's __cpuid(leaf, a, b, c, d) macro: where
       <intrin.h> came first (Python.h includes it for free-threaded builds
       on mingw), __cpuid is MSVC's two-argument function instead. */
    unsigned int a, d;
    if (__get_cpuid_max(0, NULL) < 7) return;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    if (!(c & (1u << 27)) || !(c & (1u << 29))) return;  /* OSXSAVE, F16C */
    unsigned int xlo, xhi;
    __asm__("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    unsigned long long xcr0 = ((unsigned long long)xhi << 32) | xlo;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
#endif
    int ymm_saved = (xcr0 & 0x6) == 0x6;
    int zmm_saved = (xcr0 & 0xe6) == 0xe6;
    *has_avx2 = ymm_saved && (b & (1u << 5));
    const unsigned int avx512_fdq_bw_vl = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31);
#ifdef __APPLE__
    (void)zmm_saved;  /* the OS turns ZMM state on at first use: ask it instead */
    *has_avx512 = *has_avx2 && (b & avx512_fdq_bw_vl) == avx512_fdq_bw_vl && macos_avx512();
#else
    *has_avx512 = *has_avx2 && zmm_saved && (b & avx512_fdq_bw_vl) == avx512_fdq_bw_vl;
#endif
}
#endif /* LEAKY_X86_64 */

/* Every kernel path this CPU can run, best first; returns the count. */
int
supported_kernels(const KernelTable **tables)
{
    int count = 0;
#ifdef LEAKY_X86_64
    int has_avx2, has_avx512;
    cpu_features(&has_avx2, &has_avx512);
    if (has_avx512) tables[count++] = &AVX512_KERNELS;
    if (has_avx2) tables[count++] = &AVX2_KERNELS;
#endif
#ifdef LEAKY_NEON
    tables[count++] = &NEON_KERNELS;
#endif
    tables[count++] = &PORTABLE_KERNELS;
    return count;
}
