/*
 * kernels_avx512.c: the AVX-512 (F, BW, VL, DQ) loops for float16, float32
 * and float64, and their kernel table.  Compiled for the baseline ISA with a
 * per-function target attribute; cpu_dispatch.c picks the table only on a
 * CPU (and OS) that runs it.  The element-wise bodies are leaky.h's
 * FORWARD_BODY, GRAD_BODY and BACKWARD_BODY.
 */
#include "leaky.h"

#ifdef LEAKY_X86_64
#include <immintrin.h>
#if defined(_MSC_VER) && !defined(__clang__)
#define TARGET_AVX512
#else
#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,f16c")))
#endif

/*
 * The templates below take, per ISA and element kind: the vector type VT,
 * lanes W, element size ES, loads and stores that convert to and from VT,
 * and SEL(x, a, b) = (x > 0 ? a : b) lane by lane.
 */
/* ---- AVX-512: masked loads and stores handle the ragged ends ---- */

#define AVX512_UNARY(NAME, VT, W, ES, LOAD, MLOAD, STORE, MSTORE, STREAM, SETUP, BODY, FALLBACK) \
    TARGET_AVX512 static void                                                   \
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
            if (head > 0) {                                                     \
                uint64_t m = (1ull << head) - 1;                                \
                VT x = MLOAD(src, m);                                           \
                MSTORE(dst, m, BODY);                                           \
                i = head;                                                       \
            }                                                                   \
            for (; i + W <= n; i += W) {                                        \
                VT x = LOAD(src + i * ES);                                      \
                STREAM(dst + i * ES, BODY);                                     \
            }                                                                   \
            _mm_sfence();                                                       \
        }                                                                       \
        for (; i + W <= n; i += W) {                                            \
            VT x = LOAD(src + i * ES);                                          \
            STORE(dst + i * ES, BODY);                                          \
        }                                                                       \
        if (i < n) {                                                            \
            uint64_t m = (1ull << (n - i)) - 1;                                 \
            VT x = MLOAD(src + i * ES, m);                                      \
            MSTORE(dst + i * ES, m, BODY);                                      \
        }                                                                       \
    }

#define AVX512_BINARY(NAME, VT, W, ES, LOAD, MLOAD, STORE, MSTORE, STREAM, SETUP, FALLBACK) \
    TARGET_AVX512 static void                                                   \
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
            if (head > 0) {                                                     \
                uint64_t m = (1ull << head) - 1;                                \
                VT g = MLOAD(gp, m), z = MLOAD(zp, m);                          \
                MSTORE(dst, m, BACKWARD_BODY(g, z));                            \
                i = head;                                                       \
            }                                                                   \
            for (; i + W <= n; i += W) {                                        \
                VT g = LOAD(gp + i * ES), z = LOAD(zp + i * ES);                \
                STREAM(dst + i * ES, BACKWARD_BODY(g, z));                      \
            }                                                                   \
            _mm_sfence();                                                       \
        }                                                                       \
        for (; i + W <= n; i += W) {                                            \
            VT g = LOAD(gp + i * ES), z = LOAD(zp + i * ES);                    \
            STORE(dst + i * ES, BACKWARD_BODY(g, z));                           \
        }                                                                       \
        if (i < n) {                                                            \
            uint64_t m = (1ull << (n - i)) - 1;                                 \
            VT g = MLOAD(gp + i * ES, m), z = MLOAD(zp + i * ES, m);            \
            MSTORE(dst + i * ES, m, BACKWARD_BODY(g, z));                       \
        }                                                                       \
    }

/* float32 and float16 share the 16-lane float32 vector; float16 converts. */
#define SEL(x, a, b) _mm512_mask_blend_ps(_mm512_cmp_ps_mask((x), vzero, _CMP_GT_OQ), (b), (a))
#define MUL _mm512_mul_ps
#define SETUP_PS                                                                \
    const __m512 va = _mm512_set1_ps(ctx->alpha32), vone = _mm512_set1_ps(1.0f), \
                 vzero = _mm512_setzero_ps(); \
    (void)vone; /* the forward loops need no 1.0 */
