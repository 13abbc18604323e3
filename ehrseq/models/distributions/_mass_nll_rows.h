/* The PMF (DeepHit) negative log-likelihood of the real visits, competing risks included
 * (ehrseq.losses.functional.deephit.pmf_nll), for one floating type: included twice by _native_kernels.c with
 * REAL = float / double, SUFFIX = f32 / f64 and the matching EXP, LOG and EXP_LIMIT, which _rows_end.h at the end of this file
 * undefines. Per real visit n, z the logit row r_n of C = K·L + 1 outputs (output c < K·L is bin c mod L of
 * cause c / L + 1, output C − 1 the mass beyond the grid), A_n the outputs whose mass its likelihood sums —
 * {index_n} for an event (index_n ≥ 0), else every output of bin ≥ threshold_n and the last one:
 *   loss_n = lse(z) − lse(z on A_n),
 * and the gradient g_n (softmax(z) − softmax(z restricted to A_n)) written into row r_n of a [R, C] table whose
 * other rows are zero. The PyTorch implementation (pmf_nll's operations with the kernel switched off) is the
 * reference. Arguments of the exponentials are kept above −EXP_LIMIT (e^x a normal number): below, exp takes a
 * path many times slower, and the terms it would give are below the rounding of the sums they enter. */

typedef struct {
    int64_t total_rows, outputs, visits, bins;
    const REAL *logits;       /* [total_rows, outputs] */
    const int64_t *rows;      /* r_n [visits], distinct */
    const int64_t *index;     /* the event's output, or −1 when censored [visits] */
    const int64_t *threshold; /* censored: the first bin whose outputs are kept (≤ bins) [visits] */
    REAL *sums;               /* lse(z) and lse(z on A) [visits, 2]: written forward, read backward */
    const REAL *grad;         /* g_n [visits] (backward) */
    const int64_t *visit_of;  /* n of each row, −1 for rows of no real visit [total_rows] (backward) */
    REAL *out;                /* loss [visits] (forward) or the gradient [total_rows, outputs] (backward) */
} GLUE(MassNllArgs, SUFFIX);

/* lse over z[from .. to) with the running maximum and sum updated (two passes over the slice). */
INLINE void GLUE(slice_lse, SUFFIX)(const REAL *restrict z, int64_t from, int64_t to, REAL *maximum, REAL *total) {
    REAL m = *maximum;
    for (int64_t c = from; c < to; ++c) m = z[c] > m ? z[c] : m;
    REAL s = *total * EXP(*maximum - m > -EXP_LIMIT ? *maximum - m : -EXP_LIMIT);
#pragma omp simd reduction(+ : s)
    for (int64_t c = from; c < to; ++c) {
        const REAL x = z[c] - m;
        s += EXP(x > -EXP_LIMIT ? x : -EXP_LIMIT);
    }
    *maximum = m;
    *total = s;
}

ROWS_TARGETS static void GLUE(mass_nll_forward_rows, SUFFIX)(const GLUE(MassNllArgs, SUFFIX) *a, int64_t first,
                                                              int64_t last) {
    const int64_t outputs = a->outputs, bins = a->bins, causes = (outputs - 1) / bins;
    for (int64_t n = first; n < last; ++n) {
        const REAL *restrict z = a->logits + a->rows[n] * outputs;
        REAL m = z[0], s = 0;
        GLUE(slice_lse, SUFFIX)(z, 0, outputs, &m, &s);
        const REAL all = m + LOG(s);
        REAL kept;
        if (a->index[n] >= 0) {
            kept = z[a->index[n]];
        } else {
            REAL mk = z[outputs - 1], sk = 1; /* the mass beyond the grid is always kept */
            for (int64_t k = 0; k < causes; ++k) GLUE(slice_lse, SUFFIX)(z, k * bins + a->threshold[n], (k + 1) * bins, &mk, &sk);
            kept = mk + LOG(sk);
        }
        a->sums[2 * n] = all;
        a->sums[2 * n + 1] = kept;
        a->out[n] = all - kept;
    }
}

ROWS_TARGETS static void GLUE(mass_nll_backward_rows, SUFFIX)(const GLUE(MassNllArgs, SUFFIX) *a, int64_t first,
                                                               int64_t last) {
    const int64_t outputs = a->outputs, bins = a->bins, causes = (outputs - 1) / bins;
    for (int64_t r = first; r < last; ++r) {
        REAL *restrict g = a->out + r * outputs;
        const int64_t n = selected_or_zeroed(g, a->visit_of[r], outputs, sizeof(REAL));
        if (n < 0) continue;
        const REAL *restrict z = a->logits + r * outputs;
        const REAL all = a->sums[2 * n], kept = a->sums[2 * n + 1], scale = a->grad[n];
#pragma omp simd
        for (int64_t c = 0; c < outputs; ++c) {
            const REAL x = z[c] - all;
            g[c] = scale * EXP(x > -EXP_LIMIT ? x : -EXP_LIMIT);
        }
        if (a->index[n] >= 0) {
            g[a->index[n]] -= scale * EXP(z[a->index[n]] - kept); /* = scale */
            continue;
        }
        for (int64_t k = 0; k < causes; ++k) {
#pragma omp simd
            for (int64_t c = k * bins + a->threshold[n]; c < (k + 1) * bins; ++c) {
                const REAL x = z[c] - kept;
                g[c] -= scale * EXP(x > -EXP_LIMIT ? x : -EXP_LIMIT);
            }
        }
        g[outputs - 1] -= scale * EXP(z[outputs - 1] - kept > -EXP_LIMIT ? z[outputs - 1] - kept : -EXP_LIMIT);
    }
}

#include "_rows_end.h"
