/* Native kernel of the Survival-CRPS of constant-hazard grids (ehrseq.models.distributions.grid): per row, the
 * closed-form integrals of F² and S² over the full bins (masked by the bins of the targets), the bins of the
 * targets and the exponential tail, and the gradient in log S, log λ, y and a — one pass per row instead of
 * some hundred whole-tensor operations.
 * Called through ctypes (ehrseq.models.distributions._native), which checks shapes, types and layout; rows
 * are split over POSIX threads. The module object below only makes the library importable as an (empty)
 * extension module, so that packaging tools find and build it like any other. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stddef.h>
#ifndef _WIN32
#include <pthread.h>
#endif

#define MAX_BINS 512

/* On x86-64 with GCC 12 or later, the row loops are compiled for the x86-64 levels v4 (AVX-512), v3 (AVX2 + FMA)
 * and the baseline, and the loader picks the clone the processor runs (dispatch on its features). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__linux__)
#define ROWS_TARGETS __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ROWS_TARGETS
#endif

#define LOG_TWO 0.69314718055994530942

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

typedef struct {
    void (*rows)(const void *, int64_t, int64_t);
    const void *args;
    int64_t first, last;
} Task;

static void rows_f32_untyped(const void *a, int64_t first, int64_t last) { crps_rows_f32((const CrpsArgs_f32 *)a, first, last); }
static void rows_f64_untyped(const void *a, int64_t first, int64_t last) { crps_rows_f64((const CrpsArgs_f64 *)a, first, last); }

#ifndef _WIN32
static void *run_task(void *task) {
    const Task *t = (const Task *)task;
    t->rows(t->args, t->first, t->last);
    return NULL;
}
#endif

#define MAX_THREADS 64

/* Rows split into `threads` equal ranges, the first on the calling thread. Returns 0, or −1 if a thread could
 * not be started (its rows are then computed on the calling thread: the result is complete either way). */
static int run_rows(void (*rows)(const void *, int64_t, int64_t), const void *args, int64_t count, int threads) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > count) threads = count > 0 ? (int)count : 1;
#ifdef _WIN32
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

/* Raised whenever an entry point changes its arguments; the loader calls no library of another version. */
#define EHRSEQ_GRID_CRPS_ABI 1

int ehrseq_grid_crps_abi(void) { return EHRSEQ_GRID_CRPS_ABI; }

int ehrseq_grid_crps_max_bins(void) { return MAX_BINS; }

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_grid_crps",
    .m_doc = "Native kernel of the constant-hazard Survival-CRPS (loaded through ctypes).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__grid_crps(void) { return PyModule_Create(&module); }
