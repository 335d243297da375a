"""Build the compiled parts of quant_core: every C file in quant_core/native/ is one module.

The metadata lives in pyproject.toml; this file only lists the extensions, found by globbing so a
new module needs no edit here. They use the CPython API only (no numpy headers, no Cython), so
gcc and the Python headers are the whole build toolchain.
"""

from pathlib import Path

from setuptools import Extension, setup

COMPILE_ARGS = ["-O3", "-std=c11", "-Wall", "-Werror=implicit-function-declaration"]
NATIVE = Path(__file__).parent / "quant_core" / "native"

setup(
    ext_modules=[
        Extension(
            f"quant_core.native.{source.stem}",
            [str(source.relative_to(Path(__file__).parent))],
            extra_compile_args=COMPILE_ARGS,
        )
        for source in sorted(NATIVE.glob("*.c"))
    ]
)
