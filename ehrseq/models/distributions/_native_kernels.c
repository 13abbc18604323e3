/* Native kernels of losses, inference and batch padding, one pass per row instead of tens to hundreds of
 * whole-tensor operations:
 * - constant-hazard grids (ehrseq.models.distributions.grid): the closed-form integrals of F² and S² over the full
 *   bins (masked by the bins of the targets), the bins of the targets and the exponential tail, and the gradient
 *   in log S, log λ, y and a (_grid_crps_rows.h);
 * - log-location-scale families, log-normal and Weibull (ehrseq.losses.functional.crps): Gauss–Legendre on the
 *   windows of the lower and tail terms, the power series below the Weibull's windows and the saturated parts,
 *   with the gradient in μ and log σ (_location_scale_rows.h);
 * - the next-visit code loss of pairs of visits (ehrseq.losses.functional.auxiliary): mean BCE over the
 *   vocabulary from the logit rows of the pairs, and its gradient written once into the whole table
 *   (_pair_bce_rows.h);
 * - the PMF (DeepHit) likelihood, competing risks included (ehrseq.losses.functional.deephit): log-sum-exps of the
 *   logit rows of the real visits over all outputs and over those the target keeps, and the gradient written once
 *   into the whole table (_mass_nll_rows.h);
 * - the log-likelihood of the piecewise-linear hazard at one duration per row (ehrseq.models.distributions.piecewise):
 *   the knots' log S, the target's bin, segment, density and the exponential tail, and the gradient in the logits
 *   (_linear_hazard_rows.h);
 * - the log-likelihood of Weibull mixtures (MENSA's per-event marginals, ehrseq.models.distributions.mixture) read
 *   from the packed parameter rows of the real visits: log f or log S of each mixture as one log-sum-exp over its
 *   components, and the gradient written once into the whole parameter table (_weibull_mixture_rows.h);
 * - at inference, in float32: the visit embedding of one step of a padded batch and one GRU step
 *   (ehrseq.models.encoders, _inference_rows.h), and the code-history term of the linear path at selected visits
 *   (ehrseq.models.model, _code_history_rows.h);
 * - the row gather that pads a batch from the flat visit table (ehrseq.data.sequence, _gather_rows.h);
 * - the encoding of a numeric feature column with missing values: standardised, carried forward, and its
 *   measurement history (ehrseq.data.features, _feature_rows.h).
 * Called through ctypes (ehrseq.models.distributions._native), which checks shapes, types and layout; rows
 * are split over POSIX threads. The module object below only makes the library importable as an (empty)
 * extension module, so that packaging tools find and build it like any other. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <stddef.h>
#if !defined(_WIN32) && !defined(_OPENMP)
#include <pthread.h>
#endif

#define MAX_BINS 512
/* Weibull mixtures: the most components, and the mixtures evaluated together in one vectorised block */
#define MAX_COMPONENTS 16
#define MIXTURE_BLOCK 32

/* On x86-64 with GCC 12 or later, the row loops are compiled for the x86-64 levels v4 (AVX-512), v3 (AVX2 + FMA)
 * and the baseline, and the loader picks the clone the processor runs (dispatch on its features). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__linux__)
#define ROWS_TARGETS __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ROWS_TARGETS
#endif

/* With glibc's vector math library (libmvec, glibc ≥ 2.35 on x86-64; setup.py defines EHRSEQ_LIBMVEC and links it),
 * the loops over quadrature nodes, vocabularies and mixtures call the vector variants of exp, expm1, log, log1p and
 * erfc (≤ 4 ulp). */
#if defined(EHRSEQ_LIBMVEC) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_MATH __attribute__((__simd__("notinbranch")))
VECTOR_MATH double exp(double);
VECTOR_MATH double expm1(double);
VECTOR_MATH double log(double);
VECTOR_MATH double erfc(double);
VECTOR_MATH double log1p(double);
VECTOR_MATH float expf(float);
VECTOR_MATH float expm1f(float);
VECTOR_MATH float logf(float);
VECTOR_MATH float erfcf(float);
VECTOR_MATH float log1pf(float);
#endif

/* Helpers of the row loops, inlined into each of their clones (so that they are compiled for its level too). */
#if defined(__GNUC__)
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

/* A row of `width` values of `size` bytes of a gradient table whose other rows are zero: `selected` (the row of the
 * selection it takes its values from) when ≥ 0, else the row is zeroed and −1 returned. */
