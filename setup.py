"""Build of the optional native kernels; everything else about the package is in pyproject.toml.

The kernels (``ehrseq/models/distributions/_native_kernels.c``) speed up on CPU the Survival-CRPS of the
constant-hazard grid families, of the log-normal and of the Weibull, the next-visit code loss, the PMF (DeepHit)
likelihood, the likelihood of the piecewise-linear hazard and that of Weibull mixtures (MENSA's marginals), and at
inference the visit embedding and the GRU step of the recurrent encoder and the code-history term, and on the data path the padding of
batches and the encoding of numeric features with missing values. They are
optional: where they cannot be compiled the install goes on, and the same computations run in PyTorch and NumPy (same
values; ``ehrseq.models.distributions._native.status()`` says which). With glibc 2.35 or later on x86-64, the loops
over quadrature nodes, mixtures and time frequencies use its vector math library (libmvec).
"""

import glob
import platform
import sys

from setuptools import Extension, setup


def _glibc_vector_math() -> bool:
    """glibc ≥ 2.35 on x86-64 Linux: libmvec has exp, expm1, log, log1p and erfc in SSE, AVX2 and AVX-512 variants."""
    library, version = platform.libc_ver()
    if not (sys.platform.startswith("linux") and platform.machine() == "x86_64" and library == "glibc"):
        return False
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 35)


compile_args = [] if sys.platform == "win32" else ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"]
link_args = [] if sys.platform == "win32" else ["-pthread"]
if sys.platform.startswith("linux"):  # OpenMP: the kernels then run on the threads of PyTorch's runtime (libgomp)
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")
vector_math = _glibc_vector_math()

setup(
    ext_modules=[
        Extension(
            "ehrseq.models.distributions._native_kernels",
            sources=["ehrseq/models/distributions/_native_kernels.c"],
            depends=sorted(glob.glob("ehrseq/models/distributions/*.h")),  # the kernels' row loops
            define_macros=[("EHRSEQ_LIBMVEC", "1")] if vector_math else [],
            libraries=["mvec", "m"] if vector_math else [],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            optional=True,
        )
    ]
)
