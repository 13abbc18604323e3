/* The full bins of the Survival-CRPS of a constant-hazard grid, for one floating type: included twice by
 * _grid_crps.c with REAL = float / double and SUFFIX = f32 / f64. The formulas are those of
 * ehrseq.models.distributions.grid._ConstantHazardCRPS (its docstring states the math); the reference
 * implementation in PyTorch runs the same terms as whole-tensor operations. */

#define GLUE_(a, b) a##_##b
#define GLUE(a, b) GLUE_(a, b)

typedef struct {
    int64_t rows, bins;
    const REAL *knots;   /* S(τ_l) [rows, bins + 1] */
    const REAL *drops;   /* −ΔH_l ≤ 0 [rows, bins] */
    const REAL *hazards; /* 1 − e^{−ΔH_l} [rows, bins] */
    const REAL *grid;    /* τ_0 < … < τ_L [bins + 1] */
    const REAL *y;       /* [rows] */
    const REAL *start;   /* [rows], +inf: no tail term */
    REAL *score;         /* [rows] */
    int64_t *counts;     /* [2, rows]: #{l: τ_{l+1} < y}, #{l < L: τ_l ≥ a} */
    REAL *grad;          /* [rows, bins + 1] or NULL */
} GLUE(BinsArgs, SUFFIX);

/* Rows [first, last): per bin l, with S_l, S_{l+1}, ΔH, h = 1 − e^{−ΔH} (both floored at 1e-30 as in the
 * reference), φ = h/ΔH, M = Δτ S_l φ, 2Q = M (S_l + S_{l+1}), the masks b = 1_{τ_{l+1} < y}, c = 1_{τ_l ≥ a}:
 *   score = ½ Σ_l [b (2Δτ − 4M + 2Q) + c 2Q]
 * and, when grad is given, −W = −Δτ S_l ψ(ΔH) (ψ blended below CUT as in grid._psi), 2R = S_l((M + W)e^{−ΔH} + W),
 *   ∂/∂log S_l     += (b + c)(2Q − R) − 2b(M − W)
 *   ∂/∂log S_{l+1} += (b + c) R − 2b W                                                                     */
ROWS_TARGETS static void GLUE(bins_rows, SUFFIX)(const GLUE(BinsArgs, SUFFIX) *a, int64_t first, int64_t last) {
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
        if (!a->grad) {
#pragma omp simd reduction(+ : total, before_count, beyond_count)
            for (int64_t l = 0; l < bins; ++l) {
                const REAL width = grid[l + 1] - grid[l];
                const REAL increment = drop[l] < -tiny ? -drop[l] : tiny;
                const REAL h = hazard[l] > tiny ? hazard[l] : tiny;
                const REAL mass = h / increment * width * s[l];
                const REAL squared = (s[l] + s[l + 1]) * mass;
                const REAL before = y > grid[l + 1] ? (REAL)1 : (REAL)0;
                const REAL beyond = grid[l] >= start ? (REAL)1 : (REAL)0;
                total += before * (squared - 4 * mass + 2 * width) + beyond * squared;
                before_count += before;
                beyond_count += beyond;
            }
        } else {
            REAL *restrict g = a->grad + r * (bins + 1);
#pragma omp simd reduction(+ : total, before_count, beyond_count)
            for (int64_t l = 0; l < bins; ++l) {
                const REAL width = grid[l + 1] - grid[l];
                const REAL increment = drop[l] < -tiny ? -drop[l] : tiny;
                const REAL h = hazard[l] > tiny ? hazard[l] : tiny;
                const REAL phi = h / increment;
                const REAL scaled = width * s[l];
                const REAL mass = phi * scaled;
                const REAL squared = (s[l] + s[l + 1]) * mass;
                const REAL before = y > grid[l + 1] ? (REAL)1 : (REAL)0;
                const REAL beyond = grid[l] >= start ? (REAL)1 : (REAL)0;
                total += before * (squared - 4 * mass + 2 * width) + beyond * squared;
                before_count += before;
                beyond_count += beyond;
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
        a->score[r] = (REAL)0.5 * total;
        a->counts[r] = (int64_t)before_count;
        a->counts[a->rows + r] = (int64_t)beyond_count;
    }
}

#undef GLUE
#undef GLUE_
