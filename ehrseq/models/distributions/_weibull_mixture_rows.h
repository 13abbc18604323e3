/* The log-likelihood of Weibull mixtures read in place from the packed parameter rows of the selected visits
 * (ehrseq.models.distributions.mixture.PackedWeibullMixture, MENSA's per-event marginals), and its gradient written
 * once into the whole parameter table, for one floating type: included twice by _native_kernels.c with REAL = float /
 * double, SUFFIX = f32 / f64 and the matching EXP, LOG, EXP_LIMIT and LARGEST (the largest finite value), which
 * _rows_end.h at the end of this file undefines. The PyTorch implementation (WeibullMixture.log_likelihood and
 * mixture._MixtureLogLikelihood, whose docstring states the math) is the reference.
 *
 * The table holds K mixtures per row (K = the events), each as [a_c ; ℓ_c ; log k_c] (c < C): gate logits, log-scales
 * less the offset o (log λ_c = ℓ_c + o) and log-shapes. Per selected row n and mixture k, with the duration y > 0 and
 * its flag δ, s = log y, w = softmax(a), z_c = min(k_c (s − log λ_c), cap) (cap = log LARGEST − 1, as in
 * weibull_log_cumulative_hazard), H_c = e^{z_c} and
 *   v_c = log w_c + log k_c + z_c − s − H_c  (δ: log f_c),   v_c = log w_c − H_c  (censored: log S_c),
 * the value is m = lse_c v_c (clamped at 0 when censored). Its gradient for an incoming gradient of 1 is, with the
 * responsibilities r_c = e^{v_c − m} (0 where the clamp binds) and the slopes σ_c = r_c ∂v_c/∂z_c = r_c (δ − H_c)
 * (0 where the cap binds),
 *   ∂m/∂a_c = r_c − w_c Σ_c' r_c',   ∂m/∂ℓ_c = −σ_c k_c,   ∂m/∂log k_c = δ r_c + σ_c z_c;
 * the forward pass writes it per mixture when asked ("unit", [selected, K, 3C]), and the backward pass scales it by
 * the incoming gradient into the selected rows of a table of the parameters' shape whose other rows are zero.
 * The mixtures are evaluated in blocks of MIXTURE_BLOCK, each loop over the block vectorised (components in the
 * outer loops). Terms e^{v_c − m} with v_c − m < −EXP_LIMIT are taken as 0 (they are below the rounding of the sum
 * they enter, and exp takes a path many times slower there); the gates' e^{a_c − max a} are floored at
 * e^{−EXP_LIMIT}. */

typedef struct {
    int64_t total_rows, mixtures, components, selected;
    const REAL *params;        /* [total_rows, mixtures, 3C] (forward) */
    const int64_t *rows;       /* r_n [selected], distinct (forward) */
    const REAL *y;             /* durations > 0 [selected, mixtures] (forward) */
    const uint8_t *observed;   /* δ [selected, mixtures] (forward) */
    REAL offset;               /* o (forward) */
    REAL *value;               /* m [selected, mixtures] (forward) */
    REAL *unit;                /* the gradient of each m [selected, mixtures, 3C]: written forward (unless NULL),
                                  read backward */
    const REAL *grad;          /* g [selected, mixtures] (backward) */
    const int64_t *selected_of; /* n of each row, −1 for rows not selected [total_rows] (backward) */
    REAL *table;               /* the gradient [total_rows, mixtures, 3C] (backward) */
} GLUE(WeibullMixtureArgs, SUFFIX);

/* The `count` ≤ MIXTURE_BLOCK mixtures first, first + 1, … (in the order of value): mixture j has its parameters at
 * params + at[j]. Writes their values and, unless unit is NULL, their gradients. The block's parameters are first
 * copied component-major (lanes past `count` hold harmless values), so that every loop below runs over whole blocks
 * of contiguous lanes. */
