"""Build: pure-Python package + pybind11 extensions.

* ``mda_fast._C``      C++17/OpenMP CPU ops from ``csrc/cpu/*.cpp`` (one file per op, plus the GEMM
  and the bindings; always attempted).
* ``mda_fast._C_cuda`` CUDA ops from ``csrc/cuda/*.cu`` (one file per op) + ``csrc/cuda/*.cpp``, built
  when nvcc is found AND (``MDA_FAST_CUDA=1`` or an installed torch is a CUDA build).
  ``MDA_FAST_CUDA=0`` disables it.
Headers shared by both (projection hash, route names) live in ``csrc/common/``.
The Triton kernels (top-level ``kernels/``) are installed as the package ``mda_fast.kernels``.

torch is never imported at build time: the bindings take raw pointers and shapes, and the CUDA
check reads ``torch/version.py`` as text. Both extensions are optional: a failed compile prints a
message and the package still installs and runs its torch paths. ``MDA_FAST_NO_EXT=1`` skips both.
Portable flags only (-O3, no -march=native): AVX2/FMA kernels are chosen at run time.
"""

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

CUDA_ARCHS = os.environ.get("MDA_FAST_CUDA_ARCHS", "80;90").split(";")


def log(msg):
    print(f"mda-fast setup: {msg}", file=sys.stderr)


def find_nvcc():
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def torch_is_cuda_build():
    """True when an importable torch reports a CUDA version (read as text, torch not imported)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    path = os.path.join(list(spec.submodule_search_locations)[0], "version.py")
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        return False
    return re.search(r"^cuda\s*(:\s*\S+)?\s*=\s*['\"]\d", text, re.M) is not None


def want_cuda():
    flag = os.environ.get("MDA_FAST_CUDA", "")
    nvcc = find_nvcc()
    if flag == "0":
        return None, "MDA_FAST_CUDA=0"
    if nvcc is None:
        return None, "nvcc not found (set CUDA_HOME)"
    if flag == "1" or torch_is_cuda_build():
        return nvcc, ""
    return None, "torch is a CPU build and MDA_FAST_CUDA=1 is not set"


def has_openmp(compiler):
    """Probe -fopenmp with the real compiler; without it the ops run single-threaded."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp.cpp")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(){return omp_get_max_threads()>0?0:1;}\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objs, os.path.join(tmp, "omp"), extra_postargs=["-fopenmp"])
            return True
        except Exception:  # noqa: BLE001 - any compiler failure means "no OpenMP"
            return False


class OptionalBuildExt(build_ext):
    """Builds each extension if it can; a failure is reported, never fatal."""

    def build_extension(self, ext):
        try:
            if ext.name == "mda_fast._C":
                if has_openmp(self.compiler):
                    ext.extra_compile_args += ["-fopenmp"]
                    ext.extra_link_args += ["-fopenmp"]
                else:
                    log("OpenMP not available: the C++ ops will run on one thread")
            if ext.name == "mda_fast._C_cuda":
                self._compile_cu(ext)
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            log(f"skipping {ext.name}: {exc}; the package falls back to other backends")

    def _compile_cu(self, ext):
        nvcc = ext.nvcc
        out_dir = os.path.join(self.build_temp, "cuda")
        os.makedirs(out_dir, exist_ok=True)
        gencode = []
        for arch in CUDA_ARCHS:
            gencode += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
        for src in ext.cu_sources:
            obj = os.path.join(out_dir, os.path.basename(src) + ".o")
            cmd = [nvcc, "-c", src, "-o", obj, "-O3", "-std=c++17", "-Xcompiler", "-fPIC",
                   "-Icsrc/cuda", *gencode]
            log(" ".join(cmd))
            subprocess.check_call(cmd)
            ext.extra_objects.append(obj)


def extensions():
    if os.environ.get("MDA_FAST_NO_EXT") == "1":
        log("MDA_FAST_NO_EXT=1: building no extensions (torch backends only)")
        return []
    from pybind11 import get_include

    exts = []
    cpp = sorted(glob.glob("csrc/cpu/*.cpp"))
    if cpp:
        exts.append(Extension("mda_fast._C", cpp, include_dirs=[get_include(), "csrc/cpu"], language="c++",
                              extra_compile_args=["-O3", "-g0", "-std=c++17", "-fvisibility=hidden"],
                              extra_link_args=[]))
    nvcc, why = want_cuda()
    cu = sorted(glob.glob("csrc/cuda/*.cu"))
    if nvcc and cu:
        home = os.path.dirname(os.path.dirname(nvcc))
        ext = Extension("mda_fast._C_cuda", sorted(glob.glob("csrc/cuda/*.cpp")),
                        include_dirs=[get_include(), "csrc/cuda", os.path.join(home, "include")],
                        library_dirs=[os.path.join(home, "lib64")], libraries=["cudart"],
                        runtime_library_dirs=[os.path.join(home, "lib64")], language="c++",
                        extra_compile_args=["-O3", "-g0", "-std=c++17", "-fvisibility=hidden"])
        ext.nvcc, ext.cu_sources = nvcc, cu
        exts.append(ext)
    elif cu:
        log(f"not building the CUDA extension: {why}")
    return exts


packages = find_packages(include=["mda_fast", "mda_fast.*"]) + ["mda_fast.kernels"]

setup(
    packages=packages,
    package_dir={"mda_fast.kernels": "kernels"},
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