INLINE int64_t selected_or_zeroed(void *row, int64_t selected, int64_t width, size_t size) {
    if (selected < 0) memset(row, 0, (size_t)width * size);
    return selected;
}

/* ehrseq.data.batch.PAD_INDEX: the code index that pads a visit's list of codes */
#define PAD_INDEX 0

/* Whether code k of a visit's listed codes counts in its multi-hot target: not the padding index, and not listed
 * before it. */
INLINE int counted_once(const int64_t *listed, int64_t k) {
    if (listed[k] == PAD_INDEX) return 0;
    for (int64_t j = 0; j < k; ++j)
        if (listed[j] == listed[k]) return 0;
    return 1;
}

#define LOG_TWO 0.69314718055994530942
#define LOG_SQRT_TWO_PI 0.91893853320467274178
#define SQRT_HALF 0.70710678118654752440
#define PI_VALUE 3.14159265358979323846
/* the constants of ehrseq.losses.functional.crps: _NORMAL_SATURATED, _GUMBEL_SATURATED, _GUMBEL_SERIES_END */
#define NORMAL_SATURATED 6.5
#define GUMBEL_SATURATED 3.7
#define GUMBEL_SERIES_END (-3.0)
#define FMIN(a, b) ((a) < (b) ? (a) : (b))
#define FMAX(a, b) ((a) > (b) ? (a) : (b))
/* GLUE(name, SUFFIX): the typed name of a row function or argument struct in the *_rows.h headers */
#define GLUE_(a, b) a##_##b
#define GLUE(a, b) GLUE_(a, b)

#define REAL float
#define SUFFIX f32
#define CUT 1e-2f
#define EXP expf
#define EXPM1 expm1f
#define FABS fabsf
#include "_grid_crps_rows.h"

#define REAL double
#define SUFFIX f64
#define CUT 1e-4
#define EXP exp
#define EXPM1 expm1
#define FABS fabs
#include "_grid_crps_rows.h"

/* the erfc arguments are capped where erfc is still a normal number (_ERFC_CAP) */
#define REAL float
#define SUFFIX f32
#define EXP expf
#define EXPM1 expm1f
#define LOG logf
#define ERFC erfcf
#define SQRT sqrtf
#define ERFC_CAP 9.0f
#define LEAST FLT_MIN
#include "_location_scale_rows.h"

#define REAL double
#define SUFFIX f64
#define EXP exp
#define EXPM1 expm1
#define LOG log
#define ERFC erfc
#define SQRT sqrt
#define ERFC_CAP 26.0
#define LEAST DBL_MIN
#include "_location_scale_rows.h"

#define REAL float
#define SUFFIX f32
#define EXP expf
#define LOG1P log1pf
#define EXP_LIMIT 86.0f
#include "_pair_bce_rows.h"

#define REAL double
#define SUFFIX f64
#define EXP exp
#define LOG1P log1p
#define EXP_LIMIT 700.0
#include "_pair_bce_rows.h"

#define REAL float
#define SUFFIX f32
#define EXP expf
#define LOG logf
#define EXP_LIMIT 86.0f
#include "_mass_nll_rows.h"

#define REAL double
#define SUFFIX f64
#define EXP exp
#define LOG log
#define EXP_LIMIT 700.0
#include "_mass_nll_rows.h"

#define REAL float
#define SUFFIX f32
#define EXP expf
#define LOG logf
#define LOG1P log1pf
#include "_linear_hazard_rows.h"

#define REAL double
#define SUFFIX f64
#define EXP exp
#define LOG log
#define LOG1P log1p
#include "_linear_hazard_rows.h"

#define REAL float
#define SUFFIX f32
#define EXP expf
#define LOG logf
#define EXP_LIMIT 86.0f
#define LARGEST FLT_MAX
#include "_weibull_mixture_rows.h"

#define REAL double
#define SUFFIX f64
#define EXP exp
#define LOG log
#define EXP_LIMIT 700.0
#define LARGEST DBL_MAX
#include "_weibull_mixture_rows.h"

#include "_inference_rows.h"
#include "_code_history_rows.h"
#include "_gather_rows.h"
#include "_feature_rows.h"
typedef struct {
    void (*rows)(const void *, int64_t, int64_t);
    const void *args;
    int64_t first, last;
} Task;

