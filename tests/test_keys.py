"""Per-node key rotation: the new key works at once, the old one until its grace period
ends and then is refused as `key_expired`, a running gateway picks a rotation up without a
restart, the keyring survives restarts (0600, atomic) and journal replay, and the CLI.

Why: a key that leaked must be replaceable without stopping training, and devices that
were re-provisioned a little late must not lose their round.
"""
from __future__ import annotations

import os
import secrets
import stat
import time

import pytest

from aggregator import cli
from aggregator.gateway import keys as keymod, wire
from aggregator.gateway.config import parse_job
from aggregator.gateway.pipeline import ACCEPTED, Aggregator
from aggregator.gateway.state import Store

from test_pipeline import Clock, make_job, update


@pytest.mark.parametrize("n", [0, 1, 23, 24, 255, 256, 65535, 65536])
def test_mac_matches_the_wire_module(n):
    key = secrets.token_bytes(32)
    payload = secrets.token_bytes(n)
    assert keymod.KeyEntry(key).mac(payload) == wire._mac(key, payload)


def test_old_key_accepted_within_grace_refused_after_new_key_at_once(tmp_path):
    job, k = make_job(tmp_path, nodes=2, quorum=2.0)
    agg = Aggregator(job, Store(job.state_dir), clock=Clock())
    new = secrets.token_bytes(32)
    agg.rotate_key(0, new, grace_rounds=2)
    # round 0 (the round of the rotation): both keys work
    assert agg.submit(update(new, 0, 0), "t").status == ACCEPTED
    assert agg.submit(update(k[0], 0, 0), "t").status == "duplicate"     # same (node, round)
    agg.submit(update(k[1], 1, 0), "t")
    assert agg.state.round == 1
    assert agg.submit(update(k[0], 0, 1), "t").status == ACCEPTED         # round 1: still in grace
    agg.submit(update(k[1], 1, 1), "t")
    assert agg.state.round == 2                                            # grace over
    out = agg.submit(update(k[0], 0, 2), "t")
    assert out.reason == "key_expired" and out.node == 0
    assert agg.state.nodes[0].rejected == {"key_expired": 1}
    assert agg.submit(update(new, 0, 2), "t").status == ACCEPTED
    # a key never used for node 0 is still plain bad_mac, not attributed
    assert agg.submit(update(secrets.token_bytes(32), 0, 2), "t").reason == "bad_mac"


def test_grace_zero_revokes_at_once_and_replay_keeps_journaled_frames(tmp_path):
    job, k = make_job(tmp_path, nodes=2, quorum=2.0)
    agg = Aggregator(job, Store(job.state_dir), clock=Clock())
    assert agg.submit(update(k[0], 0, 0), "t").status == ACCEPTED         # journaled under the old key
    new = secrets.token_bytes(32)
    agg.rotate_key(0, new, grace_rounds=0)
    assert agg.submit(update(k[0], 0, 0, idx=(2,)), "t").reason == "key_expired"
    agg.store.close_journal()
    # crash: the new gateway loads the keyring, and still replays the acknowledged frame
    again = Aggregator(job, Store(job.state_dir), clock=Clock())
    assert again.keyring.current(0) == new
    assert again.recover() == 1 and list(again.pending) == [0]
    assert again.submit(update(k[0], 0, 0, idx=(3,)), "t").reason == "key_expired"
    mode = stat.S_IMODE(os.stat(job.state_dir / keymod.KEYRING).st_mode)
    assert mode == 0o600


def test_rotations_keep_a_bounded_key_list(tmp_path):
    job, k = make_job(tmp_path, nodes=1)
    agg = Aggregator(job, Store(job.state_dir), clock=Clock())
    for i in range(10):
        agg.rotate_key(0, secrets.token_bytes(32), grace_rounds=3, rid=f"r{i}")
    ents = agg.keyring.entries[0]
    assert len(ents) <= 2 + keymod.RETIRED_KEPT
    assert sum(e.until is not None and e.until > agg.state.round for e in ents) == 1   # one key in grace
    agg.rotate_key(0, secrets.token_bytes(32), grace_rounds=3, rid="r3")            # already applied
    assert len(agg.keyring.entries[0]) == len(ents)
    with pytest.raises(ValueError, match="already used"):
        agg.rotate_key(0, agg.keyring.current(0), 1)


def test_a_new_key_in_the_job_file_overrides_the_keyring(tmp_path):
    job, k = make_job(tmp_path, nodes=2)
    agg = Aggregator(job, Store(job.state_dir), clock=Clock())
    agg.rotate_key(1, secrets.token_bytes(32), 1)
    fresh = secrets.token_bytes(32)
    job.node_keys[1] = fresh                               # operator re-provisioned node 1 by hand
    again = Aggregator(job, Store(job.state_dir), clock=Clock())
    assert again.keyring.current(1) == fresh
    assert any("new key" in n for n in again.keyring.load_notes)


def write_job(tmp_path, job_keys: dict[int, bytes]) -> str:
    path = tmp_path / "job.toml"
    nodes = "\n".join(f'{n} = "{key.hex()}"' for n, key in job_keys.items())
    path.write_text(f"""
[job]
id = 4
rounds = 1000
[model]
kind = "logistic"
features = 30
L = 1.0
[training]
scheme = "s"
k_cap = 8
[rounds]
quorum = 2.0
deadline_s = 100.0
[nodes]
{nodes}
[downlink]
key = "{secrets.token_bytes(32).hex()}"
[state]
dir = "state"
""")
    return str(path)


