/* The end of every *_rows.h: undefines the macros _native_kernels.c set for the floating type it was included
 * with (each header uses some of them), so that the next inclusion defines them afresh. */

#undef REAL
#undef SUFFIX
#undef EXP
#undef EXPM1
#undef LOG
#undef LOG1P
#undef ERFC
#undef SQRT
#undef FABS
#undef CUT
#undef EXP_LIMIT
#undef ERFC_CAP
#undef LEAST
#undef LARGEST
