"""Builds the package with libperfopt inside it (as llama-cpp-python's wheels
carry llama.cpp): `pip install ./bindings/python` after `make build`, or
`make wheel`. The library comes from PERFOPT_BUNDLE_LIBRARY, else the
checkout's build/lib; it finds libtorch beside it in site-packages (its
rpath names $ORIGIN/../torch/lib), or perfopt's loader preloads the
installed torch's libraries. Without a built library the package is the
bindings alone and looks for the library at run time (PERFOPT_LIBRARY)."""
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent


def library() -> Path:
    override = os.environ.get("PERFOPT_BUNDLE_LIBRARY")
    return Path(override) if override else HERE.parent.parent / "build" / "lib" / "libperfopt.so.0"


class BuildWithLibrary(build_py):
    def run(self) -> None:
        super().run()
        source = library()
        if source.exists():
            target = Path(self.build_lib) / "perfopt" / "libperfopt.so"
            shutil.copyfile(source, target)
            print(f"perfopt: bundled {source} as {target}", file=sys.stderr)
        else:
            print(f"perfopt: no library at {source} (run `make build`): the package will look for "
                  "libperfopt at run time (PERFOPT_LIBRARY)", file=sys.stderr)


class BinaryDistribution(Distribution):
    """A wheel for this platform when it carries the library."""

    def has_ext_modules(self) -> bool:
        return library().exists()


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
