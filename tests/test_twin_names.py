"""The twin names of docs/architecture.md exist in both HTTP protocols.

The map says the two protocols use the same names for the same things, so that the
files read side by side; this test reads that list from the map and finds each name in
the pure protocol (the AST of h11_impl.py: methods, attributes assigned on `self`) and
in the C one (the `cdef` declarations and `def`s of _parser.pyx's classes, their bases
within the file included). A name renamed in one place only fails here."""

from __future__ import annotations

import ast
import re

import pytest

from process_util import ROOT

MAP = ROOT / "docs" / "architecture.md"
PURE = ROOT / "src" / "fastserve" / "protocols" / "http" / "h11_impl.py"
C_MODE = ROOT / "src" / "fastserve" / "_parser.pyx"
TWINS = {"protocol": ("HttpProtocol", "H11Protocol"), "cycle": ("RequestCycle", "RequestCycle")}

# "(`HttpProtocol` / `H11Protocol`, each with a `RequestCycle`; `settings`, ...;
# on the cycle `body_chunks`, ...), so the files read side by side"
NAME_LIST = re.compile(r"use the same names for the same things \((.*?)\), so the files", re.S)
CYCLE_PART = "on the cycle"


def twin_names() -> dict[str, list[str]]:
    """The map's names, by the class that holds them."""
    found = NAME_LIST.search(MAP.read_text())
    assert found, "docs/architecture.md no longer lists the twin names"
    text = found.group(1)
    protocol_part, _, cycle_part = text.partition(CYCLE_PART)
    protocol_part = protocol_part.split(";", 1)[1]  # past the class names themselves
    return {
        "protocol": re.findall(r"`(\w+)`", protocol_part),
        "cycle": re.findall(r"`(\w+)`", cycle_part),
    }


def pure_members(class_name: str) -> set[str]:
    tree = ast.parse(PURE.read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "self" and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return names


# `cdef class Name(Base):` and, inside a class, `cdef TYPE name...`, `cpdef TYPE name(`, `def name(`, ...
C_CLASS = re.compile(r"^cdef class (\w+)(?:\((\w+)\))?:\n(.*?)(?=^\S)", re.M | re.S)
C_MEMBER = re.compile(
    r"^    (?:cp?def (?:inline |public |readonly )?[\w.\[\]:*, ]*?\b(\w+)\s*(?:\(|$|#|=)"
    r"|(?:async )?def (\w+)\()",
    re.M,
)


def c_members(class_name: str) -> set[str]:
    classes = {m[1]: (m[2], m[3]) for m in C_CLASS.finditer(C_MODE.read_text() + "\nEND")}
    names: set[str] = set()
    while class_name in classes:
        base, body = classes[class_name]
        for match in C_MEMBER.finditer(body):
            names.add(match[1] or match[2])
        class_name = base
    return names


@pytest.mark.parametrize("part", sorted(TWINS))
def test_every_twin_name_of_the_map_is_in_both_protocols(part):
    c_class, pure_class = TWINS[part]
    names = twin_names()[part]
    assert len(names) > 5, names
    missing_c = [n for n in names if n not in c_members(c_class)]
    missing_pure = [n for n in names if n not in pure_members(pure_class)]
    assert not missing_c, f"_parser.pyx {c_class} lacks {missing_c}"
    assert not missing_pure, f"h11_impl.py {pure_class} lacks {missing_pure}"
