"""Build: pure-Python package + optional pybind11 C++ (OpenMP) extension ``mda_fast._C``.

torch is not needed at build time: the bindings take raw pointers and shapes.
(Owned by the build/C++ engineer; this is the initial version.)
"""

import glob
import os

from setuptools import find_packages, setup

ext_modules = []
cpp_sources = sorted(glob.glob("csrc/*.cpp"))
if cpp_sources and os.environ.get("MDA_FAST_NO_EXT") != "1":
    from pybind11.setup_helpers import Pybind11Extension

    ext_modules.append(
        Pybind11Extension(
            "mda_fast._C",
            cpp_sources,
            extra_compile_args=["-O3", "-fopenmp"],
            extra_link_args=["-fopenmp"],
            cxx_std=17,
        )
    )

packages = find_packages(include=["mda_fast", "mda_fast.*"]) + ["mda_fast.kernels"]

setup(
    packages=packages,
    package_dir={"mda_fast.kernels": "kernels"},
    ext_modules=ext_modules,
)
