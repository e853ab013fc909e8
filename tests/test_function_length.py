"""No function in src/ has a body over MAX_BODY_LINES lines (issue 19): a longer one is
split into named steps. The body is counted from its first statement to its last line,
so a long signature (Config's, uvicorn's parameters) does not count; ruff's C901 bounds
complexity the same way (pyproject.toml)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "fastserve"
MAX_BODY_LINES = 120

# A Cython function's first line: def, cpdef or cdef with a return type, then its name
# and "(" (a `cdef class` or a `cdef` variable has no parenthesis after the name).
CYTHON_FUNCTION = re.compile(
    r"^(?P<indent>\s*)(?:async\s+)?(?:c?p?def)\s+(?!class\b)[\w\s\*\[\],.]*?(?P<name>\w+)\s*\("
)


def python_bodies(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        (node.name, node.end_lineno - node.body[0].lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]


def cython_bodies(path: Path) -> list[tuple[str, int]]:
    """(name, body lines) of each function, by indentation: the body starts after the
    line that ends the signature with ':' and runs to the last line indented deeper."""
    lines = path.read_text().splitlines()
    found = []
    for number, line in enumerate(lines):
        match = CYTHON_FUNCTION.match(line)
        if match is None:
            continue
        indent = len(match["indent"])
        start = number
        while not lines[start].split("#")[0].rstrip().endswith(":"):
            start += 1
        last = start
        for later in range(start + 1, len(lines)):
            text = lines[later]
            if text.strip() and len(text) - len(text.lstrip()) <= indent:
                break
            if text.strip():
                last = later
        found.append((match["name"], last - start))
    return found


def test_no_function_body_is_over_the_bound():
    long = []
    for path in sorted(SRC.rglob("*")):
        if path.suffix == ".py":
            bodies = python_bodies(path)
        elif path.suffix in (".pyx", ".pxd"):
            bodies = cython_bodies(path)
        else:
            continue
        long += [f"{path.name}: {name} ({size})" for name, size in bodies if size > MAX_BODY_LINES]
    assert long == []


def test_the_measure_sees_long_functions(tmp_path):
    """The check can fail: a long function is measured as long in both kinds of file."""
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_BODY_LINES + 1))
    python = tmp_path / "long.py"
    python.write_text(f"def long(\n    a,\n):\n{body}")
    cython = tmp_path / "long.pyx"
    cython.write_text(f"cdef inline int long(int a) noexcept:\n{body}\ncdef int after = 0\n")
    assert python_bodies(python) == [("long", MAX_BODY_LINES + 1)]
    assert cython_bodies(cython) == [("long", MAX_BODY_LINES + 1)]
