"""Builds the Cython hot path in ddc/_core; all other metadata lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

CORE_MODULES = ["wire", "aead", "fec", "records", "ring", "sender", "receiver", "datagram_out", "kafka_metadata"]
# aead opens libcrypto at run time (docs/security.md); older glibc keeps dlopen in libdl.
LIBRARIES = {"aead": ["dl"]}

extensions = [
    Extension(
        f"ddc._core.{name}",
        [f"ddc/_core/{name}.pyx"],
        include_dirs=["ddc/_core"],
        define_macros=[("_GNU_SOURCE", None)],
        extra_compile_args=["-O3"],
        libraries=LIBRARIES.get(name, []),
    )
    for name in CORE_MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