INLINE void GLUE(weibull_mixture_block, SUFFIX)(const GLUE(WeibullMixtureArgs, SUFFIX) *a, int64_t first, int count,
                                                const int64_t *restrict at) {
    const int64_t components = a->components, width = 3 * components;
    const REAL offset = a->offset, cap = (REAL)(log((double)LARGEST) - 1.0);
    /* rows 0..C−1: gate logits, C..2C−1: log-scales less the offset, 2C..3C−1: log-shapes; then their gradients */
    REAL param[3 * MAX_COMPONENTS][MIXTURE_BLOCK];
    REAL log_u[MIXTURE_BLOCK], flag[MIXTURE_BLOCK], top[MIXTURE_BLOCK], total[MIXTURE_BLOCK];
    REAL weight[MAX_COMPONENTS][MIXTURE_BLOCK], shape[MAX_COMPONENTS][MIXTURE_BLOCK];
    REAL value[MAX_COMPONENTS][MIXTURE_BLOCK], z[MAX_COMPONENTS][MIXTURE_BLOCK], hazard[MAX_COMPONENTS][MIXTURE_BLOCK];
    for (int j = 0; j < count; ++j) {
        const REAL *restrict source = a->params + at[j];
        for (int64_t c = 0; c < width; ++c) param[c][j] = source[c];
        log_u[j] = a->y[first + j];
        flag[j] = a->observed[first + j] ? (REAL)1 : (REAL)0;
    }
    for (int j = count; j < MIXTURE_BLOCK; ++j) {
        for (int64_t c = 0; c < width; ++c) param[c][j] = 0;
        log_u[j] = 1, flag[j] = 0;
    }
#pragma omp simd
    for (int j = 0; j < MIXTURE_BLOCK; ++j) log_u[j] = LOG(log_u[j]);
    /* w = softmax(a): e^{a_c − max a} into weight, their sum into total */
#pragma omp simd
    for (int j = 0; j < MIXTURE_BLOCK; ++j) top[j] = param[0][j], total[j] = 0;
    for (int64_t c = 1; c < components; ++c) {
#pragma omp simd
        for (int j = 0; j < MIXTURE_BLOCK; ++j) top[j] = FMAX(top[j], param[c][j]);
    }
    for (int64_t c = 0; c < components; ++c) {
#pragma omp simd
        for (int j = 0; j < MIXTURE_BLOCK; ++j) {
            weight[c][j] = EXP(FMAX(param[c][j] - top[j], -EXP_LIMIT));
            total[j] += weight[c][j];
        }
    }
#pragma omp simd
    for (int j = 0; j < MIXTURE_BLOCK; ++j) top[j] += LOG(total[j]), total[j] = 1 / total[j]; /* lse(a), 1/Σ */
    /* v_c, then m = lse_c v_c into top */
    for (int64_t c = 0; c < components; ++c) {
#pragma omp simd
        for (int j = 0; j < MIXTURE_BLOCK; ++j) {
            const REAL log_shape = param[2 * components + c][j];
            const REAL k = EXP(log_shape);
            const REAL capped = FMIN((log_u[j] - (param[components + c][j] + offset)) * k, cap);
            const REAL h = EXP(capped);
            const REAL density = (log_shape - log_u[j]) + capped - h;
            shape[c][j] = k;
            z[c][j] = capped;
            hazard[c][j] = h;
            value[c][j] = (flag[j] != 0 ? density : -h) + (param[c][j] - top[j]);
            weight[c][j] *= total[j];
        }
    }
#pragma omp simd
    for (int j = 0; j < MIXTURE_BLOCK; ++j) top[j] = value[0][j], total[j] = 0;
    for (int64_t c = 1; c < components; ++c) {
#pragma omp simd
        for (int j = 0; j < MIXTURE_BLOCK; ++j) top[j] = FMAX(top[j], value[c][j]);
    }
    for (int64_t c = 0; c < components; ++c) {
#pragma omp simd
        for (int j = 0; j < MIXTURE_BLOCK; ++j) {
            const REAL x = value[c][j] - top[j];
            const REAL e = EXP(FMAX(x, -EXP_LIMIT));
            value[c][j] = x >= -EXP_LIMIT ? e : 0; /* e^{v_c − max v} */
            total[j] += value[c][j];
        }
    }
#pragma omp simd
    for (int j = 0; j < MIXTURE_BLOCK; ++j) top[j] += LOG(total[j]), total[j] = 1 / total[j]; /* m, 1/Σ */
    for (int j = 0; j < count; ++j) a->value[first + j] = flag[j] != 0 ? top[j] : FMIN(top[j], (REAL)0);
    if (!a->unit) return;
    /* the gradient: 1/Σ where the clamp does not bind (else 0) into total, r_c into value, Σ_c r_c into log_u */
#pragma omp simd
    for (int j = 0; j < MIXTURE_BLOCK; ++j) total[j] = flag[j] != 0 || top[j] <= 0 ? total[j] : (REAL)0, log_u[j] = 0;
    for (int64_t c = 0; c < components; ++c) {
#pragma omp simd
        for (int j = 0; j < MIXTURE_BLOCK; ++j) {
            const REAL r = value[c][j] * total[j];
            const REAL slope = z[c][j] >= cap ? (REAL)0 : r * (flag[j] - hazard[c][j]);
            param[components + c][j] = -slope * shape[c][j];
            param[2 * components + c][j] = flag[j] * r + slope * z[c][j];
            value[c][j] = r;
            log_u[j] += r;
        }
    }
    for (int64_t c = 0; c < components; ++c) {
#pragma omp simd
        for (int j = 0; j < MIXTURE_BLOCK; ++j) param[c][j] = value[c][j] - weight[c][j] * log_u[j];
    }
    for (int j = 0; j < count; ++j) {
        REAL *restrict target = a->unit + (first + j) * width;
        for (int64_t c = 0; c < width; ++c) target[c] = param[c][j];
    }
}