static void rows_f32_untyped(const void *a, int64_t first, int64_t last) { crps_rows_f32((const CrpsArgs_f32 *)a, first, last); }
static void rows_f64_untyped(const void *a, int64_t first, int64_t last) { crps_rows_f64((const CrpsArgs_f64 *)a, first, last); }
static void location_scale_f32_untyped(const void *a, int64_t first, int64_t last) {
    location_scale_rows_f32((const LocationScaleArgs_f32 *)a, first, last);
}
static void location_scale_f64_untyped(const void *a, int64_t first, int64_t last) {
    location_scale_rows_f64((const LocationScaleArgs_f64 *)a, first, last);
}
#define PAIR_BCE_UNTYPED(SUFFIX)                                                                                 \
    static void pair_bce_forward_##SUFFIX##_untyped(const void *a, int64_t first, int64_t last) {                \
        pair_bce_forward_rows_##SUFFIX((const PairBceArgs_##SUFFIX *)a, first, last);                            \
    }                                                                                                            \
    static void pair_bce_backward_##SUFFIX##_untyped(const void *a, int64_t first, int64_t last) {               \
        pair_bce_backward_rows_##SUFFIX((const PairBceArgs_##SUFFIX *)a, first, last);                           \
    }
PAIR_BCE_UNTYPED(f32)
PAIR_BCE_UNTYPED(f64)
#define MASS_NLL_UNTYPED(SUFFIX)                                                                                 \
    static void mass_nll_forward_##SUFFIX##_untyped(const void *a, int64_t first, int64_t last) {                \
        mass_nll_forward_rows_##SUFFIX((const MassNllArgs_##SUFFIX *)a, first, last);                            \
    }                                                                                                            \
    static void mass_nll_backward_##SUFFIX##_untyped(const void *a, int64_t first, int64_t last) {               \
        mass_nll_backward_rows_##SUFFIX((const MassNllArgs_##SUFFIX *)a, first, last);                           \
    }
MASS_NLL_UNTYPED(f32)
MASS_NLL_UNTYPED(f64)
static void linear_hazard_f32_untyped(const void *a, int64_t first, int64_t last) {
    linear_hazard_rows_f32((const LinearHazardArgs_f32 *)a, first, last);
}
static void linear_hazard_f64_untyped(const void *a, int64_t first, int64_t last) {
    linear_hazard_rows_f64((const LinearHazardArgs_f64 *)a, first, last);
}
#define WEIBULL_MIXTURE_UNTYPED(SUFFIX)                                                                          \
    static void weibull_mixture_forward_##SUFFIX##_untyped(const void *a, int64_t first, int64_t last) {         \
        weibull_mixture_forward_rows_##SUFFIX((const WeibullMixtureArgs_##SUFFIX *)a, first, last);              \
    }                                                                                                            \
    static void weibull_mixture_backward_##SUFFIX##_untyped(const void *a, int64_t first, int64_t last) {        \
        weibull_mixture_backward_rows_##SUFFIX((const WeibullMixtureArgs_##SUFFIX *)a, first, last);             \
    }
WEIBULL_MIXTURE_UNTYPED(f32)
WEIBULL_MIXTURE_UNTYPED(f64)

static void visit_embedding_untyped(const void *a, int64_t first, int64_t last) {
    visit_embedding_rows((const VisitEmbeddingArgs *)a, first, last);
}
static void code_history_untyped(const void *a, int64_t first, int64_t last) {
    code_history_rows((const CodeHistoryArgs *)a, first, last);
}
static void gather_rows_untyped(const void *a, int64_t first, int64_t last) {
    gather_rows((const GatherArgs *)a, first, last);
}
static void gru_step_untyped(const void *a, int64_t first, int64_t last) {
    gru_step_rows((const GruStepArgs *)a, first, last);
}
#if !defined(_WIN32) && !defined(_OPENMP)
static void *run_task(void *task) {
    const Task *t = (const Task *)task;
    t->rows(t->args, t->first, t->last);
    return NULL;
}
#endif

#define MAX_THREADS 64

