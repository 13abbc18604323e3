/* The Survival-CRPS of a log-location-scale family and its gradient in μ and log σ, for one floating type:
 * included twice by _native_kernels.c with REAL = float / double, SUFFIX = f32 / f64, the matching EXP, EXPM1, LOG,
 * ERFC and SQRT, ERFC_CAP and LEAST (the smallest normal number), which _rows_end.h at the end of this file undefines.
 * The terms are those of ehrseq.losses.functional.crps._LocationScaleCRPS (its docstring states the math) and its
 * PyTorch implementation (_panel_moments, _series_moments and the noises' windows) is the reference: the windows,
 * the integrands at the Gauss–Legendre nodes, the series below the windows and the saturated parts are the same
 * formulas, evaluated per row in one pass instead of as whole-tensor operations. */

typedef struct {
    int64_t rows;
    int kind;               /* 0: ε standard normal (log-normal); 1: ε = log E, E ~ Exp(1) (Weibull) */
    int points;             /* Gauss–Legendre nodes per term, ≥ 1 */
    const REAL *nodes;      /* on [0, 1] [points] */
    const REAL *weights;    /* [points] */
    int terms;              /* kind 1: terms of the power series below the windows (≤ MAX_TERMS) */
    const REAL *series;     /* kind 1: [4, terms]: lower p², lower p·g, tail p², tail p·g coefficients */
    const REAL *loc;        /* μ [rows] */
    const REAL *log_scale;  /* log σ [rows] */
    const REAL *y;          /* [rows], > 0 */
    const REAL *start;      /* a [rows], +inf: no tail term */
    REAL *score;            /* [rows] */
    REAL *grad_loc;         /* ∂score/∂μ [rows] */
    REAL *grad_log_scale;   /* ∂score/∂log σ [rows] */
} GLUE(LocationScaleArgs, SUFFIX);

/* Gauss–Legendre on [lo, hi] of I₀ = ∫ e^{c+σx} p², I₁ = ∫ e^{c+σx} p g, I₂ = ∫ x e^{c+σx} p g (p = Φ(±x) of the
 * normal, `sign` = −side/√2 its erfc argument's factor), as _panel_moments with _normal_logs. */
INLINE void GLUE(normal_panel, SUFFIX)(REAL sign, REAL lo, REAL hi, REAL c, REAL sigma, const REAL *restrict nodes,
                                               const REAL *restrict weights, int points, REAL least, REAL moments[3]) {
    const REAL width = FMAX(hi - lo, (REAL)0);
    REAL i0 = 0, i1 = 0, i2 = 0;
#pragma omp simd reduction(+ : i0, i1, i2)
    for (int i = 0; i < points; ++i) {
        const REAL x = lo + width * nodes[i];
        const REAL log_p = LOG(ERFC(FMIN(sign * x, (REAL)ERFC_CAP))) - (REAL)LOG_TWO;
        const REAL log_g = (REAL)-0.5 * x * x - (REAL)LOG_SQRT_TWO_PI;
        const REAL scale = sigma * x + c;
        const REAL product = EXP(FMAX(log_p + log_g + scale, least));
        i0 += weights[i] * EXP(FMAX(2 * log_p + scale, least));
        i1 += weights[i] * product;
        i2 += weights[i] * product * x;
    }
    moments[0] = width * i0;
    moments[1] = width * i1;
    moments[2] = width * i2;
}

/* The same for the min-Gumbel law, t = eˣ, as _min_gumbel_integrands: lower term (p = G = −expm1(−t)) when
 * `lower`, else the tail term (p = 1 − G = e^{−t}). */
INLINE void GLUE(gumbel_panel, SUFFIX)(int lower, REAL lo, REAL hi, REAL c, REAL sigma, const REAL *restrict nodes,
                                               const REAL *restrict weights, int points, REAL least, REAL moments[3]) {
    const REAL width = FMAX(hi - lo, (REAL)0);
    REAL i0 = 0, i1 = 0, i2 = 0;
    if (lower) {
#pragma omp simd reduction(+ : i0, i1, i2)
        for (int i = 0; i < points; ++i) {
            const REAL x = lo + width * nodes[i];
            const REAL t = EXP(x);
            const REAL cdf = -EXPM1(-t);
            const REAL exponent = sigma * x + c;
            const REAL product = EXP(FMAX(exponent + x - t, least)) * cdf;
            i0 += weights[i] * EXP(FMAX(exponent, least)) * cdf * cdf;
            i1 += weights[i] * product;
            i2 += weights[i] * product * x;
        }
    } else {
#pragma omp simd reduction(+ : i0, i1, i2)
        for (int i = 0; i < points; ++i) {
            const REAL x = lo + width * nodes[i];
            const REAL exponent = sigma * x + c - 2 * EXP(x);
            const REAL product = EXP(FMAX(exponent + x, least));
            i0 += weights[i] * EXP(FMAX(exponent, least));
            i1 += weights[i] * product;
            i2 += weights[i] * product * x;
        }
    }
    moments[0] = width * i0;
    moments[1] = width * i1;
    moments[2] = width * i2;
}

/* The antiderivatives of _series_moments at x: with k = σ + n, A = Σ aₙ e^{c+kx}/k, B = Σ bₙ e^{c+kx}/k and
 * x·B − Σ bₙ e^{c+kx}/k², added to `moments` with the factor `sign` (+1 upper limit, −1 lower limit). */
