/*
 * nnkern.h — C interface to nnkern (libnnkern.so / libnnkern.a).
 *
 * Compute kernels for training neural networks: GEMM (CBLAS-compatible
 * cblas_sgemm, the Fortran-ABI sgemm_ of the reference BLAS, plus strided
 * f32/bf16/f16 entries), activations, fused
 * softmax + cross-entropy, bias ops, Adam/AdamW/SGD, gradient clipping,
 * thread-count and ISA control.
 *
 * Conventions
 * - Every nnkern_* entry that can fail returns a status: NNKERN_OK (0) or
 *   one of NNKERN_ERR_*. On failure no output has been written and
 *   nnkern_last_error() describes the problem (per thread).
 * - Sizes and strides are int64_t and counted in elements. Negative values,
 *   and sizes whose memory extent overflows the address space, are errors.
 * - A matrix is (pointer, rows, cols, row stride, col stride): element
 *   (i, j) is at p[i*row_stride + j*col_stride]. Row-major with leading
 *   dimension ld: (ld, 1). Column-major: (1, ld). Transpose: swap them.
 * - A pointer may be NULL only when it describes no elements.
 * - Outputs must not overlap inputs or each other (NNKERN_ERR_ALIASING),
 *   except in the *_inplace entries.
 * - Results are bitwise reproducible for the same inputs and thread count.
 * - No entry ever aborts the process or lets a Rust panic cross into C
 *   (NNKERN_ERR_PANIC reports one).
 * - Link: cc prog.c -I include -L target/release -lnnkern
 *   (static: target/release/libnnkern.a -lpthread -ldl -lm).
 *
 * The Rust side is capi/src/; capi/tests/capi_header.rs checks that this file
 * declares exactly what the library exports, with the same types.
 */
#ifndef NNKERN_H
#define NNKERN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes ------------------------------------------------------ */
#define NNKERN_OK 0
#define NNKERN_ERR_NULL_POINTER 1
#define NNKERN_ERR_INVALID_ARGUMENT 2
#define NNKERN_ERR_SHAPE_MISMATCH 3
#define NNKERN_ERR_OVERFLOW 4
#define NNKERN_ERR_ALIASING 5
#define NNKERN_ERR_LABEL_OUT_OF_RANGE 6
#define NNKERN_ERR_INVALID_VALUE 7
#define NNKERN_ERR_UNSUPPORTED 8
#define NNKERN_ERR_CUDA 10
/* The system could not provide memory the call needs. */
#define NNKERN_ERR_OUT_OF_MEMORY 11
#define NNKERN_ERR_PANIC 99

/* ---- ISA codes --------------------------------------------------------- */
#define NNKERN_ISA_AUTO (-1)
#define NNKERN_ISA_SCALAR 0
#define NNKERN_ISA_AVX2 1
#define NNKERN_ISA_AVX512 2
#define NNKERN_ISA_NEON 3

/* ---- activation codes -------------------------------------------------- */
#define NNKERN_ACT_IDENTITY 0
#define NNKERN_ACT_RELU 1
#define NNKERN_ACT_SIGMOID 2
#define NNKERN_ACT_TANH 3
#define NNKERN_ACT_GELU_TANH 4
#define NNKERN_ACT_GELU_ERF 5

/* ---- optimizer codes --------------------------------------------------- */
#define NNKERN_DECAY_L2 0
#define NNKERN_DECAY_DECOUPLED 1
#define NNKERN_EPSILON_PYTORCH 0
#define NNKERN_EPSILON_KERAS 1

/* bf16 and IEEE half values, as their raw bits. */
typedef uint16_t nnkern_bf16;
typedef uint16_t nnkern_f16;

/* Adam / AdamW hyperparameters (nnkern_adam_config_default fills them). */
typedef struct nnkern_adam_config {
    float lr;           /* learning rate, finite, >= 0 */
    float beta1;        /* in [0, 1) */
    float beta2;        /* in [0, 1) */
    float eps;          /* finite, > 0 */
    float weight_decay; /* finite, >= 0 */
    int decay;          /* NNKERN_DECAY_L2 (Adam) or NNKERN_DECAY_DECOUPLED (AdamW) */
    int epsilon;        /* NNKERN_EPSILON_PYTORCH or NNKERN_EPSILON_KERAS */
} nnkern_adam_config;

/* ---- CBLAS ------------------------------------------------------------- */
/* The standard CBLAS enums; skipped when a cblas.h was included first. */
#ifndef CBLAS_H
enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 };
#endif

