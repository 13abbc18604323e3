/* Rows of a table gathered into the rows of a padded table (ehrseq.data.sequence: a batch of patients padded from
 * the flat visit rows): out[dst_i] = array[src_i] for i in [0, count) (src NULL: array[i]), each row `columns`
 * elements of `size` bytes (1, 4 or 8), read at `row_stride` and `column_stride` bytes apart — a column-major table,
 * as the feature pipeline writes it, is read row by row in one pass, its columns as sequential streams — and
 * written contiguously. The rows of out not in dst are left as they are (zeros or the padding value). */

typedef struct {
    int64_t count, columns, size, row_stride, column_stride;
    const int64_t *dst, *src;
    const char *array;
    char *out;
} GatherArgs;

#define GATHER_ROWS(TYPE)                                                                                        \
    for (int64_t i = first; i < last; ++i) {                                                                     \
        const char *from = a->array + (a->src != NULL ? a->src[i] : i) * a->row_stride;                          \
        TYPE *to = (TYPE *)a->out + a->dst[i] * a->columns;                                                      \
        for (int64_t j = 0; j < a->columns; ++j) to[j] = *(const TYPE *)(from + j * a->column_stride);           \
    }

/* Rows [first, last) of the gather. */
static void gather_rows(const GatherArgs *a, int64_t first, int64_t last) {
    switch (a->size) {
    case 1: GATHER_ROWS(uint8_t) break;
    case 4: GATHER_ROWS(uint32_t) break;
    default: GATHER_ROWS(uint64_t) break;
    }
}

#undef GATHER_ROWS
