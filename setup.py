"""Build the Cython extensions; everything else about the package lives in pyproject.toml."""

import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# Where the compiler is gcc/clang, -O3 lets it unroll the byte loops; no -march=native so the
# wheels stay portable between the machines that share them.
_ARGS = ["-O3"] if os.name != "nt" else []

_EXTENSIONS = [
    Extension(
        f"ext.{name}",
        [f"ext/{name}.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=_ARGS,
    )
    for name in ("_capture", "_flowkeys", "_checksum")
    if os.path.exists(f"ext/{name}.pyx")
]

setup(
    ext_modules=cythonize(
        _EXTENSIONS,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