/* Error exits of cblas_sgemm and sgemm_ (the xerbla convention). A bad
 * argument leaves C untouched, sets nnkern_last_error(), and is reported
 * through the first of:
 * 1. cblas_sgemm only: the handler set with nnkern_set_cblas_error_handler,
 *    given the argument's position in the C signature (1 Order, 2 TransA,
 *    3 TransB, 4 M, 5 N, 6 K, 9 lda, 11 ldb, 14 ldc; also 8/10/13 for a
 *    NULL A/B/C, 13 for a C overlapping A or B);
 * 2. the process's cblas_xerbla (for cblas_sgemm) or xerbla_ (for sgemm_),
 *    if it has one, called as the reference implementation calls it:
 *    - cblas_xerbla(p, "cblas_sgemm", "%s\n", message) with the reference
 *      CBLAS's number p. Column-major, p is the C position above. Row-major,
 *      the reference calls SGEMM with M/N, A/B and lda/ldb exchanged, so N is
 *      checked first and reported as 4, M as 5, ldb as 9, lda as 11 (8/10/13
 *      keep their positions). A reference cblas_xerbla maps these back while
 *      the reference's int RowMajorStrg is 1: if the process has that
 *      variable, it is set to 1 (row-major) or 0 for the call, then 0.
 *    - xerbla_("SGEMM ", &info, 6) (six characters, then a NUL) with the
 *      reference BLAS's INFO: 1 TRANSA, 2 TRANSB, 3 M, 4 N, 5 K, 8 LDA,
 *      10 LDB, 13 LDC; also 7/9/12 for a NULL A/B/C or a C overlapping A or
 *      B, and a NULL scalar pointer is its own argument's number.
 *    Whatever that function does next is its own: the reference's prints
 *    and may exit, a tester's records the call and returns.
 * 3. otherwise one line on stderr, and the call returns.
 * "The process's": found through weak references, so the program's own
 * definition (linked statically, or exported, as it is when a shared
 * library the program links uses the name), else that of a reference
 * BLAS/CBLAS library loaded with this one. libnnkern defines none of
 * cblas_xerbla, xerbla_, RowMajorStrg: a definition of ours would shadow the
 * reference library's own for its other routines when preloaded, and
 * clash with the program's when linked statically. */

/* C = alpha*op(A)*op(B) + beta*C, exactly as CBLAS defines it. */
void cblas_sgemm(const enum CBLAS_ORDER Order, const enum CBLAS_TRANSPOSE TransA,
                 const enum CBLAS_TRANSPOSE TransB, const int M, const int N, const int K,
                 const float alpha, const float *A, const int lda, const float *B, const int ldb,
                 const float beta, float *C, const int ldc);

/* The CBLAS error handler: parameter position, routine name, message. With
 * none (NULL), errors are reported as in 2. and 3. above. */
typedef void (*nnkern_cblas_error_handler)(int param, const char *routine, const char *message);
/* Installs a handler process-wide; NULL restores the default. */
void nnkern_set_cblas_error_handler(nnkern_cblas_error_handler handler);

/* ---- Fortran BLAS ------------------------------------------------------ */
/* SGEMM of the reference BLAS through the Fortran ABI: every argument by
 * reference, matrices column-major, transa/transb one of 'N', 'T', 'C' (either
 * case). Hidden string-length arguments after ldc (as Fortran compilers pass
 * them) are accepted and ignored. M = 0, N = 0, or (alpha = 0 or K = 0) with
 * beta = 1 returns at once; beta = 0 never reads C, alpha = 0 never reads A, B. */
void sgemm_(const char *transa, const char *transb, const int *m, const int *n, const int *k,
            const float *alpha, const float *a, const int *lda, const float *b, const int *ldb,
            const float *beta, float *c, const int *ldc);

/* ---- library ----------------------------------------------------------- */
const char *nnkern_version(void);
/* Message of the last failed call on this thread ("" if none); valid until
 * the next failing call on the same thread. */
const char *nnkern_last_error(void);
const char *nnkern_status_string(int status);
int nnkern_set_num_threads(int64_t n);
int64_t nnkern_num_threads(void);
/* ISA used by calls from this thread (NNKERN_ISA_*). */
int nnkern_active_isa(void);
int nnkern_isa_supported(int isa);
/* One core's f32 FMA peak, GFLOP/s, of the ISA calls from this thread use
 * (measured at the first call, ~40 ms, then cached); 0 if unmeasurable. */
double nnkern_fma_peak_gflops(void);
const char *nnkern_isa_name(int isa);
/* Forces an ISA for later calls from this thread; NNKERN_ISA_AUTO undoes it.
 * NNKERN_ERR_UNSUPPORTED if this CPU cannot run it. */
int nnkern_force_isa(int isa);

/* ---- GEMM -------------------------------------------------------------- */
/* C (m x n) = alpha * A (m x k) * B (k x n) + beta * C, any strides.
 * beta = 0 never reads C; alpha = 0 or k = 0 never reads A, B (may be NULL). */
int nnkern_sgemm(int64_t m, int64_t n, int64_t k, float alpha,
                 const float *a, int64_t a_row_stride, int64_t a_col_stride,
                 const float *b, int64_t b_row_stride, int64_t b_col_stride, float beta,
                 float *c, int64_t c_row_stride, int64_t c_col_stride);
/* As nnkern_sgemm with bf16 / f16 inputs; accumulation and C in f32. */
int nnkern_gemm_bf16(int64_t m, int64_t n, int64_t k, float alpha,
                     const nnkern_bf16 *a, int64_t a_row_stride, int64_t a_col_stride,
                     const nnkern_bf16 *b, int64_t b_row_stride, int64_t b_col_stride, float beta,
                     float *c, int64_t c_row_stride, int64_t c_col_stride);
