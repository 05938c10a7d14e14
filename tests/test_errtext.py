"""edge/errtext.py: the texts of the edge's error messages, formatted by edge.cbor.errmsg where
they are raised (the raising modules hold numbers, not strings: a board's heap, docs/firmware.md)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import edge
from edge import cose, errtext
from edge.cbor import FrameError

EDGE = Path(edge.__file__).resolve().parent
# a printf conversion: %% is none, %d %r %s %x %.1f %02x are one each
_CONV = re.compile(r"%(?:%|[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa])")


def _calls():
    """(module, line, n, args node or None) of every errmsg(n[, args]) in edge/."""
    for path in sorted(EDGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "errmsg":
                assert isinstance(node.args[0], ast.Constant), (path.name, node.lineno)
                yield path.name, node.lineno, node.args[0].value, node.args[1] if len(node.args) > 1 else None


def test_every_text_is_raised_and_written_once_with_its_number_of_arguments():
    calls = list(_calls())
    used = sorted({n for _, _, n, _ in calls})
    assert used == list(range(len(errtext.TEXT))), "an unknown number, or a text no one raises"
    assert len(set(errtext.TEXT)) == len(errtext.TEXT), "a text written twice: raise it by its first number"
    for mod, line, n, args in calls:
        convs = [c for c in _CONV.findall(errtext.TEXT[n]) if c != "%%"]
        if args is None:
            assert not convs, (mod, line, errtext.TEXT[n])
        elif isinstance(args, ast.Tuple):
            assert len(args.elts) == len(convs), (mod, line, errtext.TEXT[n])
        else:
            assert len(convs) == 1, (mod, line, errtext.TEXT[n])


# errors a board does meet in operation (an unreachable gateway, a lost datagram, a timeout) keep
# their text where they are raised: loading errtext then would cost heap at the wrong moment
KEPT = ("cannot resolve", "client is closed", "socket error", "a datagram of more than rx_size",
        "no separate response", "no ACK from", "server reset the request", "gateway unreachable",
        "no new round")


def test_raising_modules_hold_no_long_message_strings():
    """A string constant longer than 10 characters is a heap object of its own in a board's .mpy
    module (shorter ones are interned qstrs): the modules that use errmsg keep their texts in errtext."""
    users = sorted({mod for mod, _, _, _ in _calls()})
    assert {"frame.py", "coap.py", "cbor.py", "cose.py", "datafile.py", "snapshot.py"} <= set(users)
    kept = set()
    for name in users:
        tree = ast.parse((EDGE / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                args = node.exc.args[1:] if getattr(node.exc.func, "id", "") == "FrameError" else node.exc.args
                for arg in args:
                    text = arg.left if isinstance(arg, ast.BinOp) else arg
                    if isinstance(text, ast.Constant) and isinstance(text.value, str) and len(text.value) > 10:
                        assert text.value.startswith(KEPT), (name, node.lineno, text.value)
                        kept.add(text.value)
    assert len(kept) == len(KEPT)


def test_the_message_is_the_text():
    """CPython keeps errtext once loaded (a board lets it go: firmware_tests/test_errtext_mp.py)."""
    with pytest.raises(ValueError, match=r"^MAC key must be 32 bytes, got 31$"):
        cose.check_key(bytes(31))
    with pytest.raises(FrameError, match=r"^not_mac0: not CBOR tag 17$"):
        cose.parse_head(b"\x00")
    assert sys.modules["edge.errtext"] is errtext
