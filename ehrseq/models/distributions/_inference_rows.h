/* Inference of the recurrent encoder in float32, one visit row or one patient row at a time:
 *
 * - the visit embedding (ehrseq.models.encoders.embedding.VisitEmbedding, mean-pooled codes): per visit row the sum
 *     s = b + W_time [φ(t/u) ; φ(g/u)] + W_num [x̃ ; r] + Σ_j E[c_j + o_j] + pool(codes) (or v_no_codes)
 *   with φ(x) = [sign(x) log1p|x| ; sin(ω x) ; cos(ω x)], and its layer norm
 *     e = γ ⊙ (s − mean(s)) / sqrt(var(s) + ε) + β,
 *   computed for the visits of one step m of every patient of a padded batch (rows b·M + m): the sums written into
 *   the step's [B, D] block of a time-major [M, B, D] table (one contiguous block per step), the layer norms into a
 *   [B, D] table (the recurrence's input at step m).
 *   Padded visits (real = 0) get the values of the PyTorch implementation (times and values 0, no codes, each
 *   categorical column's first entry); their missingness flags are read as they are, as there.
 * - one step of the GRU (ehrseq.models.encoders.recurrent.gru_steps): from the step's input product
 *   i = x [W_ir ; W_iz ; 2 W_in]ᵀ, the input bias c = [b_ir + b_hr ; b_iz + b_hz ; 2 b_in], the recurrent product
 *   q = h [W_hr ; W_hz ; 2 W_hn]ᵀ and 2 b_hn:
 *     r = σ(i_r + c_r + q_r),  z = σ(i_z + c_z + q_z),
 *     n = 2 σ(i_n + c_n + r ⊙ (q_n + 2 b_hn)) − 1 = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),
 *     h' = n + z ⊙ (h − n).
 * The PyTorch implementations (the kernels switched off) are the reference; tests hold the two equal. */

/* Vector variants of sin and cos from libmvec where the build found it (see _native_kernels.c). */
#if defined(EHRSEQ_LIBMVEC) && defined(__GNUC__) && !defined(__clang__)
VECTOR_MATH float sinf(float);
VECTOR_MATH float cosf(float);
#endif

/* The most time frequencies per duration, and the most terms of a visit's sum (see add_terms). */
#define MAX_FREQUENCIES 256
#define MAX_TERMS 4096

typedef struct {
    int64_t patients, steps, step, width, numeric, categorical, codes_per_visit, frequencies;
    /* per visit row (patients · steps rows, patient-major): */
    const float *time, *gap;           /* [rows] days */
    const uint8_t *real;               /* [rows] */
    const float *values;               /* [rows, numeric] */
    const uint8_t *missing;            /* [rows, numeric] */
    const int64_t *categorical_index;  /* [rows, categorical] */
    const int64_t *categorical_offset; /* [categorical] */
    const int64_t *categorical_size;   /* [categorical]: the cardinalities */
    const float *categorical_table;    /* [Σ cardinalities, width] */
    const int64_t *codes;              /* [rows, codes_per_visit] */
    int64_t vocabulary;
    const float *code_table;           /* [vocabulary, width], row PAD_INDEX ignored */
    const float *no_codes;             /* [width] (NULL, with codes and code_table: a model without codes) */
    const float *angular;              /* ω [frequencies] */
    float time_unit;
    const float *time_weight;          /* [2 (1 + 2 frequencies), width]: W_timeᵀ */
    const float *numeric_weight;       /* [2 numeric, width]: W_numᵀ */
    const float *bias, *norm_weight, *norm_bias; /* [width] */
    float eps;
    float *sums;                       /* [steps, patients, width], time-major: the rows of the step are written */
    float *normalised;                 /* [patients, width] */
    int *invalid;                      /* set to 1 where an index lies outside its table (the term is left out) */
} VisitEmbeddingArgs;

/* The sum of a visit is b + Σ_t scale_t · row_t over its terms t (at most MAX_TERMS: the time features, one numeric
 * value or missingness flag per column, one entry per categorical column, the codes or the no-codes vector), added
 * 64 and then 16 values of the width at a time in vectors that stay in registers over all terms (GCC's vector
 * extension: one AVX-512 register, two AVX2 or four SSE registers each), the rest one value at a time. */
typedef float Vector16 __attribute__((vector_size(64), aligned(4)));

INLINE void add_terms_64(float *out, const float *bias, const float *const *rows, const float *scales,
                         int64_t terms, int64_t offset) {
    const Vector16 *b = (const Vector16 *)(bias + offset);
    Vector16 acc0 = b[0], acc1 = b[1], acc2 = b[2], acc3 = b[3];
    for (int64_t t = 0; t < terms; ++t) {
        const Vector16 *row = (const Vector16 *)(rows[t] + offset);
        const float scale = scales[t];
        acc0 += scale * row[0];
        acc1 += scale * row[1];
        acc2 += scale * row[2];
        acc3 += scale * row[3];
    }
    Vector16 *o = (Vector16 *)(out + offset);
    o[0] = acc0;
    o[1] = acc1;
    o[2] = acc2;
    o[3] = acc3;
}