int nnkern_gemm_f16(int64_t m, int64_t n, int64_t k, float alpha,
                    const nnkern_f16 *a, int64_t a_row_stride, int64_t a_col_stride,
                    const nnkern_f16 *b, int64_t b_row_stride, int64_t b_col_stride, float beta,
                    float *c, int64_t c_row_stride, int64_t c_col_stride);

/* ---- activations ------------------------------------------------------- */
/* y[i] = f(x[i]). */
int nnkern_activation_forward(int act, const float *x, float *y, int64_t n);
int nnkern_activation_forward_inplace(int act, float *x, int64_t n);
/* dx[i] = dy[i] * f'(x[i]), x the forward input. */
int nnkern_activation_backward(int act, const float *x, const float *dy, float *dx, int64_t n);
int nnkern_activation_backward_inplace(int act, const float *x, float *grad, int64_t n);

/* ---- bias -------------------------------------------------------------- */
/* x[i][j] += bias[j]. */
int nnkern_bias_add(int64_t rows, int64_t cols, float *x, int64_t x_row_stride,
                    int64_t x_col_stride, const float *bias);
/* x[i][j] += bias[j]; y = f(x). */
int nnkern_bias_add_activation(int act, int64_t rows, int64_t cols, float *x,
                               int64_t x_row_stride, int64_t x_col_stride, const float *bias,
                               float *y, int64_t y_row_stride, int64_t y_col_stride);
/* dbias[j] = sum_i dy[i][j]. */
int nnkern_bias_grad(int64_t rows, int64_t cols, const float *dy, int64_t dy_row_stride,
                     int64_t dy_col_stride, float *dbias);

/* ---- softmax and cross-entropy (rows = samples, cols = classes) --------- */
int nnkern_softmax(int64_t rows, int64_t cols, const float *x, int64_t x_row_stride,
                   int64_t x_col_stride, float *y, int64_t y_row_stride, int64_t y_col_stride);
int nnkern_log_softmax(int64_t rows, int64_t cols, const float *x, int64_t x_row_stride,
                       int64_t x_col_stride, float *y, int64_t y_row_stride,
                       int64_t y_col_stride);
/* *loss = mean cross-entropy; dlogits = (softmax(logits) - onehot(labels)) / rows. */
int nnkern_softmax_xent_labels(int64_t rows, int64_t cols, const float *logits,
                               int64_t logits_row_stride, int64_t logits_col_stride,
                               const uint32_t *labels, float *dlogits,
                               int64_t dlogits_row_stride, int64_t dlogits_col_stride,
                               float *loss);
/* As above against soft targets (a probability row per sample). */
int nnkern_softmax_xent_soft(int64_t rows, int64_t cols, const float *logits,
                             int64_t logits_row_stride, int64_t logits_col_stride,
                             const float *targets, int64_t targets_row_stride,
                             int64_t targets_col_stride, float *dlogits,
                             int64_t dlogits_row_stride, int64_t dlogits_col_stride,
                             float *loss);
/* Loss only. */
int nnkern_softmax_xent_loss_labels(int64_t rows, int64_t cols, const float *logits,
                                    int64_t logits_row_stride, int64_t logits_col_stride,
                                    const uint32_t *labels, float *loss);

/* ---- metrics ----------------------------------------------------------- */
int nnkern_argmax_rows(int64_t rows, int64_t cols, const float *x, int64_t x_row_stride,
                       int64_t x_col_stride, uint32_t *out);
int nnkern_count_correct(int64_t rows, int64_t cols, const float *logits,
                         int64_t logits_row_stride, int64_t logits_col_stride,
                         const uint32_t *labels, int64_t *correct);

/* ---- optimizers -------------------------------------------------------- */
/* adamw = 0: PyTorch Adam defaults; 1: AdamW defaults (weight decay 0.01). */
int nnkern_adam_config_default(nnkern_adam_config *cfg, int adamw);
/* One Adam/AdamW step; step counts from 1. */
int nnkern_adam_step(const nnkern_adam_config *cfg, uint64_t step, float *w, const float *g,
                     float *m, float *v, int64_t n);
/* buf = momentum*buf + g + weight_decay*w; w -= lr*buf. */
int nnkern_sgd_step(float lr, float momentum, float weight_decay, float *w, const float *g,
                    float *buf, int64_t n);
/* *norm = sqrt(sum of squares) over count buffers (grads[i] holds lens[i] floats). */
int nnkern_global_norm(const float *const *grads, const int64_t *lens, int64_t count,
                       float *norm);
/* Scales all buffers by max_norm/norm when norm > max_norm; *norm (may be
 * NULL) receives the norm before clipping. */
int nnkern_clip_global_norm(float *const *grads, const int64_t *lens, int64_t count,
                            float max_norm, float *norm);

#ifdef __cplusplus
}
#endif

#endif /* NNKERN_H */
