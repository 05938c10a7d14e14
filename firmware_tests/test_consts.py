"""The edge's private `_NAME = const(v)` constants are usable on MicroPython.

Why: MicroPython folds `_NAME = const(v)` into the bytecode of the code that follows it and
keeps no global for it (that is the point: no dict entry, RAM on a board). So a use *before*
the definition, or a use of another module's private constant, is a NameError on a board
while CPython (where `const` is the identity and the global exists) runs fine. This checks the
source statically for every module a board gets, and that edge.cbor.publish gives CPython
code the public names.
"""

from __future__ import annotations

import ast
import re

import pytest

from firmware_tests import harness
from firmware_tests.budget import BOARD_MODULES

PRIVATE_CONST = re.compile(r"^_[A-Z][A-Z0-9_]*$")


def _const_defs(tree: ast.Module) -> dict[str, int]:
    defs: dict[str, int] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                and node.value.func.id == "const"):
            defs[node.targets[0].id] = node.lineno
    return defs


def _module_names(tree: ast.Module) -> set[str]:
    """Names bound at module level other than by const() (imports, defs, plain assignments)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


@pytest.mark.parametrize("module", [m for m in BOARD_MODULES if m != "__init__.py"])
def test_private_consts_defined_before_use(module: str) -> None:
    tree = ast.parse((harness.EDGE_DIR / module).read_text())
    defs = _const_defs(tree)
    bound = _module_names(tree)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and PRIVATE_CONST.match(node.id):
            if node.id in defs:
                if node.lineno <= defs[node.id]:
                    problems.append(f"line {node.lineno}: {node.id} used before its const() on line "
                                    f"{defs[node.id]}")
            elif node.id not in bound:
                problems.append(f"line {node.lineno}: {node.id} is not defined in this module")
    assert not problems, f"edge/{module}:\n" + "\n".join(problems)


def test_cpython_keeps_the_public_names() -> None:
    from edge import cat, cbor, coap, cose, datafile, dataheader, frame
    assert (frame.K_MODEL, frame.SCHEME_SQ, frame.FMT_F16, frame.D_MAX, frame.SUFFIX) == (16, 2, 1, 2**32 - 1, 9)
    assert (cose.TAG_LEN, cose.PREFIX_LEN, cose.SUFFIX_LEN, cose.HDR_KID) == (8, 11, 9, 4)
    assert (cbor.MT_MAP, cbor.SIMPLE_TRUE) == (5, 21)
    assert (cat.SCHEME_SS, cat.RULE_IDENTITY) == (3, 4)
    assert (coap.CONTENT, coap.CHANGED, coap.OPT_BLOCK2, coap.RX_SIZE) == (0x45, 0x44, 23, 1280)
    assert (dataheader.CATD_VERSION, dataheader.HEADER_SIZE, dataheader.LAYOUT_CSR, dataheader.VALUE_F32) == (1, 48, 1, 1)
    assert (datafile.LAYOUT_DENSE, datafile.LAYOUT_CSR) == (dataheader.LAYOUT_DENSE, dataheader.LAYOUT_CSR)


def test_private_consts_agree_across_modules() -> None:
    """The const() idiom makes a module that uses another's constant keep its own copy
    (edge.cat's scheme numbers in frame, cost, compress, node; CBOR major types in cose and
    frame; message kinds in pushlinks): a copy with the same name must have the same value."""
    values: dict[str, dict[str, object]] = {}
    for module in BOARD_MODULES:
        tree = ast.parse((harness.EDGE_DIR / module).read_text())
        for node in tree.body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                    and isinstance(node.value.func, ast.Name) and node.value.func.id == "const"):
                values.setdefault(node.targets[0].id, {})[module] = ast.literal_eval(node.value.args[0])
    copies = {name: by for name, by in values.items() if len(by) > 1}
    assert {"_SCHEME_SQ", "_MT_MAP", "_KIND_DELTA"} <= set(copies)
    differ = {name: by for name, by in copies.items() if len(set(by.values())) > 1}
    assert not differ, differ
