/* The next-visit code loss of pairs of visits (ehrseq.losses.functional.auxiliary._PairCodeBCE), for one floating
 * type: included twice by _native_kernels.c with REAL = float / double, SUFFIX = f32 / f64 and the matching EXP,
 * LOG1P and EXP_LIMIT, which _rows_end.h at the end of this file undefines. Per pair p, with z the logits row r_p (V values) and the codes
 * codes_pk listed at the next visit, of which keep_pk = 1 counts each distinct code once and never the padding
 * index (counted_once in _native_kernels.c; the multi-hot target y of the listed codes):
 *   loss_p = (1/V) [Σ_v softplus(z_v) − Σ_k keep_pk z_{codes_pk}],   softplus(z) = max(z, 0) + log1p(e^{−|z|}),
 * and its gradient (σ(z_v) − Σ_k keep_pk 1{v = codes_pk}) g_p / V written into row r_p of a [R, V] table whose
 * other rows are zero. The PyTorch implementation (_PairCodeBCE with the kernel switched off) is the reference.
 * Arguments of the exponentials are kept within ±EXP_LIMIT, where e^x is a normal number: beyond, exp takes a
 * path many times slower, and the terms it would give (e^{−|z|} < 1e-37 in float32) are below the rounding of
 * anything they are added to. */

typedef struct {
    int64_t total_rows, vocabulary, pairs, codes_per_pair;
    const REAL *logits;   /* [total_rows, vocabulary] */
    const int64_t *rows;  /* r_p [pairs], distinct */
    const int64_t *codes; /* [pairs, codes_per_pair], in 0..vocabulary − 1 (0: padding), in any order */
    const REAL *grad;     /* g_p [pairs] (backward) */
    const int64_t *pair_of; /* p of each row, −1 for rows of no pair [total_rows] (backward) */
    REAL *out;            /* loss [pairs] (forward) or the gradient [total_rows, vocabulary] (backward) */
} GLUE(PairBceArgs, SUFFIX);

/* Forward: pairs [first, last). */
ROWS_TARGETS static void GLUE(pair_bce_forward_rows, SUFFIX)(const GLUE(PairBceArgs, SUFFIX) *a, int64_t first,
                                                              int64_t last) {
    const int64_t v_count = a->vocabulary, k_count = a->codes_per_pair;
    for (int64_t p = first; p < last; ++p) {
        const REAL *restrict z = a->logits + a->rows[p] * v_count;
        REAL total = 0;
#pragma omp simd reduction(+ : total)
        for (int64_t v = 0; v < v_count; ++v) {
            const REAL magnitude = z[v] < 0 ? -z[v] : z[v];
            total += (z[v] > 0 ? z[v] : (REAL)0) + LOG1P(EXP(-(magnitude < EXP_LIMIT ? magnitude : EXP_LIMIT)));
        }
        const int64_t *listed = a->codes + p * k_count;
        REAL targeted = 0;
        for (int64_t k = 0; k < k_count; ++k)
            if (counted_once(listed, k)) targeted += z[listed[k]];
        a->out[p] = (total - targeted) / (REAL)v_count;
    }
}

/* Backward: rows [first, last) of the [total_rows, vocabulary] gradient. */
ROWS_TARGETS static void GLUE(pair_bce_backward_rows, SUFFIX)(const GLUE(PairBceArgs, SUFFIX) *a, int64_t first,
                                                               int64_t last) {
    const int64_t v_count = a->vocabulary, k_count = a->codes_per_pair;
    for (int64_t r = first; r < last; ++r) {
        REAL *restrict g = a->out + r * v_count;
        const int64_t p = selected_or_zeroed(g, a->pair_of[r], v_count, sizeof(REAL));
        if (p < 0) continue;
        const REAL *restrict z = a->logits + r * v_count;
        const REAL scale = a->grad[p] / (REAL)v_count;
#pragma omp simd
        for (int64_t v = 0; v < v_count; ++v) {
            const REAL minus = -z[v] < -EXP_LIMIT ? -EXP_LIMIT : (-z[v] > EXP_LIMIT ? EXP_LIMIT : -z[v]);
            g[v] = scale / (1 + EXP(minus));
        }
        const int64_t *listed = a->codes + p * k_count;
        for (int64_t k = 0; k < k_count; ++k)
            if (counted_once(listed, k)) g[listed[k]] -= scale;
    }
}

#include "_rows_end.h"
