"""`cat-aggregator profile --link NAME --bytes N [--block-size B]`: one message, frame by frame."""

from __future__ import annotations

import re

import pytest

from aggregator.cli import main
from edge.startup import make
from edge.profile import load_profile

LINE = re.compile(r"^link cost: (\d+) B -> (\d+) frames sent, tx (\d+) B, rx (\d+) B, ([\d.]+) ms radio on, (\d+) uJ$")


def _ask(capsys, *args: str) -> list[str]:
    assert main(["profile", *args]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(("n", "blocks"), [(500, 8), (1000, 16)])
def test_frames_sent_are_the_block1_exchanges_the_client_makes(capsys, n: int, blocks: int) -> None:
    out = _ask(capsys, "--link", "ieee802154-6lowpan-coap", "--bytes", str(n), "--block-size", "64")
    m = LINE.match(out[0])
    assert m and int(m[1]) == n and int(m[2]) == blocks        # one frame per 64 B block (<= 107 B datagrams)
    posts = [ln for ln in out if ln.startswith("node ->")]
    assert sum(int(re.search(r" x(\d+):", ln)[1]) if " x" in ln.split(":")[0] else 1 for ln in posts) == blocks
    assert any("2.31 Continue" in ln for ln in out) and "CoAP 2.04" in [ln for ln in out if ln.startswith("node <-")][-1]
    assert all("FCS 2" in ln for ln in out if ln.startswith("    "))


def test_a_larger_block_size_sends_fewer_larger_exchanges(capsys) -> None:
    small = LINE.match(_ask(capsys, "--link", "ieee802154-6lowpan-coap", "--bytes", "1000")[0])
    large = _ask(capsys, "--link", "ieee802154-6lowpan-coap", "--bytes", "1000", "--block-size", "512")
    m = LINE.match(large[0])
    # two blocks: 538 B and 511 B datagrams, FRAG1 96 B of data then FRAGNs of 104 B, the last up to 111 B
    assert int(m[2]) == 6 + 5 and "FRAG1" in "\n".join(large)
    assert float(m[6]) < float(small[6])


@pytest.mark.parametrize(("n", "best"), [(20, 64), (100, 128), (1000, 1024)])
def test_the_cheapest_block_size_is_shown(capsys, n: int, best: int) -> None:
    """Fewer, larger exchanges beat 64 B blocks once a message needs several (6LoWPAN fragments
    cost less than a CoAP exchange each); a message that needs no Block1 ties, and the profile's
    own size is named."""
    out = _ask(capsys, "--link", "ieee802154-6lowpan-coap", "--bytes", str(n))
    assert out[-2].startswith("by Block1 size: 16 B: ") and out[-2].count(" frames ") == 7
    assert out[-1].startswith(f"cheapest block size for {n} B: {best} B (")
    assert not any(ln.startswith("by Block1") for ln in _ask(capsys, "--link", "ieee802154-6lowpan-udp",
                                                               "--bytes", str(n)))


def test_thread_frames_show_security_and_the_mesh_header_and_add_up(capsys) -> None:
    """A mesh-under Thread router: every frame carries 10 B of security (aux header 6 + MIC 4) and
    a 5 B mesh header, so each header-by-header line sums to the size it prints; the 1,000 B
    message in 1,024 B blocks is one datagram of 1,020 B in 11 fragments (FRAG1 88 B of data in
    the 106 - 5 B room, FRAGNs of 96, the last 68)."""
    out = _ask(capsys, "--link", "ieee802154-thread-coap-mesh", "--bytes", "1000", "--block-size", "1024")
    m = LINE.match(out[0])
    assert m and int(m[2]) == 11
    frames = [ln for ln in out if ln.startswith("    ")]
    assert frames and all("| security 10 (aux header + MIC) | mesh 5 |" in ln for ln in frames)
    for ln in frames:
        parts, total = ln.split(" = ")[0].split(": ", 1)[1], int(ln.split(" = ")[1].split(" B")[0])
        assert sum(int(re.findall(r"\d+", p)[-1]) for p in parts.split(" | ")) == total <= 133, ln
    assert "UDP payload 88 " in frames[0] and "UDP payload 96 " in frames[1]
    plain = LINE.match(_ask(capsys, "--link", "ieee802154-thread-coap", "--bytes", "1000", "--block-size", "1024")[0])
    # without the mesh header: the same 11 fragments (96 B FRAGNs either way), 5 B less in each,
    # and in the 2.04 frame received
    assert int(plain[2]) == 11 and int(m[3]) - int(plain[3]) == 11 * 5 and int(m[4]) - int(plain[4]) == 5


def test_lorawan_counts_the_class_a_windows(capsys) -> None:
    out = _ask(capsys, "--link", "lorawan-eu868-sf7", "--bytes", "10")
    m = LINE.match(out[0])
    assert m and int(m[2]) == 1 and int(m[3]) == 23
    assert "RX1 window at SF7, 24 symbols = 24.6 ms" in out[-2] and "RX2 window at SF12, 6 symbols = 196.6 ms" in out[-1]
    # 23 B PHY payload: (8 + 4.25 + 8 + 8 x 5) symbols of 1.024 ms, then 24 + 6 x 32 symbols listening
    assert float(m[5]) == pytest.approx(61.696 + 24.576 + 196.608, abs=0.01)


@pytest.mark.parametrize(("args", "msg"), [
    (["--link", "wifi-tcp-mqtt-esp32", "--bytes", "10", "--block-size", "64"], "does not send CoAP block-wise"),
    (["--link", "ieee802154-6lowpan-coap", "--bytes", "10", "--block-size", "100"], "power of two"),
    (["--link", "ieee802154-6lowpan-udp", "--bytes", "1233"], "over ieee802154-6lowpan-udp's largest message (1232 B)"),
    (["--link", "ieee802154-6lowpan-udp", "--bytes", "0"], "--bytes must be >= 1"),
    (["--link", "ieee802154-6lowpan-udp"], "give --bytes N"),
    (["--link", "paper-packet-128-64-128", "--bytes", "10"], "paper model"),
    (["--profile", "ieee802154-6lowpan-udp", "--d", "10", "--rounds", "1", "--scheme", "s", "--T", "1",
      "--block-size", "64"], "--block-size goes with --bytes"),
])
def test_bad_questions_get_one_line(capsys, args: list[str], msg: str) -> None:
    assert main(["profile", *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_board_whose_block_size_differs_from_its_profile_is_refused() -> None:
    """The refusal names the profile that prices the board's block size: '<base>-b<B>'."""
    cfg = {"transport": "coap", "block_size": 128, "profile": load_profile("ieee802154-6lowpan-coap"),
           "host": "127.0.0.1", "job": 1, "node": 0}
    with pytest.raises(ValueError, match=r"^the CoAP client's block_size is 128 B but cost profile ieee802154-6lowpan-coap "
                                         r"prices 64 B blocks: use cost profile ieee802154-6lowpan-coap-b128 \(or block_size 64\)$"):
        make(cfg)
    cfg["profile"] = load_profile("ieee802154-thread-coap-b256")
    with pytest.raises(ValueError, match="prices 256 B blocks: use cost profile ieee802154-thread-coap-b128 "):
        make(cfg)
    cfg["block_size"] = None                            # absent: the profile's own
    with pytest.raises(ValueError, match="nonexistent.catd: cannot open"):  # past the checks, to the data file
        make(dict(cfg, data="/nonexistent.catd", key=bytes(32), downlink_key=bytes(32)))


def test_the_block_table_names_the_cheapest_profile(capsys) -> None:
    """`profile --block-table`: a row per message size, per-byte cost at every Block1 size, the
    cheapest in bold and named as the profile to use; ties go to the smaller block (less RAM)."""
    out = _ask(capsys, "--block-table", "64,65,1000", "--link", "ieee802154-6lowpan-coap")
    assert out[1].startswith("| link | message | 16 B | 32 B | 64 B |") and len(out) == 6
    rows = {ln.split(" | ")[1]: ln for ln in out[3:]}
    assert rows["64 B"].endswith("| ieee802154-6lowpan-coap |")        # one block at 64 B and above: a tie
    assert rows["65 B"].endswith("| ieee802154-6lowpan-coap-b128 |")   # one byte over: the next size up
    assert rows["1000 B"].endswith("| ieee802154-6lowpan-coap-b1024 |")
    assert rows["1000 B"].count("**") == 2
    every = _ask(capsys, "--block-table")
    assert {ln.split(" | ")[0][2:] for ln in every[3:]} == {"ieee802154-6lowpan-coap", "ieee802154-6lowpan-coap-ext",
                                                           "ieee802154-thread-coap", "ieee802154-thread-coap-mesh"}
    for args, msg in ((["--block-table", "--link", "wifi-tcp-mqtt-esp32"], "does not send CoAP block-wise"),
                      (["--block-table", "0"], "0 B is not a message"),
                      (["--block-table", "1,x"], "expected message sizes"),
                      (["--block-table", "--bytes", "10"], "leave out --bytes")):
        assert main(["profile", *args]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
