/*
 * The Windows SDK's rpcndr.h, as far as leaky can trip on it, on top of
 * mingw-w64's.  The SDK's says `#define small char` unconditionally, and
 * <windows.h> pulls it in (through rpc.h) unless WIN32_LEAN_AND_MEAN is
 * defined; mingw-w64's defines `small` only under RC_INVOKED, so a mingw
 * build never sees the clash that every MSVC build would.  .ci/platforms.sh
 * puts this folder first on the include path of its Windows compiles.
 */
#include_next <rpcndr.h>
#ifndef small
#define small char
#endif
