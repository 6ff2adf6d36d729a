/*
 * The Windows SDK's (UCRT's) <complex.h>, as much of it as NumPy's headers
 * use, for .ci/platforms.sh's MSVC-mode compiles only: MSVC's C has no
 * _Complex, so the UCRT gives complex numbers as structs and creal() and
 * friends over them, and NumPy's npy_common.h / npy_math.h use those under
 * _MSC_VER.  mingw-w64's <complex.h>, the only one here, is C99's _Complex
 * one, which those headers cannot be compiled against; this file stands
 * first on the include path of those compiles (leaky._ufunc includes NumPy's
 * headers; leaky's own code includes no <complex.h>).
 */
#ifndef LEAKY_CI_UCRT_COMPLEX_H
#define LEAKY_CI_UCRT_COMPLEX_H

/* A system header, as the SDK's is: clang knows creal() and friends as
   builtins over _Complex and would warn about the UCRT's declarations. */
#pragma clang system_header

typedef struct _C_double_complex { double _Val[2]; } _C_double_complex;
typedef struct _C_float_complex { float _Val[2]; } _C_float_complex;
typedef struct _C_ldouble_complex { long double _Val[2]; } _C_ldouble_complex;
typedef _C_double_complex _Dcomplex;
typedef _C_float_complex _Fcomplex;
typedef _C_ldouble_complex _Lcomplex;

double creal(_Dcomplex z);
double cimag(_Dcomplex z);
float crealf(_Fcomplex z);
float cimagf(_Fcomplex z);
long double creall(_Lcomplex z);
long double cimagl(_Lcomplex z);

#endif