/* Rows split into `threads` equal ranges. Built with OpenMP (Linux, see setup.py), the ranges run as one parallel
 * region: the library then shares the OpenMP runtime that PyTorch loaded first (libgomp.so.1), so its threads are
 * PyTorch's own — threads of our own would compete for the cores with PyTorch's, which spin a while after each of
 * their parallel regions. Otherwise on POSIX threads, the first range on the calling thread. Returns 0, or −1 if a
 * POSIX thread could not be started (its rows are then computed on the calling thread: the result is complete
 * either way). */
static int run_rows(void (*rows)(const void *, int64_t, int64_t), const void *args, int64_t count, int threads) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > count) threads = count > 0 ? (int)count : 1;
#if defined(_WIN32) && !defined(_OPENMP)
    threads = 1;
#endif
    Task tasks[MAX_THREADS];
    const int64_t step = (count + threads - 1) / threads;
    for (int i = 0; i < threads; ++i) {
        tasks[i].rows = rows;
        tasks[i].args = args;
        tasks[i].first = i * step < count ? i * step : count;
        tasks[i].last = (i + 1) * step < count ? (i + 1) * step : count;
    }
    int status = 0;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int i = 0; i < threads; ++i) rows(args, tasks[i].first, tasks[i].last);
#else
#ifndef _WIN32
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int i = 1; i < threads; ++i) started[i] = pthread_create(&ids[i], NULL, run_task, &tasks[i]) == 0;
#endif
    rows(args, tasks[0].first, tasks[0].last);
#ifndef _WIN32
    for (int i = 1; i < threads; ++i) {
        if (started[i]) {
            pthread_join(ids[i], NULL);
        } else {
            rows(args, tasks[i].first, tasks[i].last);
            status = -1;
        }
    }
#endif
#endif
    return status;
}

/* The entry points: every table row-major and contiguous, of the sizes stated in CrpsArgs; grad, rate_grad and
 * at_a are written when grad is not NULL, cdf_squared when it is not NULL. Returns 0 (or −1, see run_rows), or −2
 * for a number of bins outside 1..MAX_BINS (nothing written). */
#define DEFINE_ENTRY(REAL, SUFFIX)                                                                              \
    int ehrseq_grid_crps_##SUFFIX(int64_t rows, int64_t bins, const REAL *log_s, const REAL *knots,              \
                                   const REAL *drops, const REAL *hazards, const REAL *grid, const REAL *y,      \
                                   const REAL *start, const REAL *log_rate, REAL *score, REAL *grad,             \
                                   REAL *rate_grad, REAL *at_a, REAL *cdf_squared, int threads) {                \
        if (bins < 1 || bins > MAX_BINS || rows < 0) return -2;                                                  \
        CrpsArgs_##SUFFIX args = {rows,     bins,  log_s, knots, drops, hazards,  grid,       y,                \
                                  start,    log_rate, score, grad, rate_grad, at_a, cdf_squared};                \
        return run_rows(rows_##SUFFIX##_untyped, &args, rows, threads);                                          \
    }

DEFINE_ENTRY(float, f32)
DEFINE_ENTRY(double, f64)

/* The log-location-scale entry points (the arguments of LocationScaleArgs, in its order): 0, −1 (see run_rows), or
 * −2 for a kind other than 0 or 1, no nodes, or a series of negative length (nothing written). */
#define DEFINE_LOCATION_SCALE_ENTRY(REAL, SUFFIX)                                                                 \
    int ehrseq_location_scale_crps_##SUFFIX(int64_t rows, int kind, int points, const REAL *nodes,                 \
                                             const REAL *weights, int terms, const REAL *series, const REAL *loc,  \
                                             const REAL *log_scale, const REAL *y, const REAL *start, REAL *score, \
                                             REAL *grad_loc, REAL *grad_log_scale, int threads) {                  \
        if (rows < 0 || (kind != 0 && kind != 1) || points < 1 || terms < 0) return -2;                           \
        LocationScaleArgs_##SUFFIX args = {rows, kind,  points, nodes, weights,  terms,   series,                 \
                                           loc,  log_scale, y, start, score, grad_loc, grad_log_scale};           \
        return run_rows(location_scale_##SUFFIX##_untyped, &args, rows, threads);                                  \
    }

DEFINE_LOCATION_SCALE_ENTRY(float, f32)
DEFINE_LOCATION_SCALE_ENTRY(double, f64)

/* The pair code-loss entry points (the fields of PairBceArgs in its order; grad and pair_of NULL in the forward
 * pass): 0, −1 (see run_rows), or −2 for negative sizes (nothing written). The forward pass splits the pairs over
 * threads, the backward pass the rows of the table. */
