/*
 * Force-included into .ci/platforms.sh's MSVC-mode compiles (clang with
 * --target=*-windows-msvc and -fms-compatibility-version=19.40, so that
 * _MSC_VER is defined and clang's MSVC intrinsics and <intrin.h> are the
 * ones in force).  No Windows SDK can be had here, so the system headers
 * are mingw-w64's, and these lines paper over the places where mingw-w64's
 * headers and clang's MSVC-mode <intrin.h> disagree.  None of them touches
 * leaky's code or CPython's headers.
 *
 * __GNUC__ is defined too (-fgnuc-version), because mingw-w64's headers
 * write MSVC's __declspec(noreturn) after declarators without it, which no
 * compiler parses; leaky's MSVC branches key on _MSC_VER, never on the
 * absence of __GNUC__.
 */
#include <_mingw.h>

/* mingw-w64 makes __forceinline `extern __inline__` for GCC; in MSVC it is a
   keyword, and leaky writes `static __forceinline`. */
#undef __forceinline

/* clang's <intrin.h> defines these inline; mingw-w64's would define them again. */
#define __INTRINSIC_DEFINED___stosb
#define __INTRINSIC_DEFINED___stosw
#define __INTRINSIC_DEFINED___stosd
#define __INTRINSIC_DEFINED___stosq
#define __INTRINSIC_DEFINED___movsb
#define __INTRINSIC_DEFINED___movsw
#define __INTRINSIC_DEFINED___movsd
#define __INTRINSIC_DEFINED___movsq

/* mingw-w64 makes the barriers GCC asm macros unless _ReadWriteBarrier is
   already a macro; clang's <intrin.h> declares them as its builtins. */
#define _ReadWriteBarrier _ReadWriteBarrier

/* mingw-w64's x86-64 _setjmp takes a frame pointer, the SDK's (which clang's
   <intrin.h> declares) does not; leaky calls neither. */
#define _setjmp leaky_ci_mingw_setjmp
#include <setjmp.h>
#undef _setjmp

/* The SDK's <sys/types.h> has no pid_t; CPython's PC/pyconfig.h defines it. */
#define _PID_T_
