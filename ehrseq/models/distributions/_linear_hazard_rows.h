/* The log-likelihood of the piecewise-linear hazard (ehrseq.models.distributions.piecewise.PiecewiseLinearHazard)
 * at one duration per row, and its gradient in the logits, for one floating type: included twice by
 * _native_kernels.c with REAL = float / double, SUFFIX = f32 / f64 and the matching EXP, LOG, LOG1P, which _rows_end.h
 * at the end of this file undefines. The PyTorch implementation (the family's log_survival and log_density) is the reference.
 *
 * Per row: rates r_j = e^{z_j}/u (j = 0..L), c_l = Δτ_l/2, log S_0 = 0, log S_{l+1} = log S_l − c_l (r_l + r_{l+1}).
 * With k the bin of y (τ_k < y ≤ τ_{k+1}, clamped to 0..L−1), t = min(max(y − τ_k, 0), Δτ_k), w = t/Δτ_k and the
 * segment σ = t((1 − w/2) r_k + (w/2) r_{k+1}):
 *   inside (y ≤ τ_L): log S(y) = clamp(log S_k − σ, log S_{k+1}, log S_k) (log S_k at t = 0),
 *                     log f(y) = log((1 − w) r_k + w r_{k+1}) + log S_k − σ;
 *   beyond:           log S(y) = log S_L − r_L (y − τ_L),   log f(y) = log r_L + log S(y);
 * the value is log f where observed, else log S. Its gradient: ∂/∂z_m = d_m − r_m (c_m G_m + c_{m−1} G_{m−1}) with
 * g_j = ∂value/∂log S_j (at k, k + 1 or L), G_m = Σ_{j>m} g_j, and d_m the direct terms through σ, the rate of the
 * density and the tail. */

typedef struct {
    int64_t rows, knots;   /* knots = L + 1 */
    const REAL *logits;    /* z [rows, knots] */
    const REAL *grid;      /* τ_0 < … < τ_L [knots] */
    const REAL *y;         /* [rows], > 0 */
    const uint8_t *observed; /* [rows] */
    REAL log_unit;         /* log u */
    const REAL *grad;      /* incoming gradient [rows], or NULL: the forward pass */
    REAL *out;             /* the value [rows] (forward) or its gradient [rows, knots] (backward) */
} GLUE(LinearHazardArgs, SUFFIX);

ROWS_TARGETS static void GLUE(linear_hazard_rows, SUFFIX)(const GLUE(LinearHazardArgs, SUFFIX) *a, int64_t first,
                                                           int64_t last) {
    const int64_t knots = a->knots, bins = knots - 1;
    const REAL *restrict grid = a->grid;
    REAL rate[MAX_BINS + 1], log_s[MAX_BINS + 1];
    for (int64_t r = first; r < last; ++r) {
        const REAL *restrict z = a->logits + r * knots;
        const REAL y = a->y[r];
        const int observed = a->observed[r] != 0;
#pragma omp simd
        for (int64_t j = 0; j < knots; ++j) rate[j] = EXP(z[j] - a->log_unit);
        log_s[0] = 0;
        for (int64_t l = 0; l < bins; ++l) log_s[l + 1] = log_s[l] - (rate[l] + rate[l + 1]) * ((grid[l + 1] - grid[l]) / 2);
        /* the bin of y: the first knot ≥ y, minus one, within 0..L−1 */
        int64_t k = 0;
        while (k < bins - 1 && grid[k + 1] < y) ++k;
        const int inside = y <= grid[bins];
        const REAL width = grid[k + 1] - grid[k];
        const REAL offset = y - grid[k];
        const REAL t = offset < 0 ? (REAL)0 : (offset > width ? width : offset);
        const REAL w = t / width;
        const REAL segment = t * ((1 - w / 2) * rate[k] + (w / 2) * rate[k + 1]);
        REAL g_k = 0, g_next = 0, g_last = 0;  /* ∂value/∂log S at k, k + 1, L */
        REAL d_k = 0, d_next = 0, d_last = 0;  /* direct terms of z_k, z_{k+1}, z_L */
        REAL value;
        if (inside && observed) {
            /* log((1 − w) e^{a} + w e^{b}) with a = z_k − log u, b = z_{k+1} − log u, exact at w = 0 and 1 */
            const REAL za = z[k] - a->log_unit, zb = z[k + 1] - a->log_unit;
            REAL mix, share_a, share_b;
            if (w > 0 && w < 1) {
                const REAL left = za + LOG1P(-w), right = zb + LOG(w);
                const REAL top = left > right ? left : right;
                const REAL el = EXP(left - top), er = EXP(right - top);
                mix = top + LOG(el + er);
                share_a = el / (el + er);
                share_b = er / (el + er);
            } else if (w <= 0) {
                mix = za, share_a = 1, share_b = 0;
            } else {
                mix = zb, share_a = 0, share_b = 1;
            }
            value = mix + log_s[k] - segment;
            g_k = 1;
            d_k = share_a - t * (1 - w / 2) * rate[k];
            d_next = share_b - t * (w / 2) * rate[k + 1];
        } else if (inside) {
            const REAL raw = log_s[k] - segment;
            if (t <= 0) {
                value = log_s[k], g_k = 1;
            } else if (raw >= log_s[k]) {
                value = log_s[k], g_k = 1;
            } else if (raw <= log_s[k + 1]) {
                value = log_s[k + 1], g_next = 1;
            } else {
                value = raw, g_k = 1;
                d_k = -t * (1 - w / 2) * rate[k];
                d_next = -t * (w / 2) * rate[k + 1];
            }
        } else {
            const REAL beyond = y - grid[bins];
            value = log_s[bins] - rate[bins] * beyond;
            g_last = 1;
            d_last = (observed ? (REAL)1 : (REAL)0) - rate[bins] * beyond;
            if (observed) value += z[bins] - a->log_unit;
        }
        if (!a->grad) {
            a->out[r] = value;
            continue;
        }
        /* the gradient row: d_m − r_m (c_m G_m + c_{m−1} G_{m−1}), G_m = Σ_{j>m} g_j */
        const REAL scale = a->grad[r];
        REAL *restrict out = a->out + r * knots;
        REAL after_previous = 0; /* G_{m−1} */
        for (int64_t m = 0; m < knots; ++m) {
            const REAL after = (k > m ? g_k : 0) + (k + 1 > m ? g_next : 0) + (bins > m ? g_last : 0); /* G_m */
            const REAL c_m = m < bins ? (grid[m + 1] - grid[m]) / 2 : 0;
            const REAL c_previous = m > 0 ? (grid[m] - grid[m - 1]) / 2 : 0;
            out[m] = -rate[m] * (c_m * after + c_previous * after_previous);
            after_previous = after;
        }
        out[k] += d_k;
        out[k + 1] += d_next;
        out[bins] += d_last;
        for (int64_t m = 0; m < knots; ++m) out[m] *= scale;
    }
}

#include "_rows_end.h"
