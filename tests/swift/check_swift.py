"""What can be checked of the Swift package without a Swift toolchain.

1. Every Swift file (bindings/swift, examples/swift) parses with tree-sitter-swift:
   no ERROR or MISSING node.
2. Every perfopt_* C function the Swift code calls exists in include/perfopt.h
   with the number of arguments used, and the package calls every function
   the header exports (the binding is complete).
3. The C module (Sources/CPerfOpt/module.modulemap over the header) builds as a
   clang module: an Objective-C file `@import CPerfOpt;` that calls every
   function compiles without a diagnostic (libclang, -fmodules).

Prints a table and exits non-zero on any failure. What is not checked: Swift
type checking and the XCTest run; tests/cpp/swift_mirror.c replays each
XCTest's C calls against the real library instead.
"""
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import clang.cindex as ci
import tree_sitter
import tree_sitter_swift

ROOT = Path(__file__).resolve().parents[2]
SWIFT_DIRS = [ROOT / "bindings" / "swift", ROOT / "examples" / "swift"]
HEADER = ROOT / "include" / "perfopt.h"
MODULE_MAP = ROOT / "bindings" / "swift" / "Sources" / "CPerfOpt" / "module.modulemap"


def gcc_include_dir() -> str:
    """Where stddef.h lives: the pip libclang has no builtin headers of its own."""
    out = subprocess.run(["gcc", "-print-file-name=include"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def header_functions() -> dict:
    index = ci.Index.create()
    tu = index.parse(str(HEADER), args=["-x", "c", "-std=c11", "-isystem", gcc_include_dir()])
    errors = [d for d in tu.diagnostics if d.severity >= ci.Diagnostic.Error]
    if errors:
        raise SystemExit(f"header does not parse: {errors[0]}")
    ours = [c for c in tu.cursor.get_children() if c.location.file and Path(c.location.file.name) == HEADER]
    functions = {
        c.spelling: len(list(c.get_arguments()))
        for c in ours
        if c.kind == ci.CursorKind.FUNCTION_DECL and c.spelling.startswith("perfopt_")
    }
    # Struct types Swift builds with `perfopt_config()`: initialisers, not calls.
    types = {c.spelling for c in ours if c.kind == ci.CursorKind.TYPEDEF_DECL}
    return functions, types


def swift_files():
    for d in SWIFT_DIRS:
        yield from sorted(d.rglob("*.swift"))


def parse_errors(node, source):
    if node.type == "ERROR" or node.is_missing:
        line = node.start_point[0] + 1
        yield f"line {line}: {'missing ' + node.type if node.is_missing else 'cannot parse'}: " + source[
            node.start_byte : node.end_byte
        ].decode(errors="replace")[:60]
    for child in node.children:
        yield from parse_errors(child, source)


STRUCT_TYPES: set = set()


def c_calls(node, source, out):
    """(name, argument count, line) of each call whose callee is perfopt_*."""
    if node.type == "call_expression" and node.children and node.children[0].type == "simple_identifier":
        name = source[node.children[0].start_byte : node.children[0].end_byte].decode()
        if name.startswith("perfopt_") and name not in STRUCT_TYPES:
            suffix = node.children[1]
            args = [
                c
                for s in suffix.children
                if s.type == "value_arguments"
                for c in s.children
                if c.type == "value_argument"
            ]
            trailing = sum(1 for s in suffix.children if s.type == "lambda_literal")
            out.append((name, len(args) + trailing, node.start_point[0] + 1))
    for child in node.children:
        c_calls(child, source, out)


def check_module(functions: dict) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.m"
        lines = ["@import CPerfOpt;", "void probe(void) {"]
        for name in sorted(functions):
            lines.append(f"  (void)&{name};")
        lines.append("}")
        probe.write_text("\n".join(lines) + "\n")
        args = [
            "-x", "objective-c", "-fmodules", f"-fmodules-cache-path={tmp}/cache",
            f"-fmodule-map-file={MODULE_MAP}", f"-I{ROOT / 'include'}", "-isystem", gcc_include_dir(),
            "-Werror", "-Wall",
        ]
        tu = ci.Index.create().parse(str(probe), args=args)
        return [str(d) for d in tu.diagnostics if d.severity >= ci.Diagnostic.Warning]


def main() -> int:
    failures = []
    language = tree_sitter.Language(tree_sitter_swift.language())
    parser = tree_sitter.Parser(language)
    functions, types = header_functions()
    STRUCT_TYPES.update(types)
    used = {}
    print(f"{'Swift file':<58} {'parse':<6} C calls")
    for path in swift_files():
        source = path.read_bytes()
        tree = parser.parse(source)
        errors = list(parse_errors(tree.root_node, source))
        calls = []
        c_calls(tree.root_node, source, calls)
        rel = path.relative_to(ROOT)
        print(f"{str(rel):<58} {'ok' if not errors else 'FAIL':<6} {len(calls)}")
        failures += [f"{rel}: {e}" for e in errors]
        for name, arity, line in calls:
            used[name] = used.get(name, 0) + 1
            if name not in functions:
                failures.append(f"{rel}:{line}: {name} is not in include/perfopt.h")
            elif functions[name] != arity:
                failures.append(f"{rel}:{line}: {name} takes {functions[name]} arguments, called with {arity}")
    missing = sorted(set(functions) - set(used))
    failures += [f"the Swift package never calls {name}" for name in missing]
    print(f"\nheader functions: {len(functions)}, called from Swift: {len(set(used) & set(functions))}")
    diagnostics = check_module(functions)
    print(f"clang module CPerfOpt: {'builds' if not diagnostics else 'FAILS'}")
    failures += [f"module: {d}" for d in diagnostics]
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("swift checks: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
