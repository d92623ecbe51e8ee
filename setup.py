"""Build glue that pyproject.toml cannot express: the folder-to-namespace map and the Cython kernels.

The repository keeps `ingest/`, `plugin/`, `eval/`, `cython_ext/` and `mappings/` as top-level folders, but
they import as `osneural.ingest`, `osneural.plugin`, ... so nothing installs a bare `plugin` package.
OpenMP is used when the compiler accepts `-fopenmp`; otherwise the kernels build serial (prange
degrades to a plain loop), so `pip install .` never fails for want of OpenMP.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

FOLDERS = {
    "osneural": "src/osneural",
    "osneural.ingest": "ingest",
    "osneural.plugin": "plugin",
    "osneural.eval": "eval",
    "osneural.cython_ext": "cython_ext",
    "osneural.mappings": "mappings",
}


def _packages() -> list[str]:
    found: list[str] = []
    for prefix, folder in FOLDERS.items():
        found.append(prefix)
        found += [f"{prefix}.{sub}" for sub in find_packages(folder)]
    return found


def _openmp_flags() -> list[str]:
    if os.environ.get("OSNEURAL_NO_OPENMP") or sys.platform == "win32":
        return []
    cc = os.environ.get("CC", "cc")
    if not shutil.which(cc):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as fh:
            fh.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        ok = subprocess.run([cc, "-fopenmp", src, "-o", os.path.join(tmp, "t")],
                            capture_output=True).returncode == 0
    return ["-fopenmp"] if ok else []


def _extensions() -> list[Extension]:
    omp = _openmp_flags()
    arch = [] if os.environ.get("OSNEURAL_PORTABLE") else ["-march=native"]
    ext = Extension(
        "osneural.cython_ext._kernels",
        ["cython_ext/_kernels.pyx"],
        include_dirs=[np.get_include()],
        extra_compile_args=["-O3", *arch, *omp],
        extra_link_args=omp,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    return cythonize([ext], compiler_directives={"language_level": "3"},
                     compile_time_env={"HAVE_OPENMP": bool(omp)})


setup(package_dir=FOLDERS, packages=_packages(), ext_modules=_extensions())