#define F32_LOAD(p) _mm512_loadu_ps((const void *)(p))
#define F32_MLOAD(p, m) _mm512_maskz_loadu_ps((__mmask16)(m), (const void *)(p))
#define F32_STORE(p, v) _mm512_storeu_ps((void *)(p), (v))
#define F32_MSTORE(p, m, v) _mm512_mask_storeu_ps((void *)(p), (__mmask16)(m), (v))
#define F32_STREAM(p, v) _mm512_stream_ps((void *)(p), (v))
#define F16_LOAD(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#define F16_MLOAD(p, m) _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((__mmask16)(m), (const void *)(p)))
#define F16_PACK(v) _mm512_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define F16_STORE(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), F16_PACK(v))
#define F16_MSTORE(p, m, v) _mm256_mask_storeu_epi16((void *)(p), (__mmask16)(m), F16_PACK(v))
#define F16_STREAM(p, v) _mm256_stream_si256((__m256i *)(void *)(p), F16_PACK(v))

AVX512_UNARY(avx512_forward_f32, __m512, 16, 4, F32_LOAD, F32_MLOAD, F32_STORE, F32_MSTORE,
             F32_STREAM, SETUP_PS, FORWARD_BODY(x), forward_loop_f32)
AVX512_UNARY(avx512_grad_f32, __m512, 16, 4, F32_LOAD, F32_MLOAD, F32_STORE, F32_MSTORE,
             F32_STREAM, SETUP_PS, GRAD_BODY(x), grad_loop_f32)
AVX512_BINARY(avx512_backward_f32, __m512, 16, 4, F32_LOAD, F32_MLOAD, F32_STORE, F32_MSTORE,
              F32_STREAM, SETUP_PS, backward_loop_f32)
AVX512_UNARY(avx512_forward_f16, __m512, 16, 2, F16_LOAD, F16_MLOAD, F16_STORE, F16_MSTORE,
             F16_STREAM, SETUP_PS, FORWARD_BODY(x), forward_loop_f16)
AVX512_UNARY(avx512_grad_f16, __m512, 16, 2, F16_LOAD, F16_MLOAD, F16_STORE, F16_MSTORE,
             F16_STREAM, SETUP_PS, GRAD_BODY(x), grad_loop_f16)
AVX512_BINARY(avx512_backward_f16, __m512, 16, 2, F16_LOAD, F16_MLOAD, F16_STORE, F16_MSTORE,
              F16_STREAM, SETUP_PS, backward_loop_f16)
#undef SEL
#undef MUL

#define SEL(x, a, b) _mm512_mask_blend_pd(_mm512_cmp_pd_mask((x), vzero, _CMP_GT_OQ), (b), (a))
#define MUL _mm512_mul_pd
#define SETUP_PD                                                                \
    const __m512d va = _mm512_set1_pd(ctx->alpha), vone = _mm512_set1_pd(1.0),  \
                  vzero = _mm512_setzero_pd(); \
    (void)vone; /* the forward loops need no 1.0 */
#define F64_LOAD(p) _mm512_loadu_pd((const void *)(p))
#define F64_MLOAD(p, m) _mm512_maskz_loadu_pd((__mmask8)(m), (const void *)(p))
#define F64_STORE(p, v) _mm512_storeu_pd((void *)(p), (v))
#define F64_MSTORE(p, m, v) _mm512_mask_storeu_pd((void *)(p), (__mmask8)(m), (v))
#define F64_STREAM(p, v) _mm512_stream_pd((void *)(p), (v))
AVX512_UNARY(avx512_forward_f64, __m512d, 8, 8, F64_LOAD, F64_MLOAD, F64_STORE, F64_MSTORE,
             F64_STREAM, SETUP_PD, FORWARD_BODY(x), forward_loop_f64)
AVX512_UNARY(avx512_grad_f64, __m512d, 8, 8, F64_LOAD, F64_MLOAD, F64_STORE, F64_MSTORE,
             F64_STREAM, SETUP_PD, GRAD_BODY(x), grad_loop_f64)
AVX512_BINARY(avx512_backward_f64, __m512d, 8, 8, F64_LOAD, F64_MLOAD, F64_STORE, F64_MSTORE,
              F64_STREAM, SETUP_PD, backward_loop_f64)
#undef SEL
#undef MUL

SIMD_TABLE(AVX512_KERNELS, avx512)
#endif /* LEAKY_X86_64 */