INLINE void add_terms_16(float *out, const float *bias, const float *const *rows, const float *scales,
                         int64_t terms, int64_t offset) {
    Vector16 acc = *(const Vector16 *)(bias + offset);
    for (int64_t t = 0; t < terms; ++t) acc += scales[t] * *(const Vector16 *)(rows[t] + offset);
    *(Vector16 *)(out + offset) = acc;
}

INLINE void add_terms_1(float *out, const float *bias, const float *const *rows, const float *scales, int64_t terms,
                        int64_t offset) {
    float acc = bias[offset];
    for (int64_t t = 0; t < terms; ++t) acc += scales[t] * rows[t][offset];
    out[offset] = acc;
}

/* The visit rows of one step are a batch's rows b·M + m, M rows apart: the inputs of the visit PREFETCH_AHEAD
 * patients ahead are asked for while this one is summed. */
#define PREFETCH_AHEAD 8

/* every cache line of the `bytes` bytes at `start` */
INLINE void prefetch_span(const void *start, int64_t bytes) {
    const char *first = (const char *)((uintptr_t)start & ~(uintptr_t)63), *end = (const char *)start + bytes;
    for (const char *line = first; line < end; line += 64) __builtin_prefetch(line);
}

INLINE void prefetch_visit(const VisitEmbeddingArgs *a, int64_t r) {
    __builtin_prefetch(a->time + r);
    __builtin_prefetch(a->gap + r);
    __builtin_prefetch(a->real + r);
    prefetch_span(a->values + r * a->numeric, a->numeric * (int64_t)sizeof(float));
    prefetch_span(a->missing + r * a->numeric, a->numeric);
    prefetch_span(a->categorical_index + r * a->categorical, a->categorical * (int64_t)sizeof(int64_t));
    if (a->no_codes != NULL)
        prefetch_span(a->codes + r * a->codes_per_visit, a->codes_per_visit * (int64_t)sizeof(int64_t));
}

/* Several threads may set a kernel's flag at once: it is set by an atomic store where the compiler has one. */
INLINE void set_flag(int *flag, int value) {
#if defined(__GNUC__)
    __atomic_store_n(flag, value, __ATOMIC_RELAXED);
#else
    *flag = value;
#endif
}

/* An index found outside its table: the flag is 1. */
INLINE void mark_invalid(int *flag) { set_flag(flag, 1); }

INLINE float signed_log1p(float x) { return x < 0 ? -log1pf(-x) : log1pf(x); }

