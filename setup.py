"""Build of the optional native kernel; everything else about the package is in pyproject.toml.

The kernel (``ehrseq/models/distributions/_grid_crps.c``) speeds up the Survival-CRPS of the constant-hazard
grid families on CPU. It is optional: where it cannot be compiled the install goes on, and the loss runs
its PyTorch implementation (same values; ``ehrseq.models.distributions._native.status()`` says which).
"""

import sys

from setuptools import Extension, setup

compile_args = [] if sys.platform == "win32" else ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"]
link_args = [] if sys.platform == "win32" else ["-pthread"]

setup(
    ext_modules=[
        Extension(
            "ehrseq.models.distributions._grid_crps",
            sources=["ehrseq/models/distributions/_grid_crps.c"],
            depends=["ehrseq/models/distributions/_grid_crps_rows.h"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            optional=True,
        )
    ]
)
