/*
 * kernels_avx2.c: the AVX2 + F16C loops for float16, float32 and float64,
 * and their kernel table.  Compiled for the baseline ISA with a per-function
 * target attribute; cpu_dispatch.c picks the table only on a CPU (and OS)
 * that runs it.  The element-wise bodies are leaky.h's FORWARD_BODY,
 * GRAD_BODY and BACKWARD_BODY.
 */
#include "leaky.h"

#ifdef LEAKY_X86_64
#include <immintrin.h>
#if defined(_MSC_VER) && !defined(__clang__)
#define TARGET_AVX2
#else
#define TARGET_AVX2 __attribute__((target("avx2,f16c")))
#endif

/*
 * The templates below take, per ISA and element kind: the vector type VT,
 * lanes W, element size ES, loads and stores that convert to and from VT,
 * and SEL(x, a, b) = (x > 0 ? a : b) lane by lane.
 */
/* ---- AVX2 + F16C: the portable loops finish the ragged ends ---- */

#define AVX2_UNARY(NAME, VT, W, ES, LOAD, STORE, STREAM, SETUP, BODY, FALLBACK)  \
    TARGET_AVX2 static void                                                     \
    NAME(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx) \
    {                                                                           \
        if (steps[0] != ES || steps[1] != ES) {                                 \
            FALLBACK(ptrs, steps, n, ctx);                                      \
            return;                                                             \
        }                                                                       \
        SETUP                                                                   \
        const char *src = ptrs[0];                                              \
        char *dst = ptrs[1];                                                    \
        Py_ssize_t i = 0;                                                       \
        const Py_ssize_t head = ctx->streaming ? stream_head(dst, n, ES, W * ES) : -1; \
        if (head >= 0) {                                                        \
            char *head_ptrs[2] = {(char *)src, dst};                            \
            FALLBACK(head_ptrs, steps, head, ctx);                              \
            for (i = head; i + W <= n; i += W) {                                \
                VT x = LOAD(src + i * ES);                                      \
                STREAM(dst + i * ES, BODY);                                     \
            }                                                                   \
            _mm_sfence();                                                       \
        }                                                                       \
        for (; i + W <= n; i += W) {                                            \
            VT x = LOAD(src + i * ES);                                          \
            STORE(dst + i * ES, BODY);                                          \
        }                                                                       \
        char *tail[2] = {(char *)src + i * ES, dst + i * ES};                   \
        FALLBACK(tail, steps, n - i, ctx);                                      \
    }

#define AVX2_BINARY(NAME, VT, W, ES, LOAD, STORE, STREAM, SETUP, FALLBACK)       \
    TARGET_AVX2 static void                                                     \
    NAME(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx) \
    {                                                                           \
        if (steps[0] != ES || steps[1] != ES || steps[2] != ES) {               \
            FALLBACK(ptrs, steps, n, ctx);                                      \
            return;                                                             \
        }                                                                       \
        SETUP                                                                   \
        const char *gp = ptrs[0], *zp = ptrs[1];                                \
        char *dst = ptrs[2];                                                    \
        Py_ssize_t i = 0;                                                       \
        const Py_ssize_t head = ctx->streaming ? stream_head(dst, n, ES, W * ES) : -1; \
        if (head >= 0) {                                                        \
            char *head_ptrs[3] = {(char *)gp, (char *)zp, dst};                 \
            FALLBACK(head_ptrs, steps, head, ctx);                              \
            for (i = head; i + W <= n; i += W) {                                \
                VT g = LOAD(gp + i * ES), z = LOAD(zp + i * ES);                \
                STREAM(dst + i * ES, BACKWARD_BODY(g, z));                      \
            }                                                                   \
            _mm_sfence();                                                       \
        }                                                                       \
        for (; i + W <= n; i += W) {                                            \
            VT g = LOAD(gp + i * ES), z = LOAD(zp + i * ES);                    \
            STORE(dst + i * ES, BACKWARD_BODY(g, z));                           \
        }                                                                       \
        char *tail[3] = {(char *)gp + i * ES, (char *)zp + i * ES, dst + i * ES}; \
        FALLBACK(tail, steps, n - i, ctx);                                      \
    }

