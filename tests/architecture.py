"""Checks a newcomer can run (make lint): the crate's top-level modules have
no import cycle, no source file in src/ is over 500 lines, and the README's
layout section names every file under src/ and cli/src/ (and nothing that is
not there).

Prints what it finds and exits non-zero on a failure."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CLI = ROOT / "cli" / "src"
MAX_LINES = 500


def module_of(path: Path) -> str:
    """The top-level module a file of the library belongs to."""
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def dependencies() -> dict:
    graph: dict = {}
    for path in SRC.rglob("*.rs"):
        rel = path.relative_to(SRC)
        if rel.name in ("lib.rs",):
            continue
        module = module_of(path)
        text = path.read_text()
        used = set(re.findall(r"\bcrate::([a-z_]+)", text))
        graph.setdefault(module, set()).update(used - {module})
    return graph


def find_cycle(graph: dict):
    """A cycle as a list of modules, or None (depth-first search)."""
    state: dict = {}
    stack: list = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def unsafe_without_safety() -> list:
    """`unsafe { }` blocks and `unsafe impl`s without a `// SAFETY:` comment
    in the lines just above (a test's shared comment counts for its body)."""
    found = []
    for path in sorted(SRC.rglob("*.rs")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if re.search(r"\bunsafe\s*\{|\bunsafe impl\b", line):
                window = "\n".join(lines[max(0, i - 12) : i + 1])
                if "SAFETY" not in window:
                    found.append(f"{path.relative_to(ROOT)}:{i + 1}: {line.strip()}")
    return found


# What naming a format in code looks like: a Format variant, or an engine's
# own module. Prose in comments may mention formats (a file's reader needs
# to know what it is for); code outside src/engine/ must not branch on them.
FORMAT_NAMES = re.compile(r"\bFormat::\w+|\bengine::(torchscript|aoti|onnx)\b|\b(TorchScript|Aoti|Onnx)::")


def formats_named_outside_engines() -> list:
    """Code lines outside src/engine/ that name a format: the seam keeps a
    format in one place (docs/adding-an-engine.md)."""
    found = []
    engine = SRC / "engine"
    for path in sorted(SRC.rglob("*.rs")):
        if engine in path.parents:
            continue
        for i, line in enumerate(path.read_text().splitlines()):
            code = line.split("//", 1)[0]
            if FORMAT_NAMES.search(code):
                found.append(f"{path.relative_to(ROOT)}:{i + 1}: {line.strip()}")
    return found


def layout_paths() -> set:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Layout\n(.*?)(?=^## )", readme, re.S | re.M)
    if not match:
        raise SystemExit("README.md has no '## Layout' section")
    return set(re.findall(r"`((?:cli/)?src/[^`]+)`", match.group(1)))


def main() -> int:
    failures = []
    graph = dependencies()
    cycle = find_cycle(graph)
    print(f"modules: {len(graph)}, import cycle: {' -> '.join(cycle) if cycle else 'none'}")
    if cycle:
        failures.append("import cycle: " + " -> ".join(cycle))

    sources = sorted(p for folder in (SRC, CLI) for p in folder.rglob("*") if p.suffix in (".rs", ".cpp", ".h"))
    long = [(p, len(p.read_text().splitlines())) for p in sources]
    long = [(p, n) for p, n in long if n > MAX_LINES]
    print(f"files: {len(sources)}, over {MAX_LINES} lines: {len(long)}")
    failures += [f"{p.relative_to(ROOT)} has {n} lines (at most {MAX_LINES})" for p, n in long]

    bare = unsafe_without_safety()
    print(f"unsafe blocks without a SAFETY comment: {len(bare)}")
    failures += [f"no // SAFETY: comment for {b}" for b in bare]

    named = formats_named_outside_engines()
    print(f"code naming a format outside src/engine/: {len(named)}")
    failures += [f"names a format outside src/engine/: {n}" for n in named]

    listed = layout_paths()
    present = {str(p.relative_to(ROOT)) for p in sources}
    folders = {str(p.relative_to(ROOT)) + "/" for folder in (SRC, CLI) for p in folder.rglob("*") if p.is_dir()}
    missing = sorted(present - listed)
    stale = sorted(p for p in listed - present - folders)
    print(f"README layout: {len(listed)} paths, missing {len(missing)}, stale {len(stale)}")
    failures += [f"README's layout does not name {p}" for p in missing]
    failures += [f"README's layout names {p}, which does not exist" for p in stale]
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("architecture checks: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
