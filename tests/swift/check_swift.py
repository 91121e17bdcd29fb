"""What can be checked of the Swift package without a Swift toolchain.

1. Every Swift file (bindings/swift, examples/swift) parses with tree-sitter-swift:
   no ERROR or MISSING node.
2. Every perfopt_* C function the Swift code calls exists in include/perfopt.h
   with the number of arguments used, and the package calls every function
   the header exports (the binding is complete).
3. The C module (Sources/CPerfOpt/module.modulemap over the header) builds as a
   clang module: an Objective-C file `@import CPerfOpt;` that calls every
   function compiles without a diagnostic (libclang, -fmodules).
4. The Swift `Status` enum (Sources/PerfOpt) has exactly the header's
   perfopt_status codes, with the same raw values: PERFOPT_ERR_NOT_A_FILE is
   `notAFile = 21`, PERFOPT_OK `ok = 0`, PERFOPT_COMPILE_SKIPPED
   `compileSkipped = 20`; acronyms stay upper case (`invalidUTF8`), and a
   Swift keyword is written with backticks (`` `internal` ``).

5. The README's Swift code is the Swift example's, word for word (the part of
   examples/swift/TTSBackend/Sources/TTSBackend/main.swift between its
   `// README: begin` and `// README: end` markers), so what the README shows
   is what `make test-swift` compiles and runs.

Prints a table and exits non-zero on any failure. These checks run on every
machine; where a Swift toolchain is present `make test-swift` then builds the
package, runs its XCTests and runs the example (tests/cpp/swift_mirror.c
replays the XCTests' C calls for machines without one).
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
SWIFT_SOURCES = ROOT / "bindings" / "swift" / "Sources" / "PerfOpt"
README = ROOT / "README.md"
README_EXAMPLE = ROOT / "examples" / "swift" / "TTSBackend" / "Sources" / "TTSBackend" / "main.swift"
STATUS_ENUM = "perfopt_status"
SWIFT_STATUS = "Status"
# Words of a status name kept upper case in its Swift case (PERFOPT_ERR_INVALID_UTF8 -> invalidUTF8).
ACRONYMS = {"UTF8", "ABI", "API", "CPU", "GPU", "CUDA", "MPS", "JSON", "UTF"}
# Swift keywords a case name must write with backticks.
SWIFT_KEYWORDS = {
    "associatedtype", "class", "deinit", "enum", "extension", "fileprivate", "func", "import", "init",
    "inout", "internal", "let", "open", "operator", "private", "protocol", "public", "rethrows", "static",
    "struct", "subscript", "typealias", "var", "break", "case", "continue", "default", "defer", "do",
    "else", "fallthrough", "for", "guard", "if", "in", "repeat", "return", "switch", "where", "while",
    "as", "catch", "false", "is", "nil", "super", "self", "throw", "throws", "true", "try", "any", "some",
}


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


def header_statuses() -> dict:
    """perfopt_status's constants and values, as the header declares them."""
    index = ci.Index.create()
    tu = index.parse(str(HEADER), args=["-x", "c", "-std=c11", "-isystem", gcc_include_dir()])
    for c in tu.cursor.get_children():
        if c.kind == ci.CursorKind.ENUM_DECL and c.spelling == STATUS_ENUM:
            return {k.spelling: k.enum_value for k in c.get_children() if k.kind == ci.CursorKind.ENUM_CONSTANT_DECL}
    raise SystemExit(f"include/perfopt.h declares no enum {STATUS_ENUM}")


def swift_case_name(c_name: str) -> str:
    """PERFOPT_ERR_NOT_A_FILE -> notAFile, PERFOPT_OK -> ok, PERFOPT_ERR_INTERNAL -> `internal`."""
    for prefix in ("PERFOPT_ERR_", "PERFOPT_"):
        if c_name.startswith(prefix):
            c_name = c_name[len(prefix):]
            break
    words = c_name.split("_")
    name = words[0].lower() + "".join(w if w in ACRONYMS else w.capitalize() for w in words[1:])
    return f"`{name}`" if name in SWIFT_KEYWORDS else name