/* Forward: the mixtures of selected rows [first, last). */
ROWS_TARGETS static void GLUE(weibull_mixture_forward_rows, SUFFIX)(const GLUE(WeibullMixtureArgs, SUFFIX) *a,
                                                                     int64_t first, int64_t last) {
    const int64_t mixtures = a->mixtures, width = 3 * a->components;
    int64_t at[MIXTURE_BLOCK];
    int count = 0;
    int64_t start = first * mixtures; /* the first mixture of the block */
    for (int64_t n = first; n < last; ++n) {
        for (int64_t k = 0, row = a->rows[n] * mixtures * width; k < mixtures; ++k, row += width) {
            at[count] = row;
            if (++count == MIXTURE_BLOCK) {
                GLUE(weibull_mixture_block, SUFFIX)(a, start, count, at);
                start += count;
                count = 0;
            }
        }
    }
    if (count) GLUE(weibull_mixture_block, SUFFIX)(a, start, count, at);
}

/* Backward: rows [first, last) of the [total_rows, mixtures, 3C] gradient, g_{n,k} times the unit gradients of the
 * selected rows, zeros in the others. */
ROWS_TARGETS static void GLUE(weibull_mixture_backward_rows, SUFFIX)(const GLUE(WeibullMixtureArgs, SUFFIX) *a,
                                                                      int64_t first, int64_t last) {
    const int64_t mixtures = a->mixtures, width = 3 * a->components;
    for (int64_t r = first; r < last; ++r) {
        REAL *restrict row = a->table + r * mixtures * width;
        const int64_t n = selected_or_zeroed(row, a->selected_of[r], mixtures * width, sizeof(REAL));
        if (n < 0) continue;
        const REAL *restrict unit = a->unit + n * mixtures * width;
        for (int64_t k = 0; k < mixtures; ++k) {
            const REAL scale = a->grad[n * mixtures + k];
#pragma omp simd
            for (int64_t c = 0; c < width; ++c) row[k * width + c] = scale * unit[k * width + c];
        }
    }
}

#include "_rows_end.h"
