"""The wheel as a user installs it (`make test-install`): tagged for any
Python 3, its libraries stripped, needing no CUDA library (libperfopt's
CUDA part is a separate library loaded only when CUDA is used, so a CPU-only
torch satisfies it) and naming no folder of the build machine; then, in a
fresh venv where the wheel is installed with pip, `ldd` resolves the library
through site-packages only, the package's members (help(perfopt)) are its
modules and not its libraries, and the TTS example runs on the fixtures.

The venv gets torch as links to this build's torch and nvidia packages
(installing torch's 4.9 GB again would double the test's time); they sit in
its site-packages where an installed torch would, so the library finds them
through its own search path ($ORIGIN/../torch/lib) and nothing else.

Usage: check_wheel.py WHEEL_DIR VENV_DIR FIXTURES_DIR
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a CPU-only torch 2.11 wheel's torch/lib holds that libperfopt may
# need, and the C and C++ runtimes.
ALLOWED_NEEDED = {
    "libtorch.so", "libtorch_cpu.so", "libc10.so",
    "libstdc++.so.6", "libgcc_s.so.1", "libc.so.6", "libm.so.6", "ld-linux-x86-64.so.2",
    "libdl.so.2", "libpthread.so.0", "librt.so.1",
}
MAX_LIBRARY_MIB = 20


def dynamic_section(path: Path):
    out = subprocess.run(["readelf", "-d", str(path)], check=True, capture_output=True, text=True).stdout
    needed, runpath = [], []
    for line in out.splitlines():
        if "(NEEDED)" in line:
            needed.append(line.split("[", 1)[1].rstrip("]"))
        elif "(RUNPATH)" in line or "(RPATH)" in line:
            runpath += line.split("[", 1)[1].rstrip("]").split(":")
    return needed, runpath


def check_archive(wheel: Path, unpacked: Path) -> None:
    tag = wheel.name.split("-")[2:4]
    assert tag == ["py3", "none"], f"{wheel.name}: tagged {tag}, not py3-none"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    library = unpacked / "perfopt" / "libperfopt.so.0"
    size = library.stat().st_size / 2**20
    print(f"{wheel.name}: libperfopt.so.0 {size:.1f} MiB", end="")
    assert size < MAX_LIBRARY_MIB, f"libperfopt.so.0 is {size:.1f} MiB: not stripped?"
    needed, runpath = dynamic_section(library)
    extra = sorted(set(needed) - ALLOWED_NEEDED)
    assert not extra, f"libperfopt.so.0 needs {extra}: a CPU-only torch does not have them"
    for name in ("libperfopt_cuda.so.0", "libperfopt_executorch.so.0"):
        part = unpacked / "perfopt" / name
        if part.exists():
            print(f", {name} {part.stat().st_size / 2**20:.1f} MiB", end="")
            runpath += dynamic_section(part)[1]
    print(f"; needs {', '.join(n for n in needed if n.startswith(('libtorch', 'libc10')))}")
    foreign = [entry for entry in runpath if not entry.startswith("$ORIGIN")]
    assert not foreign, f"the wheel's libraries search {foreign}: folders of the build machine"


def fresh_venv(venv: Path, wheel: Path) -> Path:
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + ["--no-deps", str(wheel)], check=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    ours = Path(sysconfig.get_paths()["purelib"])
    for name in ["torch", "nvidia", "numpy", "numpy.libs", "executorch"]:
        if (ours / name).exists():
            (site / name).symlink_to(ours / name)
    return python


def main() -> None:
    wheel_dir, venv, fixtures = (Path(arg).resolve() for arg in sys.argv[1:4])
    wheels = sorted(wheel_dir.glob("perfopt-*.whl"))
    assert len(wheels) == 1, f"one wheel in {wheel_dir}, found {wheels}"
    with tempfile.TemporaryDirectory() as unpacked:
        check_archive(wheels[0], Path(unpacked))
    python = fresh_venv(venv, wheels[0])
    env = {k: v for k, v in os.environ.items()
           if k not in ("PERFOPT_LIBRARY", "PYTHONPATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV")}
    installed = subprocess.run([str(python), "-c", "import perfopt._native as n; print(n.lib()._name)"],
                               check=True, capture_output=True, text=True, env=env, cwd="/").stdout.strip()
    assert installed.startswith(str(venv)), f"the venv's perfopt loaded {installed}"
    members = subprocess.run([str(python), "-c", "import pkgutil, perfopt; "
                              "print(' '.join(m.name for m in pkgutil.iter_modules(perfopt.__path__)))"],
                             check=True, capture_output=True, text=True, env=env, cwd="/").stdout.split()
    assert not [m for m in members if m.startswith("lib")], f"help(perfopt) lists {members}"
    ldd = subprocess.run(["ldd", installed], check=True, capture_output=True, text=True).stdout
    build_venv = str(Path(sysconfig.get_paths()["purelib"]))
    build_paths = [line.strip() for line in ldd.splitlines() if build_venv in line]
    assert not build_paths, f"ldd {installed} finds libraries of the build machine: {build_paths}"
    assert "not found" not in ldd, ldd
    print(f"fresh venv {venv}: perfopt from {installed}; ldd resolves libtorch through site-packages")
    # The ExecuTorch part finds ExecuTorch's runtime in the executorch package.
    part = Path(installed).parent / "libperfopt_executorch.so.0"
    if part.exists() and (Path(installed).parents[1] / "executorch").exists():
        ldd = subprocess.run(["ldd", str(part)], check=True, capture_output=True, text=True).stdout
        assert "not found" not in ldd and "executorch/lib/libexecutorch.so" in ldd, ldd
        print(f"{part.name} resolves ExecuTorch's runtime through site-packages")
    subprocess.run([str(python), str(ROOT / "examples" / "python" / "tts_backend.py"), str(fixtures)],
                   check=True, env=env, cwd="/")


if __name__ == "__main__":
    main()