def swift_enum_cases(node, source, enum_name: str):
    """{case: raw value text} of each `enum enum_name` in the tree (a list: one per declaration)."""
    found = []
    if node.type == "class_declaration" and any(c.type == "enum" for c in node.children):
        names = [c for c in node.children if c.type == "type_identifier"]
        if names and source[names[0].start_byte : names[0].end_byte].decode() == enum_name:
            cases = {}
            body = next((c for c in node.children if c.type == "enum_class_body"), None)
            for entry in body.children if body else []:
                if entry.type != "enum_entry":
                    continue
                name = None
                for part in entry.children:
                    text = source[part.start_byte : part.end_byte].decode()
                    if part.type == "simple_identifier":
                        name = text
                        cases[name] = None
                    elif name is not None and part.type not in ("=", ",", "case", "comment"):
                        cases[name] = text
                        name = None
            found.append(cases)
    for child in node.children:
        found += swift_enum_cases(child, source, enum_name)
    return found


def status_differences(statuses: dict, parser) -> list:
    """How the Swift Status enum differs from the header's perfopt_status (empty: it does not)."""
    declarations = []
    for path in sorted(SWIFT_SOURCES.rglob("*.swift")):
        source = path.read_bytes()
        for cases in swift_enum_cases(parser.parse(source).root_node, source, SWIFT_STATUS):
            declarations.append((path.relative_to(ROOT), cases))
    if len(declarations) != 1:
        where = ", ".join(str(p) for p, _ in declarations) or "nowhere"
        return [f"enum {SWIFT_STATUS} must be declared once in {SWIFT_SOURCES.relative_to(ROOT)}; found {where}"]
    rel, cases = declarations[0]
    problems = []
    expected = {swift_case_name(name): (name, value) for name, value in statuses.items()}
    for case, (c_name, value) in sorted(expected.items(), key=lambda kv: kv[1][1]):
        if case not in cases:
            problems.append(f"{rel}: {SWIFT_STATUS} lacks case {case} = {value} (the header's {c_name})")
            continue
        raw = cases[case]
        try:
            raw_value = int(raw, 0) if raw is not None else None
        except ValueError:
            raw_value = None
        if raw_value != value:
            problems.append(
                f"{rel}: {SWIFT_STATUS}.{case} = {raw if raw is not None else '(no raw value)'}, "
                f"but the header's {c_name} is {value}"
            )
    for case in sorted(set(cases) - set(expected)):
        problems.append(f"{rel}: {SWIFT_STATUS}.{case} = {cases[case]} is not in the header's {STATUS_ENUM}")
    return problems


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


def readme_differences() -> list:
    """The README's ```swift block against the example's marked part."""
    example = README_EXAMPLE.read_text()
    begin, end = "// README: begin\n", "// README: end\n"
    if begin not in example or end not in example:
        return [f"{README_EXAMPLE.relative_to(ROOT)}: no README markers"]
    marked = example.split(begin, 1)[1].split(end, 1)[0]
    # A block may be indented (inside a list item): compare it dedented.
    blocks = [
        "".join(line[len(indent):] if line.startswith(indent) else line.lstrip(" ")
                for line in body.splitlines(True))
        for indent, body in re.findall(r"^( *)```swift\n(.*?)^\1```", README.read_text(), re.S | re.M)
    ]
    if not blocks:
        return ["README.md: no ```swift block"]
    if marked not in blocks:
        return ["README.md: its ```swift block is not the example's marked part (copy it from "
                f"{README_EXAMPLE.relative_to(ROOT)})"]
    return []


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
    statuses = header_statuses()
    differences = status_differences(statuses, parser)
    print(f"Swift {SWIFT_STATUS} against {STATUS_ENUM} ({len(statuses)} codes): "
          f"{'matches' if not differences else 'DIFFERS'}")
    failures += differences
    readme = readme_differences()
    print(f"README's Swift code against {README_EXAMPLE.relative_to(ROOT)}: {'the same' if not readme else 'DIFFERS'}")
    failures += readme
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("swift checks: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