INLINE void GLUE(series_add, SUFFIX)(const REAL *restrict squared, const REAL *restrict product, int terms,
                                             REAL x, REAL c, REAL sigma, REAL least, REAL sign, REAL moments[3]) {
    REAL a = 0, b = 0, b2 = 0;
    for (int n = 0; n < terms; ++n) {
        const REAL rate = sigma + (REAL)n;
        const REAL inverse = 1 / rate;
        const REAL scaled = EXP(FMAX(c + rate * x, least)) * inverse;
        a += squared[n] * scaled;
        b += product[n] * scaled;
        b2 += product[n] * scaled * inverse;
    }
    moments[0] += sign * a;
    moments[1] += sign * b;
    moments[2] += sign * (x * b - b2);
}

/* d with rate·d + 0.6·d² = 25 (_decay_distance) and the Mills-ratio approximation (_mills). */
INLINE REAL GLUE(decay, SUFFIX)(REAL rate) { return 50 / (rate + SQRT(rate * rate + 60)); }
INLINE REAL GLUE(mills, SUFFIX)(REAL v) { return (REAL)0.5 * (SQRT(v * v + (REAL)(8.0 / PI_VALUE)) - v); }

ROWS_TARGETS static void GLUE(location_scale_rows, SUFFIX)(const GLUE(LocationScaleArgs, SUFFIX) *a, int64_t first,
                                                            int64_t last) {
    const REAL least = (REAL)(log((double)LEAST) + 1.0); /* _log_tiny: exp of anything above is a normal number */
    const int terms = a->terms;
    const REAL *series = a->series;
    for (int64_t r = first; r < last; ++r) {
        const REAL loc = a->loc[r], sigma = EXP(a->log_scale[r]), y = a->y[r], start = a->start[r];
        if (!isfinite(loc) || !isfinite(sigma) || isnan(y) || isnan(start)) { /* NaN out (the clamps below drop NaN) */
            a->score[r] = a->grad_loc[r] = a->grad_log_scale[r] = (REAL)NAN;
            continue;
        }
        const REAL c = loc + a->log_scale[r];
        const REAL x_y = (LOG(y) - loc) / sigma;
        REAL lower[3], tail[3] = {0, 0, 0};
        REAL lo, hi;
        /* the lower term: the noise's window, the series below it, G ≡ 1 from the window's end to y */
        if (a->kind == 0) {
            const REAL from = FMIN(x_y, (REAL)0);
            lo = from - GLUE(decay, SUFFIX)(sigma + 2 * GLUE(mills, SUFFIX)(from));
            hi = FMIN(x_y, (REAL)NORMAL_SATURATED);
            GLUE(normal_panel, SUFFIX)((REAL)-SQRT_HALF, lo, hi, c, sigma, a->nodes, a->weights, a->points, least, lower);
        } else {
            lo = (REAL)GUMBEL_SERIES_END;
            hi = FMIN(x_y, (REAL)GUMBEL_SATURATED);
            GLUE(gumbel_panel, SUFFIX)(1, lo, hi, c, sigma, a->nodes, a->weights, a->points, least, lower);
            GLUE(series_add, SUFFIX)(series, series + terms, terms, FMIN(x_y, lo), c, sigma, least, 1, lower);
        }
        if (hi < x_y) lower[0] += y * -EXPM1(loc + sigma * hi - LOG(y));
        /* the tail term where there is one */
        if (start < (REAL)INFINITY) {
            const REAL x_a = (LOG(start) - loc) / sigma;
            if (a->kind == 0) {
                const REAL skew = (sigma * sigma - (REAL)(8.0 / PI_VALUE)) / (2 * sigma);
                const REAL peak = FMAX(x_a, FMAX(skew, (REAL)0));
                const REAL end = peak + GLUE(decay, SUFFIX)(FMAX(2 * GLUE(mills, SUFFIX)(-peak) - sigma, (REAL)0));
                lo = FMAX(x_a, (REAL)-NORMAL_SATURATED);
                hi = FMAX(end, x_a);
                GLUE(normal_panel, SUFFIX)((REAL)SQRT_HALF, lo, hi, c, sigma, a->nodes, a->weights, a->points, least, tail);
                if (lo > x_a) { /* S ≡ 1 from a to the window */
                    const REAL log_begin = loc + sigma * lo;
                    tail[0] += EXP(log_begin) * -EXPM1(LOG(start) - log_begin);
                }
            } else {
                lo = FMAX(x_a, (REAL)GUMBEL_SERIES_END);
                hi = FMAX(x_a, FMAX(LOG((REAL)0.5 * sigma), (REAL)0)) + (REAL)GUMBEL_SATURATED;
                GLUE(gumbel_panel, SUFFIX)(0, lo, hi, c, sigma, a->nodes, a->weights, a->points, least, tail);
                if (x_a < (REAL)GUMBEL_SERIES_END) { /* from a to the window: the series (none when a is in it) */
                    const REAL *tail_series = series + 2 * terms;
                    GLUE(series_add, SUFFIX)(tail_series, tail_series + terms, terms, (REAL)GUMBEL_SERIES_END, c, sigma,
                                             least, 1, tail);
                    GLUE(series_add, SUFFIX)(tail_series, tail_series + terms, terms, x_a, c, sigma, least, -1, tail);
                }
            }
        }
        a->score[r] = lower[0] + tail[0];
        a->grad_loc[r] = 2 * (tail[1] - lower[1]) / sigma;
        a->grad_log_scale[r] = 2 * (tail[2] - lower[2]);
    }
}

#include "_rows_end.h"
