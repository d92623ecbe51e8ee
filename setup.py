"""Build glue that pyproject.toml cannot express: the folder-to-namespace map and the Cython kernels.

The repository keeps `ingest/`, `plugin/`, `eval/`, `cython_ext/` and `mappings/` as top-level folders, but
they import as `osneural.ingest`, `osneural.plugin`, ... so nothing installs a bare `plugin` package.
Kernel build switches (environment variables read at build time):

* OpenMP is used when the compiler accepts `-fopenmp`; otherwise the kernels build serial (prange
  degrades to a plain loop) and the build prints a warning, so `pip install .` never fails for want
  of OpenMP. `OSNEURAL_NO_OPENMP=1` builds serial on purpose. `osneural.cython_ext.openmp_enabled()`
  says at run time which build is installed.
* The build is portable by default (the compiler's baseline instruction set), so a wheel or a
  Docker image runs on any CPU of its architecture. `OSNEURAL_NATIVE=1` adds `-march=native`
  (AVX-512 where the building CPU has it) for a build that only ever runs where it was compiled.
  `OSNEURAL_PORTABLE` is still accepted and changes nothing (portable is the default).
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


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _serial_warning(why: str) -> None:
    print(f"WARNING: osneural kernels build WITHOUT OpenMP ({why}): MaxSim, PQ and Hamming "
          "rescoring will run on one core. Install an OpenMP runtime (libgomp) to build parallel.",
          file=sys.stderr)


def _openmp_flags() -> list[str]:
    if _flag("OSNEURAL_NO_OPENMP"):
        return []
    if sys.platform == "win32":
        _serial_warning("not configured on Windows")
        return []
    cc = os.environ.get("CC", "cc")
    if not shutil.which(cc):
        _serial_warning(f"compiler {cc!r} not found to probe -fopenmp")
        return []
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as fh:
            fh.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        ok = subprocess.run([cc, "-fopenmp", src, "-o", os.path.join(tmp, "t")],
                            capture_output=True).returncode == 0
    if not ok:
        _serial_warning(f"{cc} -fopenmp failed")
    return ["-fopenmp"] if ok else []


def _extensions() -> list[Extension]:
    omp = _openmp_flags()
    arch = ["-march=native"] if _flag("OSNEURAL_NATIVE") else []
    ext = Extension(
        "osneural.cython_ext._kernels",
        ["cython_ext/_kernels.pyx"],
        include_dirs=[np.get_include(), "cython_ext"],
        depends=["cython_ext/_kernels_impl.h"],
        extra_compile_args=["-O3", *arch, *omp],
        extra_link_args=omp,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    return cythonize([ext], compiler_directives={"language_level": "3"})


setup(package_dir=FOLDERS, packages=_packages(), ext_modules=_extensions())
