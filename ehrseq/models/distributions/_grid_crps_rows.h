/* The Survival-CRPS of a constant-hazard grid and its gradient, for one floating type: included twice by
 * _native_kernels.c with REAL = float / double, SUFFIX = f32 / f64 and the matching EXP, EXPM1, FABS and CUT (which _rows_end.h,
 * included at the end of this file, undefines). The formulas are those of ehrseq.models.distributions.grid._ConstantHazardCRPS
 * (its docstring states the math); its PyTorch implementation (grid._pytorch_crps) runs the same terms as
 * whole-tensor operations. */

typedef struct {
    int64_t rows, bins;
    const REAL *log_s;     /* log S(τ_l) [rows, bins + 1] */
    const REAL *knots;     /* S(τ_l) = exp(log S(τ_l)) [rows, bins + 1] */
    const REAL *drops;     /* −ΔH_l ≤ 0 [rows, bins] */
    const REAL *hazards;   /* 1 − e^{−ΔH_l} [rows, bins] */
    const REAL *grid;      /* τ_0 < … < τ_L [bins + 1] */
    const REAL *y;         /* [rows] */
    const REAL *start;     /* [rows], +inf: no tail term */
    const REAL *log_rate;  /* log λ of the exponential tail [rows] */
    REAL *score;           /* [rows] */
    REAL *grad;            /* ∂score/∂log S [rows, bins + 1], or NULL: no gradients */
    REAL *rate_grad;       /* ∂score/∂log λ [rows] (with grad) */
    REAL *at_a;            /* S(a)², 0 without a tail term: −∂score/∂a [rows] (with grad) */
    REAL *cdf_squared;     /* F(y)² = ∂score/∂y [rows], or NULL */
} GLUE(CrpsArgs, SUFFIX);

/* Rows [first, last). The full bins: per bin l, with S_l, S_{l+1}, ΔH, h = 1 − e^{−ΔH} (both floored at 1e-30 as in
 * the reference), φ = h/ΔH, M = Δτ S_l φ, 2Q = M (S_l + S_{l+1}), the masks b = 1_{τ_{l+1} < y}, c = 1_{τ_l ≥ a}:
 *   score = ½ Σ_l [b (2Δτ − 4M + 2Q) + c 2Q]
 * and, when grad is given, −W = −Δτ S_l ψ(ΔH) (ψ blended below CUT as in grid._psi), 2R = S_l((M + W)e^{−ΔH} + W),
 *   ∂/∂log S_l     += (b + c)(2Q − R) − 2b(M − W)
 *   ∂/∂log S_{l+1} += (b + c) R − 2b W
 * then the bins of y and a and the exponential tail in closed form, as in the PyTorch implementation.      */