#define DEFINE_PAIR_BCE_ENTRIES(REAL, SUFFIX)                                                                      \
    int ehrseq_pair_code_bce_forward_##SUFFIX(int64_t total_rows, int64_t vocabulary, int64_t pairs, int64_t k,  \
                                               const REAL *logits, const int64_t *rows, const int64_t *codes,     \
                                               REAL *loss, int threads) {                                          \
        if (total_rows < 0 || vocabulary < 1 || pairs < 0 || k < 0) return -2;                                   \
        PairBceArgs_##SUFFIX args = {total_rows, vocabulary, pairs, k, logits, rows, codes, NULL, NULL, loss};    \
        return run_rows(pair_bce_forward_##SUFFIX##_untyped, &args, pairs, threads);                              \
    }                                                                                                            \
    int ehrseq_pair_code_bce_backward_##SUFFIX(int64_t total_rows, int64_t vocabulary, int64_t pairs, int64_t k, \
                                                const REAL *logits, const int64_t *rows, const int64_t *codes,    \
                                                const REAL *grad, const int64_t *pair_of, REAL *table,             \
                                                int threads) {                                                      \
        if (total_rows < 0 || vocabulary < 1 || pairs < 0 || k < 0) return -2;                                   \
        PairBceArgs_##SUFFIX args = {total_rows, vocabulary, pairs, k, logits, rows, codes, grad, pair_of, table}; \
        return run_rows(pair_bce_backward_##SUFFIX##_untyped, &args, total_rows, threads);                        \
    }

DEFINE_PAIR_BCE_ENTRIES(float, f32)
DEFINE_PAIR_BCE_ENTRIES(double, f64)

/* The PMF likelihood entry points (the fields of MassNllArgs in its order; grad and visit_of NULL in the forward
 * pass): 0, −1 (see run_rows), or −2 for sizes that are not K·L + 1 outputs (nothing written). */
#define DEFINE_MASS_NLL_ENTRIES(REAL, SUFFIX)                                                                      \
    int ehrseq_mass_nll_forward_##SUFFIX(int64_t total_rows, int64_t outputs, int64_t visits, int64_t bins,       \
                                          const REAL *logits, const int64_t *rows, const int64_t *index,          \
                                          const int64_t *threshold, REAL *sums, REAL *loss, int threads) {        \
        if (total_rows < 0 || visits < 0 || bins < 1 || outputs < bins + 1 || (outputs - 1) % bins) return -2;   \
        MassNllArgs_##SUFFIX args = {total_rows, outputs, visits, bins, logits, rows, index, threshold, sums,     \
                                     NULL, NULL, loss};                                                           \
        return run_rows(mass_nll_forward_##SUFFIX##_untyped, &args, visits, threads);                             \
    }                                                                                                            \
    int ehrseq_mass_nll_backward_##SUFFIX(int64_t total_rows, int64_t outputs, int64_t visits, int64_t bins,      \
                                           const REAL *logits, const int64_t *rows, const int64_t *index,         \
                                           const int64_t *threshold, REAL *sums, const REAL *grad,               \
                                           const int64_t *visit_of, REAL *table, int threads) {                  \
        if (total_rows < 0 || visits < 0 || bins < 1 || outputs < bins + 1 || (outputs - 1) % bins) return -2;   \
        MassNllArgs_##SUFFIX args = {total_rows, outputs, visits, bins, logits, rows, index, threshold, sums,     \
                                     grad, visit_of, table};                                                      \
        return run_rows(mass_nll_backward_##SUFFIX##_untyped, &args, total_rows, threads);                        \
    }

DEFINE_MASS_NLL_ENTRIES(float, f32)
DEFINE_MASS_NLL_ENTRIES(double, f64)

/* The piecewise-linear hazard entry points (the fields of LinearHazardArgs in its order; grad NULL: the value, else
 * its gradient): 0, −1 (see run_rows), or −2 for a number of bins outside 1..MAX_BINS (nothing written). */
