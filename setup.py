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


def _have_libcrypto() -> bool:
    """Whether OpenSSL's headers and libcrypto are there to build the segment cipher against
    (PKTX_NO_OPENSSL=1 skips it; the services then call ``cryptography`` per packet)."""
    if os.environ.get("PKTX_NO_OPENSSL") or os.name == "nt":
        return False
    try:
        from setuptools._distutils.ccompiler import new_compiler
        from setuptools._distutils.sysconfig import customize_compiler

        cc = new_compiler()
        customize_compiler(cc)
        return cc.has_function("EVP_aes_256_gcm", includes=["openssl/evp.h"], libraries=["crypto"])
    except Exception:  # no compiler, no headers: build without it
        return False


if os.path.exists("ext/_aesgcm.pyx") and _have_libcrypto():
    _EXTENSIONS.append(
        Extension(
            "ext._aesgcm", ["ext/_aesgcm.pyx"], libraries=["crypto"], extra_compile_args=_ARGS
        )
    )

setup(
    ext_modules=cythonize(
        _EXTENSIONS,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
