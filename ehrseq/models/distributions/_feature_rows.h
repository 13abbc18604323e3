/* One numeric feature column encoded for the model in one pass over the visit rows (ehrseq.data.features, the
 * columns with missing values): per row r (rows grouped by patient, time-ordered within),
 *   last(r) = the last row ≤ r of r's patient where the column was measured (none: −1),
 *   out[r]  = (x[last(r)] − mean) / std with carry-forward (`locf`), else (x[r] − mean) / std where measured;
 *             0 where there is no such value (before the first measurement; not measured without carry-forward),
 *   and with the measurement history (`since`, `ever` not NULL):
 *   since[r] = log1p((t[r] − t[last(r)]) / unit) / log1p(365.25) and ever[r] = 1 where last(r) ≥ 0, both 0 where not.
 * The arithmetic is that of the NumPy reference in ehrseq.data.features: double precision, rounded to float once. */

typedef struct {
    int64_t rows;
    const double *values;   /* [rows]: arbitrary where missing */
    const uint8_t *missing; /* [rows]: 1 where not measured */
    const int64_t *patient; /* [rows]: patient index (only where it changes matters) */
    const double *elapsed;  /* [rows]: time since origin, in the clock's units (NULL without the history) */
    double mean, std, unit;
    int locf;
    float *out, *since, *ever; /* [rows] each; since and ever NULL without the history */
} FeatureArgs;

/* Rows per block: the ages of a block are gathered in one pass (it carries the last measurement from row to row), then
 * their log1p taken in a second that has no dependence between rows (vectorised with glibc's vector math). */
#define FEATURE_BLOCK 512

ROWS_TARGETS
static void numeric_feature(const FeatureArgs *a) {
    const double year = log1p(365.25);
    double age[FEATURE_BLOCK];
    int64_t last = -1;
    for (int64_t first = 0; first < a->rows; first += FEATURE_BLOCK) {
        const int64_t count = a->rows - first < FEATURE_BLOCK ? a->rows - first : FEATURE_BLOCK;
        for (int64_t i = 0; i < count; ++i) {
            const int64_t r = first + i;
            if (r == 0 || a->patient[r] != a->patient[r - 1]) last = -1;
            if (!a->missing[r]) last = r;
            const int64_t source = a->locf ? last : (a->missing[r] ? -1 : r);
            a->out[r] = source >= 0 ? (float)((a->values[source] - a->mean) / a->std) : 0.0f;
            if (a->since != NULL) {
                age[i] = last >= 0 ? (a->elapsed[r] - a->elapsed[last]) / a->unit : -1.0;  /* −1: never measured */
                a->ever[r] = last >= 0 ? 1.0f : 0.0f;
            }
        }
        if (a->since == NULL) continue;
        float *since = a->since + first;
#pragma omp simd
        for (int64_t i = 0; i < count; ++i) since[i] = age[i] >= 0.0 ? (float)(log1p(age[i]) / year) : 0.0f;
    }
}