#define SEL(x, a, b) _mm256_blendv_ps((b), (a), _mm256_cmp_ps((x), vzero, _CMP_GT_OQ))
#define MUL _mm256_mul_ps
#define SETUP_PS256                                                             \
    const __m256 va = _mm256_set1_ps(ctx->alpha32), vone = _mm256_set1_ps(1.0f), \
                 vzero = _mm256_setzero_ps(); \
    (void)vone; /* the forward loops need no 1.0 */
#define F32X8_LOAD(p) _mm256_loadu_ps((const void *)(p))
#define F32X8_STORE(p, v) _mm256_storeu_ps((void *)(p), (v))
#define F32X8_STREAM(p, v) _mm256_stream_ps((void *)(p), (v))
#define F16X8_LOAD(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define F16X8_PACK(v) _mm256_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define F16X8_STORE(p, v) _mm_storeu_si128((__m128i *)(void *)(p), F16X8_PACK(v))
#define F16X8_STREAM(p, v) _mm_stream_si128((__m128i *)(void *)(p), F16X8_PACK(v))
AVX2_UNARY(avx2_forward_f32, __m256, 8, 4, F32X8_LOAD, F32X8_STORE, F32X8_STREAM, SETUP_PS256,
           FORWARD_BODY(x), forward_loop_f32)
AVX2_UNARY(avx2_grad_f32, __m256, 8, 4, F32X8_LOAD, F32X8_STORE, F32X8_STREAM, SETUP_PS256,
           GRAD_BODY(x), grad_loop_f32)
AVX2_BINARY(avx2_backward_f32, __m256, 8, 4, F32X8_LOAD, F32X8_STORE, F32X8_STREAM, SETUP_PS256,
            backward_loop_f32)
AVX2_UNARY(avx2_forward_f16, __m256, 8, 2, F16X8_LOAD, F16X8_STORE, F16X8_STREAM, SETUP_PS256,
           FORWARD_BODY(x), forward_loop_f16)
AVX2_UNARY(avx2_grad_f16, __m256, 8, 2, F16X8_LOAD, F16X8_STORE, F16X8_STREAM, SETUP_PS256,
           GRAD_BODY(x), grad_loop_f16)
AVX2_BINARY(avx2_backward_f16, __m256, 8, 2, F16X8_LOAD, F16X8_STORE, F16X8_STREAM, SETUP_PS256,
            backward_loop_f16)
#undef SEL
#undef MUL

#define SEL(x, a, b) _mm256_blendv_pd((b), (a), _mm256_cmp_pd((x), vzero, _CMP_GT_OQ))
#define MUL _mm256_mul_pd
#define SETUP_PD256                                                             \
    const __m256d va = _mm256_set1_pd(ctx->alpha), vone = _mm256_set1_pd(1.0),  \
                  vzero = _mm256_setzero_pd(); \
    (void)vone; /* the forward loops need no 1.0 */
#define F64X4_LOAD(p) _mm256_loadu_pd((const void *)(p))
#define F64X4_STORE(p, v) _mm256_storeu_pd((void *)(p), (v))
#define F64X4_STREAM(p, v) _mm256_stream_pd((void *)(p), (v))
AVX2_UNARY(avx2_forward_f64, __m256d, 4, 8, F64X4_LOAD, F64X4_STORE, F64X4_STREAM, SETUP_PD256,
           FORWARD_BODY(x), forward_loop_f64)
AVX2_UNARY(avx2_grad_f64, __m256d, 4, 8, F64X4_LOAD, F64X4_STORE, F64X4_STREAM, SETUP_PD256,
           GRAD_BODY(x), grad_loop_f64)
AVX2_BINARY(avx2_backward_f64, __m256d, 4, 8, F64X4_LOAD, F64X4_STORE, F64X4_STREAM, SETUP_PD256,
            backward_loop_f64)
#undef SEL
#undef MUL
SIMD_TABLE(AVX2_KERNELS, avx2)
#endif /* LEAKY_X86_64 */
