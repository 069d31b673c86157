"""Builds the Cython hot path (ddc/_core, and a handler's own codec beside its Python); all other metadata lives
in pyproject.toml."""

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = ["ddc._core.wire", "ddc._core.aead", "ddc._core.fec", "ddc._core.records", "ddc._core.ring",
              "ddc._core.sender", "ddc._core.receiver", "ddc._core.datagram_io", "ddc._core.pacing",
              "ddc._core.sequence_window", "ddc._core.sessions", "ddc._core.fec_blocks", "ddc._core.fec_grouping",
              "ddc._core.reassembly",
              "ddc.handlers.udp.datagrams", "ddc.handlers.kafka.codec", "ddc.handlers.kafka_listener.batches"]
# aead opens libcrypto at run time (docs/security.md); older glibc keeps dlopen in libdl.
LIBRARIES = {"ddc._core.aead": ["dl"]}
# Every module binds the symbols glibc 2.34 moved to their older versions (the header says why), and carries no
# debug information unless DDC_DEBUG_INFO=1 (for gdb): the installed core is then a third of its size.
COMPILE_ARGS = ["-O3", "-include", str(Path(__file__).resolve().parent / "ddc" / "_core" / "glibc_compat.h"),
                *([] if os.environ.get("DDC_DEBUG_INFO") == "1" else ["-g0"])]

extensions = [
    Extension(
        name,
        [name.replace(".", "/") + ".pyx"],
        include_dirs=["ddc/_core"],
        define_macros=[("_GNU_SOURCE", None)],
        extra_compile_args=COMPILE_ARGS,
        libraries=LIBRARIES.get(name, []),
    )
    for name in EXTENSIONS
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
