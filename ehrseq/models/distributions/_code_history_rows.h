/* The code-history term of the linear path at selected visits of a padded batch (ehrseq.models.model.code_history_at),
 * float32: for each selection i = (patient row b, visit position p),
 *   out[i] = Σ_{c ∈ C} weight[c],  C = the distinct codes other than the padding index (0) listed at the real visits
 *                                      m ≤ p of row b (codes [B, M, K], mask [B, M]),
 * summed in the order of their first records (visit by visit, the listed order within a visit). A code outside
 * [0, V) is not read: the flag is set to 1 (the outputs are then not to be used); 2 if the working memory could
 * not be allocated. */

typedef struct {
    int64_t selected, steps, codes_per_visit, vocabulary, outputs;
    const int64_t *codes;     /* [B, M, K] */
    const uint8_t *real;      /* [B, M] */
    const int64_t *rows;      /* [n] */
    const int64_t *positions; /* [n] */
    const float *weight;      /* [V, P] */
    float *out;               /* [n, P] */
    int *flag;
} CodeHistoryArgs;

ROWS_TARGETS
static void code_history_rows(const CodeHistoryArgs *a, int64_t first, int64_t last) {
    const int64_t m = a->steps, k = a->codes_per_visit, p = a->outputs;
    uint8_t *seen = calloc((size_t)(a->vocabulary > 0 ? a->vocabulary : 1), 1);
    int64_t *listed = malloc((size_t)(m * k > 0 ? m * k : 1) * sizeof(int64_t));
    if (seen == NULL || listed == NULL) {
        free(seen);
        free(listed);
        set_flag(a->flag, 2);
        return;
    }
    seen[0] = 1; /* the padding index: never listed */
    for (int64_t i = first; i < last; ++i) {
        const int64_t b = a->rows[i], end = a->positions[i] < m - 1 ? a->positions[i] : m - 1;
        int64_t count = 0;
        for (int64_t v = 0; v <= end; ++v) {
            if (!a->real[b * m + v]) continue;
            const int64_t *codes = a->codes + (b * m + v) * k;
            for (int64_t j = 0; j < k; ++j) {
                const int64_t c = codes[j];
                if ((uint64_t)c >= (uint64_t)a->vocabulary) {
                    mark_invalid(a->flag);
                    continue;
                }
                listed[count] = c; /* kept (count moves on) only at the code's first record: no branch on it */
                count += 1 - seen[c];
                seen[c] = 1;
            }
        }
        float *out = a->out + i * p;
        for (int64_t q = 0; q < p; ++q) out[q] = 0.0f;
        for (int64_t j = 0; j < count; ++j) {
            const float *row = a->weight + listed[j] * p;
            for (int64_t q = 0; q < p; ++q) out[q] += row[q];
            seen[listed[j]] = 0;
        }
    }
    free(seen);
    free(listed);
}