#define DEFINE_LINEAR_HAZARD_ENTRY(REAL, SUFFIX)                                                                    \
    int ehrseq_linear_hazard_log_likelihood_##SUFFIX(int64_t rows, int64_t knots, const REAL *logits,              \
                                                      const REAL *grid, const REAL *y, const uint8_t *observed,    \
                                                      double log_unit, const REAL *grad, REAL *out, int threads) {  \
        if (rows < 0 || knots < 2 || knots > MAX_BINS + 1) return -2;                                            \
        LinearHazardArgs_##SUFFIX args = {rows, knots, logits, grid, y, observed, (REAL)log_unit, grad, out};    \
        return run_rows(linear_hazard_##SUFFIX##_untyped, &args, rows, threads);                                  \
    }

DEFINE_LINEAR_HAZARD_ENTRY(float, f32)
DEFINE_LINEAR_HAZARD_ENTRY(double, f64)

/* The Weibull-mixture likelihood entry points (the fields of WeibullMixtureArgs; unit NULL: the values only): 0, −1
 * (see run_rows), or −2 for negative sizes or a number of components outside 1..MAX_COMPONENTS (nothing written).
 * The forward pass splits the selected rows over threads, the backward pass the rows of the table. */
#define DEFINE_WEIBULL_MIXTURE_ENTRIES(REAL, SUFFIX)                                                                \
    int ehrseq_weibull_mixture_forward_##SUFFIX(int64_t total_rows, int64_t mixtures, int64_t components,         \
                                                 int64_t selected, const REAL *params, const int64_t *rows,       \
                                                 const REAL *y, const uint8_t *observed, double offset,           \
                                                 REAL *value, REAL *unit, int threads) {                          \
        if (total_rows < 0 || mixtures < 0 || selected < 0 || components < 1 || components > MAX_COMPONENTS)     \
            return -2;                                                                                           \
        WeibullMixtureArgs_##SUFFIX args = {total_rows, mixtures, components, selected, params, rows, y,         \
                                            observed, (REAL)offset, value, unit, NULL, NULL, NULL};               \
        return run_rows(weibull_mixture_forward_##SUFFIX##_untyped, &args, selected, threads);                    \
    }                                                                                                            \
    int ehrseq_weibull_mixture_backward_##SUFFIX(int64_t total_rows, int64_t mixtures, int64_t components,        \
                                                  int64_t selected, REAL *unit, const REAL *grad,                 \
                                                  const int64_t *selected_of, REAL *table, int threads) {         \
        if (total_rows < 0 || mixtures < 0 || selected < 0 || components < 1 || components > MAX_COMPONENTS)     \
            return -2;                                                                                           \
        WeibullMixtureArgs_##SUFFIX args = {total_rows, mixtures, components, selected, NULL, NULL, NULL, NULL,  \
                                            0, NULL, unit, grad, selected_of, table};                            \
        return run_rows(weibull_mixture_backward_##SUFFIX##_untyped, &args, total_rows, threads);                 \
    }

DEFINE_WEIBULL_MIXTURE_ENTRIES(float, f32)
DEFINE_WEIBULL_MIXTURE_ENTRIES(double, f64)

/* The inference entry points, float32 (the fields of VisitEmbeddingArgs and GruStepArgs in their order): 0, −1 (see
 * run_rows), −2 for sizes the kernels do not take (nothing written), or −3 for a categorical or code index outside
 * its table (the outputs are then not to be used). */
int ehrseq_visit_embedding_f32(int64_t patients, int64_t steps, int64_t step, int64_t width, int64_t numeric,
                               int64_t categorical, int64_t codes_per_visit, int64_t frequencies, int64_t vocabulary,
                               const float *time, const float *gap, const uint8_t *real, const float *values,
                               const uint8_t *missing, const int64_t *categorical_index,
                               const int64_t *categorical_offset, const int64_t *categorical_size,
                               const float *categorical_table, const int64_t *codes, const float *code_table,
                               const float *no_codes, const float *angular, double time_unit,
                               const float *time_weight, const float *numeric_weight, const float *bias,
                               const float *norm_weight, const float *norm_bias, double eps, float *sums,
                               float *normalised, int threads) {
    if (patients < 0 || steps < 1 || step < 0 || step >= steps || width < 1 || numeric < 0 || categorical < 0 ||
        codes_per_visit < 0 || frequencies < 0 || frequencies > MAX_FREQUENCIES || vocabulary < 0 ||
        2 * (1 + 2 * frequencies) + numeric + categorical + (codes_per_visit > 0 ? codes_per_visit : 1) > MAX_TERMS)
        return -2;
    int invalid = 0;
    VisitEmbeddingArgs args = {patients, steps, step, width, numeric, categorical, codes_per_visit, frequencies, time,
                               gap, real, values, missing, categorical_index, categorical_offset, categorical_size,
                               categorical_table, codes, vocabulary, code_table, no_codes, angular, (float)time_unit,
                               time_weight, numeric_weight, bias, norm_weight, norm_bias, (float)eps, sums,
                               normalised, &invalid};
    const int status = run_rows(visit_embedding_untyped, &args, patients, threads);
    return invalid ? -3 : status;
}