def test_cli_rotate_reaches_a_running_gateway_without_restart(tmp_path, capsys):
    from aggregator.gateway.config import load_job
    from aggregator.ops.demo import ServiceThread, free_udp_port
    from aggregator.gateway.service import Endpoints
    from edge.coap import CoapClient

    k = {0: secrets.token_bytes(32), 1: secrets.token_bytes(32)}
    path = write_job(tmp_path, k)
    job = load_job(path)
    port = free_udp_port()
    svc = ServiceThread(job, Endpoints(coap=("127.0.0.1", port)))
    svc.start()
    try:
        keyfile = tmp_path / "node0.key"
        assert cli.main(["keys", "rotate", "0", "--job", path, "--grace-rounds", "1",
                         "--key-out", str(keyfile), "--wait", "10"]) == 0
        assert "applied by the gateway" in capsys.readouterr().out
        assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
        new = bytes.fromhex(keyfile.read_text().strip())
        with CoapClient("127.0.0.1", port, ack_timeout=0.5) as c:
            up = f"/cat/{job.job_id}/up"
            assert c.post(up, update(new, 0, 0))[1] == b"accepted"              # new key at once
            assert c.post(up, update(k[1], 1, 0))[1] == b"accepted"             # round 0 closes
            assert c.post(up, update(k[0], 0, 1))[1] == b"key_expired"          # grace of 1 round over
            assert c.post(up, update(new, 0, 1))[1] == b"accepted"
        assert cli.main(["keys", "list", "--job", path]) == 0
        out = capsys.readouterr().out
        assert f"node 0: {keymod.fingerprint(new)}" in out and "[keyring]" in out and "expired" in out
        assert keymod.fingerprint(k[1]) in out and new.hex() not in out
    finally:
        svc.stop()


def test_cli_rotate_checks_its_arguments(tmp_path, capsys):
    k = {0: secrets.token_bytes(32)}
    path = write_job(tmp_path, k)
    (tmp_path / "state").mkdir()
    assert cli.main(["keys", "rotate", "5", "--job", path]) == 2
    assert "node 5 is not in" in capsys.readouterr().err
    assert cli.main(["keys", "rotate", "0", "--job", path, "--key", "abcd"]) == 2
    assert cli.main(["keys", "rotate", "0", "--job", path, "--grace-rounds", "-1"]) == 2
    assert cli.main(["keys", "rotate", "0", "--job", path]) == 0
    out = capsys.readouterr().out
    assert "new key" in out and "queued" in out
    # stopped gateway: applied at the next start
    from aggregator.gateway.config import load_job
    job = load_job(path)
    agg = Aggregator(job, Store(job.state_dir), clock=Clock())
    assert agg.keyring.current(0) != k[0] and len(agg.keyring.entries[0]) == 2


@pytest.mark.parametrize("text, problem", [
    ("ab" * 32, None), ("AB" * 32, None), ("zz" * 32, "is not hex"), ("abc", "is not hex"),
    ("ab" * 31, "must be 32 bytes (64 hex digits), got 31"), ("ab" * 33, "must be 32 bytes (64 hex digits), got 33"),
    (7, "must be a hex string"),
])
def test_one_key_reader_for_every_place_a_key_is_typed(tmp_path, capsys, text, problem):
    """parse_key is the reader of the job file, the CLI, control requests and keyring.json;
    each caller says where, parse_key says what is wrong."""
    if problem is None:
        assert keymod.parse_key(text) == bytes.fromhex(text)
        return
    with pytest.raises(keymod.KeyFormatError) as exc:
        keymod.parse_key(text)
    assert str(exc.value) == problem
    if not isinstance(text, str):
        return
    path = write_job(tmp_path, {0: secrets.token_bytes(32)})
    (tmp_path / "state").mkdir()
    assert cli.main(["keys", "rotate", "0", "--job", path, "--key", text]) == 2
    assert capsys.readouterr().err.strip() == f"cat-aggregator: --key: {problem}"
    (tmp_path / "k.hex").write_text(text + "\n")
    assert cli.main(["keys", "rotate", "0", "--job", path, "--key-file", str(tmp_path / "k.hex")]) == 2
    assert capsys.readouterr().err.strip() == f"cat-aggregator: {tmp_path / 'k.hex'}: {problem}"
    assert not keymod.control_dir(tmp_path / "state").exists()             # nothing queued


def test_a_control_request_with_a_bad_key_is_set_aside(tmp_path):
    from aggregator.gateway.metrics import MetricsLog, read_log
    job, k = make_job(tmp_path, nodes=2)
    agg = Aggregator(job, Store(job.state_dir), MetricsLog(tmp_path / "m.jsonl"), clock=Clock())
    req = keymod.submit_request(job.state_dir, "rotate", 0, key="ab" * 31, grace_rounds=1)
    assert agg.poll_control(force=True) == 0
    bad = keymod.control_dir(job.state_dir) / f"{req['id']}.json.bad"
    assert bad.exists() and agg.keyring.current(0) == k[0]
    errors = [e["error"] for e in read_log(tmp_path / "m.jsonl") if e["event"] == "control_error"]
    assert errors == ["key: must be 32 bytes (64 hex digits), got 31"]


def test_an_unreadable_keyring_is_one_line_at_the_cli(tmp_path, capsys):
    path = write_job(tmp_path, {0: secrets.token_bytes(32)})
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / keymod.KEYRING).write_text("{not json")
    assert cli.main(["keys", "list", "--job", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cat-aggregator: {tmp_path / 'state' / keymod.KEYRING}: unreadable keyring")
    assert err.count("\n") == 1
