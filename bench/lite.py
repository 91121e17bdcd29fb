"""The lite library (no libtorch) beside the full one, on the same models:
a process's cold start to its first output, and the median call, each
library in its own processes, alternating, at one intra-op thread. Prints a
Markdown table (docs/benchmarks/lite.md is its output).

    python bench/lite.py --program build/bench/lite_start --full build/lib \
        --lite build/lite/lib --packages "$(cat build/packages.txt)"
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

# (model file in the packages folder, its input shapes): a silero-shaped
# recurrent step (512 samples and a 64-wide state), and the two-input MLP
# as an ExecuTorch program.
MODELS = [("recurrent.onnx", ["1x512", "1x64"]), ("two_inputs.pte", ["1x16", "1x4"])]


def onnxruntime_library() -> str:
    capi = Path(sysconfig.get_paths()["purelib"]) / "onnxruntime" / "capi"
    found = sorted(capi.glob("libonnxruntime.so.1*"))
    if not found:
        sys.exit(f"no libonnxruntime in {capi}: pip install onnxruntime")
    return str(found[-1])


def one_process(program: str, library: str, model: Path, shapes, iterations: int) -> dict:
    env = dict(os.environ, LD_LIBRARY_PATH=library, PERFOPT_ONNXRUNTIME=onnxruntime_library())
    started = time.perf_counter()
    done = subprocess.run([program, str(model), str(iterations), *shapes], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{program} on {model} with {library}: {done.stderr.strip()}")
    result = json.loads(done.stdout)
    # The process's start to its first output: the wall time less the timed calls after it.
    result["start_ms"] = (wall * 1e6 - iterations * result["call_us"]) / 1e3
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--program", required=True)
    parser.add_argument("--full", required=True, help="folder holding the full libperfopt.so")
    parser.add_argument("--lite", required=True, help="folder holding the lite libperfopt.so")
    parser.add_argument("--packages", required=True, help="folder of make_packages.py's models")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    builds = {"full": args.full, "lite": args.lite}
    lines = ["| model | library | start to first output (ms) | call (us) | ratio full/lite, call |",
             "|---|---|---|---|---|"]
    for name, shapes in MODELS:
        runs = {build: [] for build in builds}
        for _ in range(args.rounds):
            for build, folder in builds.items():
                runs[build].append(one_process(args.program, folder, Path(args.packages) / name, shapes,
                                               args.iterations))
        calls = {b: statistics.median(r["call_us"] for r in runs[b]) for b in builds}
        for build in builds:
            starts = sorted(r["start_ms"] for r in runs[build])
            ratio = f"{calls['full'] / calls['lite']:.2f}" if build == "lite" else ""
            lines.append(f"| {name} | {build} | {statistics.median(starts):.0f} ({starts[0]:.0f}-{starts[-1]:.0f}) "
                         f"| {calls[build]:.1f} | {ratio} |")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    print("# The lite library beside the full one\n")
    print(f"{time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} cores; `make bench-lite` (bench/lite.py). "
          f"{args.rounds} rounds, each library in its own process per round, alternating; 1 intra-op thread; "
          f"medians (range over rounds); inputs at batch 1. The start is the whole process's: the full library "
          f"loads libtorch before main, the lite one does not.\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