int ehrseq_gru_step_f32(int64_t batch, int64_t hidden, const float *inputs, const float *bias, const float *recurrent,
                        const float *bias_n, const float *previous, float *out, int threads) {
    if (batch < 0 || hidden < 1 || (recurrent == NULL) != (previous == NULL)) return -2;
    GruStepArgs args = {batch, hidden, inputs, bias, recurrent, bias_n, previous, out};
    return run_rows(gru_step_untyped, &args, batch, threads);
}

/* The code-history term at selected visits (the fields of CodeHistoryArgs in their order, but the flag): 0, −1 (see
 * run_rows), −2 for negative sizes (nothing written), −3 for a code outside [0, V) (the outputs are then not to be
 * used) or −4 where the working memory could not be allocated. */
int ehrseq_code_history_f32(int64_t selected, int64_t steps, int64_t codes_per_visit, int64_t vocabulary,
                            int64_t outputs, const int64_t *codes, const uint8_t *real, const int64_t *rows,
                            const int64_t *positions, const float *weight, float *out, int threads) {
    if (selected < 0 || steps < 1 || codes_per_visit < 0 || vocabulary < 0 || outputs < 1) return -2;
    int flag = 0;
    CodeHistoryArgs args = {selected, steps, codes_per_visit, vocabulary, outputs, codes, real, rows, positions,
                            weight, out, &flag};
    const int status = run_rows(code_history_untyped, &args, selected, threads);
    return flag == 1 ? -3 : flag == 2 ? -4 : status;
}

/* The row gather (the fields of GatherArgs in their order): 0, −1 (see run_rows), or −2 for an element size other
 * than 1, 4 or 8 bytes or negative sizes (nothing written). */
int ehrseq_gather_rows(int64_t count, int64_t columns, int64_t size, int64_t row_stride, int64_t column_stride,
                       const int64_t *dst, const int64_t *src, const void *array, void *out, int threads) {
    if (count < 0 || columns < 0 || (size != 1 && size != 4 && size != 8)) return -2;
    GatherArgs args = {count, columns, size, row_stride, column_stride, dst, src, (const char *)array, (char *)out};
    return run_rows(gather_rows_untyped, &args, count, threads);
}

/* One numeric feature column (the fields of FeatureArgs in their order), on the calling thread: 0, or −2 for a
 * negative row count, a std that is not positive and finite, or the history without its times (nothing written). */
int ehrseq_numeric_feature(int64_t rows, const double *values, const uint8_t *missing, const int64_t *patient,
                           const double *elapsed, double mean, double std, double unit, int locf, float *out,
                           float *since, float *ever) {
    if (rows < 0 || !(std > 0.0) || !isfinite(std) || ((since != NULL || ever != NULL) &&
                                                      (since == NULL || ever == NULL || elapsed == NULL || !(unit > 0.0))))
        return -2;
    FeatureArgs args = {rows, values, missing, patient, elapsed, mean, std, unit, locf, out, since, ever};
    numeric_feature(&args);
    return 0;
}

int ehrseq_visit_embedding_max_frequencies(void) { return MAX_FREQUENCIES; }

int ehrseq_visit_embedding_max_terms(void) { return MAX_TERMS; }

/* Raised whenever an entry point changes its arguments; the loader calls no library of another version. */
#define EHRSEQ_NATIVE_KERNELS_ABI 11

int ehrseq_native_kernels_abi(void) { return EHRSEQ_NATIVE_KERNELS_ABI; }

int ehrseq_grid_crps_max_bins(void) { return MAX_BINS; }

int ehrseq_weibull_mixture_max_components(void) { return MAX_COMPONENTS; }

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_native_kernels",
    .m_doc = "Native kernels of losses, inference and batch padding (loaded through ctypes).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__native_kernels(void) { return PyModule_Create(&module); }