/* The visits at the step of patients [first, last). */
ROWS_TARGETS static void visit_embedding_rows(const VisitEmbeddingArgs *a, int64_t first, int64_t last) {
    const int64_t width = a->width, n = a->frequencies, features = 1 + 2 * n;
    const float *rows[MAX_TERMS];
    float scales[MAX_TERMS], phase[2 * MAX_FREQUENCIES], sine[2 * MAX_FREQUENCIES], cosine[2 * MAX_FREQUENCIES];
    for (int64_t patient = first; patient < last; ++patient) {
        const int64_t r = patient * a->steps + a->step;
        if (patient + PREFETCH_AHEAD < last) prefetch_visit(a, r + PREFETCH_AHEAD * a->steps);
        const int real = a->real[r] != 0;
        const float x[2] = {real ? a->time[r] / a->time_unit : 0.0f, real ? a->gap[r] / a->time_unit : 0.0f};
        for (int k = 0; k < 2; ++k)
            for (int64_t i = 0; i < n; ++i) phase[k * n + i] = x[k] * a->angular[i];
        /* two loops, not one: GCC would fuse sin and cos of one argument into a scalar sincos */
#pragma omp simd
        for (int64_t i = 0; i < 2 * n; ++i) sine[i] = sinf(phase[i]);
#pragma omp simd
        for (int64_t i = 0; i < 2 * n; ++i) cosine[i] = cosf(phase[i]);
        int64_t terms = 0;
        for (int k = 0; k < 2; ++k) {
            const float *w = a->time_weight + k * features * width;
            rows[terms] = w;
            scales[terms++] = signed_log1p(x[k]);
            for (int64_t i = 0; i < n; ++i) {
                rows[terms] = w + (1 + i) * width;
                scales[terms++] = sine[k * n + i];
                rows[terms] = w + (1 + n + i) * width;
                scales[terms++] = cosine[k * n + i];
            }
        }
        const float *values = a->values + r * a->numeric;
        const uint8_t *missing = a->missing + r * a->numeric;
        for (int64_t j = 0; j < a->numeric; ++j) {
            if (missing[j]) {
                rows[terms] = a->numeric_weight + (a->numeric + j) * width;
                scales[terms++] = 1.0f;
            } else if (real) {
                rows[terms] = a->numeric_weight + j * width;
                scales[terms++] = values[j];
            }
        }
        for (int64_t j = 0; j < a->categorical; ++j) {
            const int64_t index = real ? a->categorical_index[r * a->categorical + j] : PAD_INDEX;
            if (index < 0 || index >= a->categorical_size[j]) { /* never read outside the table */
                mark_invalid(a->invalid);
                continue;
            }
            rows[terms] = a->categorical_table + (index + a->categorical_offset[j]) * width;
            scales[terms++] = 1.0f;
        }
        if (a->no_codes != NULL) { /* a model with codes (the batch may list none: codes_per_visit = 0) */
            const int64_t *listed = a->codes + r * a->codes_per_visit;
            int64_t present = 0;
            if (real)
                for (int64_t k = 0; k < a->codes_per_visit; ++k) present += listed[k] != PAD_INDEX;
            if (present == 0) {
                rows[terms] = a->no_codes;
                scales[terms++] = 1.0f;
            } else {
                const float weight = 1.0f / (float)present;
                for (int64_t k = 0; k < a->codes_per_visit; ++k) {
                    if (listed[k] == PAD_INDEX) continue;
                    if (listed[k] < 0 || listed[k] >= a->vocabulary) {
                        mark_invalid(a->invalid);
                        continue;
                    }
                    rows[terms] = a->code_table + listed[k] * width;
                    scales[terms++] = weight;
                }
            }
        }
        /* the sum is formed in the output row (in cache: the [B, D] buffer is reused at every step), copied to the
         * table of sums, and normalised in place */
        float *restrict out = a->normalised + patient * width;
        int64_t offset = 0;
        for (; offset + 64 <= width; offset += 64) add_terms_64(out, a->bias, rows, scales, terms, offset);
        for (; offset + 16 <= width; offset += 16) add_terms_16(out, a->bias, rows, scales, terms, offset);
        for (; offset < width; ++offset) add_terms_1(out, a->bias, rows, scales, terms, offset);
        memcpy(a->sums + (a->step * a->patients + patient) * width, out, (size_t)width * sizeof(float));
        float mean = 0, variance = 0;
#pragma omp simd reduction(+ : mean)
        for (int64_t d = 0; d < width; ++d) mean += out[d];
        mean /= (float)width;
#pragma omp simd reduction(+ : variance)
        for (int64_t d = 0; d < width; ++d) variance += (out[d] - mean) * (out[d] - mean);
        const float inverse = 1.0f / sqrtf(variance / (float)width + a->eps);
#pragma omp simd
        for (int64_t d = 0; d < width; ++d) out[d] = (out[d] - mean) * inverse * a->norm_weight[d] + a->norm_bias[d];
    }
}

typedef struct {
    int64_t batch, hidden;
    const float *inputs;    /* i [batch, 3 hidden] */
    const float *bias;      /* c [3 hidden] */
    const float *recurrent; /* q [batch, 3 hidden] (NULL, with previous NULL: the first step, h = 0) */
    const float *bias_n;    /* 2 b_hn [hidden] */
    const float *previous;  /* h [batch, hidden] (NULL: 0) */
    float *out;             /* h' [batch, hidden] */
} GruStepArgs;

INLINE float logistic(float x) { return 1.0f / (1.0f + expf(-(x < -86.0f ? -86.0f : (x > 86.0f ? 86.0f : x)))); }

/* Patient rows [first, last). */
ROWS_TARGETS static void gru_step_rows(const GruStepArgs *a, int64_t first, int64_t last) {
    const int64_t h = a->hidden;
    for (int64_t b = first; b < last; ++b) {
        const float *restrict in = a->inputs + b * 3 * h, *restrict c = a->bias;
        const float *restrict q = a->recurrent != NULL ? a->recurrent + b * 3 * h : NULL;
        const float *restrict previous = a->previous != NULL ? a->previous + b * h : NULL;
        float *restrict out = a->out + b * h;
        if (q == NULL) { /* the first step: h = 0 */
#pragma omp simd
            for (int64_t j = 0; j < h; ++j) {
                const float r = logistic(in[j] + c[j]), z = logistic(in[h + j] + c[h + j]);
                const float candidate = 2.0f * logistic(in[2 * h + j] + c[2 * h + j] + r * a->bias_n[j]) - 1.0f;
                out[j] = candidate - z * candidate;
            }
            continue;
        }
#pragma omp simd
        for (int64_t j = 0; j < h; ++j) {
            const float r = logistic(in[j] + c[j] + q[j]), z = logistic(in[h + j] + c[h + j] + q[h + j]);
            const float candidate =
                2.0f * logistic(in[2 * h + j] + c[2 * h + j] + r * (q[2 * h + j] + a->bias_n[j])) - 1.0f;
            out[j] = candidate + z * (previous[j] - candidate);
        }
    }
}