ROWS_TARGETS static void GLUE(crps_rows, SUFFIX)(const GLUE(CrpsArgs, SUFFIX) *a, int64_t first, int64_t last) {
    const int64_t bins = a->bins;
    const REAL cut = CUT, tiny = (REAL)1e-30, third = (REAL)1 / (REAL)3;
    const REAL *restrict grid = a->grid;
    REAL right[MAX_BINS];
    for (int64_t r = first; r < last; ++r) {
        const REAL *restrict s = a->knots + r * (bins + 1);
        const REAL *restrict drop = a->drops + r * bins;
        const REAL *restrict hazard = a->hazards + r * bins;
        const REAL y = a->y[r], start = a->start[r];
        REAL total = 0, before_count = 0, beyond_count = 0;
/* The terms of bin l shared by the loops with and without the gradient (two loops, so that each vectorises). */
#define BIN_TERMS                                                                  \
    const REAL width = grid[l + 1] - grid[l];                                      \
    const REAL increment = drop[l] < -tiny ? -drop[l] : tiny;                      \
    const REAL h = hazard[l] > tiny ? hazard[l] : tiny;                            \
    const REAL phi = h / increment;                                                \
    const REAL scaled = width * s[l];                                              \
    const REAL mass = phi * scaled;                                                \
    const REAL squared = (s[l] + s[l + 1]) * mass;                                 \
    const REAL before = y > grid[l + 1] ? (REAL)1 : (REAL)0;                       \
    const REAL beyond = grid[l] >= start ? (REAL)1 : (REAL)0;                      \
    total += before * (squared - 4 * mass + 2 * width) + beyond * squared;         \
    before_count += before;                                                        \
    beyond_count += beyond;
        if (!a->grad) {
#pragma omp simd reduction(+ : total, before_count, beyond_count)
            for (int64_t l = 0; l < bins; ++l) {
                BIN_TERMS
            }
        } else {
            REAL *restrict g = a->grad + r * (bins + 1);
#pragma omp simd reduction(+ : total, before_count, beyond_count)
            for (int64_t l = 0; l < bins; ++l) {
                BIN_TERMS
                const REAL decay = 1 - h;
                const REAL floor = increment > cut ? increment : cut;
                const REAL neg_w = ((phi - decay) + (floor - increment) * ((REAL)1.5 - increment) * third) * scaled / -floor;
                const REAL double_r = ((mass - neg_w) * decay - neg_w) * s[l];
                const REAL either = before + beyond;
                g[l] = either * (squared - (REAL)0.5 * double_r) - 2 * before * (mass + neg_w);
                right[l] = (REAL)0.5 * double_r * either + 2 * before * neg_w;
            }
#pragma omp simd
            for (int64_t l = 1; l < bins; ++l) g[l] += right[l - 1];
            g[bins] = right[bins - 1];
        }
        /* y's own bin κ = #{l: τ_{l+1} < y} (L: beyond the grid) at offset e; a's bin κ_a = L − 1 − #{l < L: τ_l ≥ a}
         * when τ_0 < a ≤ τ_L, else L (a row without a tail term takes a = τ_L); the rates r of bins min(κ, L − 1) */
        const REAL *restrict ls = a->log_s + r * (bins + 1);
        const int has_tail = FABS(start) < (REAL)INFINITY, inside = has_tail && start <= grid[bins];
        /* both within 0..L whatever the inputs (the caller refuses y, a ≤ 0 and NaN: no index is ever out of range) */
        const int64_t k = (int64_t)before_count;
        const int64_t k_a = inside && beyond_count < bins ? bins - 1 - (int64_t)beyond_count : bins;
        const int64_t rk = k < bins - 1 ? k : bins - 1, rk_a = k_a < bins - 1 ? k_a : bins - 1;
        const REAL width = grid[rk + 1] - grid[rk], width_a = grid[rk_a + 1] - grid[rk_a];
        const REAL e = y - grid[k], e_a = (has_tail ? start : grid[bins]) - grid[k_a];
        const REAL rate = (ls[rk] - ls[rk + 1]) / width, rate_a = (ls[rk_a] - ls[rk_a + 1]) / width_a;
        const REAL w = inside ? width_a - e_a : (REAL)0; /* a's bin to its right knot */
        const REAL u = rate * e, u_a = w * rate_a * 2;
        /* φ(x) = (1 − e^{−x})/x by expm1 (floored at 1e-30 as grid._phi), and e^{−x} */
        const REAL safe = u > tiny ? u : tiny, safe_a = u_a > tiny ? u_a : tiny;
        const REAL drop1 = EXPM1(-safe), drop_a = EXPM1(-safe_a);
        const REAL phi1 = -drop1 / safe, phi_a = -drop_a / safe_a;
        const REAL decay1 = drop1 + 1, decay_a = drop_a + 1;
        const REAL phi2 = phi1 * (1 + decay1) * (REAL)0.5; /* φ(2re) */
        const REAL rate_tail = EXP(a->log_rate[r]);
        const REAL beyond = inside ? (REAL)0 : e_a; /* b − τ_L, b = max(a, τ_L) */
        const REAL *restrict knots = a->knots + r * (bins + 1);
        const REAL s1 = knots[k] * e, s2 = knots[k] * knots[k] * e; /* S_κ e, S_κ² e */
        const REAL at_a = has_tail ? EXP(2 * (ls[k_a] - rate_a * e_a)) : (REAL)0;
        /* E = S(b)²/(2λ), the exponential tail beyond max(a, τ_L) */
        const REAL tail = has_tail ? EXP(2 * (ls[bins] - rate_tail * beyond) - a->log_rate[r] - (REAL)LOG_TWO) : (REAL)0;
        const REAL partial = at_a * w * phi_a;
        a->score[r] = (REAL)0.5 * total + e - 2 * s1 * phi1 + s2 * phi2 + partial + tail;
        if (!a->grad) continue;
        /* ψ(x) = (φ(x) − e^{−x})/x blended with ½ − x/3 below CUT (grid._psi) */
        const REAL floor1 = u > cut ? u : cut, floor_a = u_a > cut ? u_a : cut;
        const REAL psi1 = (phi1 - decay1) / floor1 + (1 - u / floor1) * ((REAL)0.5 - u * third);
        const REAL psi_a = (phi_a - decay_a) / floor_a + (1 - u_a / floor_a) * ((REAL)0.5 - u_a * third);
        const REAL psi2 = (psi1 * (1 + decay1) + decay1 * phi1) * (REAL)0.25; /* ψ(2re) */
        /* through the knots of y's and a's bins, and through the ΔH of their rates */
        const REAL through_rate = (s1 * psi1 - s2 * psi2) * e * 2 / width;
        const REAL through_rate_a = (e_a * phi_a + w * psi_a) * at_a * w * -2 / width_a;
        REAL *restrict g = a->grad + r * (bins + 1);
        g[k] += (s2 * phi2 - s1 * phi1) * 2;
        g[k_a] += partial * 2;
        g[rk] += through_rate;
        g[rk_a] += through_rate_a;
        g[rk + 1] -= through_rate;
        g[rk_a + 1] -= through_rate_a;
        g[bins] += tail * 2;
        /* ∂E/∂log λ = −(2λ(b − τ_L) + 1)E; ∂/∂a = −S(a)²; ∂/∂y = F(y)² */
        a->rate_grad[r] = -(2 * rate_tail * beyond + 1) * tail;
        a->at_a[r] = at_a;
        if (a->cdf_squared) {
            const REAL cdf = EXPM1(ls[k] - rate * e);
            a->cdf_squared[r] = cdf * cdf;
        }
    }
}

#undef BIN_TERMS
#include "_rows_end.h"
