"""The job config's one description (aggregator.gateway.config.KEYS) against everything
derived from it or tied to it: the documented example, the defaults, the config message's
fields, the robust rules and cost metrics the checks accept, and the TOML snippets in docs/.

Why: the job file used to be described in six places that had drifted apart (the example
showed error_feedback = true and max_frame_bytes = 65536; the real defaults are false and
1 MiB). These tests fail as soon as a copy and the description disagree again.
"""
from __future__ import annotations

import dataclasses
import re
import textwrap
import tomllib
from pathlib import Path

import pytest

from aggregator.gateway import config, robust, wire
from aggregator.gateway.config import KEYS, REQUIRED, ConfigError, parse_job
from edge import cat, profile as profiles

ROOT = Path(__file__).resolve().parents[1]
HEX = "ab" * 32


def minimal() -> dict:
    """Only the required keys, at the example's values."""
    tree: dict = {"nodes": {"1": HEX}}
    for k in KEYS:
        if k.default is REQUIRED:
            tree.setdefault(k.section, {})[k.name] = HEX if k.path == "downlink.key" else k.example
    return tree


def comparable(job: config.Job) -> dict:
    d = dataclasses.asdict(job)
    del d["path"], d["transports"]
    return d


def test_the_docstring_shard_example_is_the_generated_one():
    doc = config.__doc__
    start = doc.index("    [shards.north]\n")
    end = doc.index("\n\n", start)
    assert textwrap.dedent(doc[start:end]) + "\n" == config.shard_example_toml()


def test_the_docstring_example_is_the_generated_one():
    doc = config.__doc__
    start = doc.index("    [job]\n")
    end = doc.index("\n\n", start)
    assert textwrap.dedent(doc[start:end]) + "\n" == config.example_toml()


def test_the_example_shows_the_real_defaults():
    text = config.example_toml().replace("<64 hex digits>", HEX)
    example = parse_job(tomllib.loads(text))
    defaults = parse_job(minimal())
    assert comparable(example) == comparable(defaults)
    # every key of the description appears in the example, in its section
    shown = tomllib.loads(text)
    for k in KEYS:
        assert k.name in shown[k.section], k.path
    for tname, port in config.TRANSPORTS.items():
        assert example.transports[tname].port == port


def test_defaults_are_read_like_given_values():
    """A default passes the same check a given value does (a bad default would fail here)."""
    job = parse_job(minimal())
    assert (job.rounds, job.seed, job.k_cap, job.history) == (30, 1, 128, 16)
    assert job.scheme == cat.SCHEME_SQ and job.rule == cat.RULE_CATAVG and job.fmt == wire.FMT_F32
    assert job.rule_param == 1                  # catavg: the node count of [nodes]
    assert job.error_feedback is False and job.max_frame_bytes == 1 << 20
    assert job.metric == profiles.load_profile(job.profile_name)["default_metric"]
    assert job.security.rate_limit_burst == 2 and job.aggregation.rule == "mean"


def test_every_key_fills_one_attribute_and_the_config_message():
    for group in (None,) + config.GROUPS:       # no attribute filled twice
        attrs = [k.attr for k in KEYS if k.attr and (k.section if k.section in config.GROUPS else None) == group]
        assert len(attrs) == len(set(attrs)), group
    job_fields = {f.name for f in dataclasses.fields(config.Job)}
    top = {k.attr for k in KEYS if k.attr and k.section not in config.GROUPS}
    assert job_fields == top | {"path", "node_keys", "transports", "shards", "security", "aggregation"}
    for group, cls in (("security", config.Security), ("aggregation", config.Aggregation)):
        assert {f.name for f in dataclasses.fields(cls)} == {k.attr for k in KEYS if k.section == group}
    # the config message: every field but d comes from one key; JobConfig has CONFIG_FIELDS
    assert {k.wire for k in KEYS if k.wire} | {"d"} == set(wire.CONFIG_FIELDS)
    assert tuple(f.name for f in dataclasses.fields(wire.JobConfig)) == wire.CONFIG_FIELDS
    job = parse_job(minimal())
    assert job.wire_config().model == wire.MODEL_LOGISTIC and job.wire_config().profile == job.profile_name


@pytest.mark.parametrize("k", KEYS, ids=lambda k: k.path)
def test_an_unknown_key_next_to_each_known_one_is_refused(k):
    tree = minimal()
    tree.setdefault(k.section, {})[k.name + "x"] = 1
    with pytest.raises(ConfigError, match=rf"^job.toml: {re.escape(k.path)}x: unknown key$"):
        parse_job(tree)


@pytest.mark.parametrize("k", [k for k in KEYS if k.default is REQUIRED], ids=lambda k: k.path)
def test_each_required_key_is_required(k):
    tree = minimal()
    del tree[k.section][k.name]
    with pytest.raises(ConfigError, match=rf"^job.toml: {re.escape(k.path)}: missing$"):
        parse_job(tree)


def test_rule_and_metric_names_come_from_their_homes():
    tree = minimal()
    tree["aggregation"] = {"rule": "mode"}
    with pytest.raises(ConfigError) as exc:
        parse_job(tree)
    assert str(exc.value) == f"job.toml: aggregation.rule: unknown rule 'mode' (use {', '.join(robust.RULES)})"
    for rule in robust.RULES:
        tree["aggregation"] = {"rule": rule}
        assert parse_job(tree).aggregation.rule == rule
    tree = minimal()
    for metric in profiles.LINK_METRICS:
        tree["cost"] = {"metric": metric}
        assert parse_job(tree).metric == metric
    tree["cost"] = {"profile": "paper-packet-128-64-128", "metric": "seconds"}
    with pytest.raises(ConfigError, match=f"use {', '.join(profiles.PAPER_METRICS)}"):
        parse_job(tree)


@pytest.mark.parametrize("section, body, message", [
    ("rounds", {"quorum": float("inf")}, "rounds.quorum: must be > 0 and finite"),
    ("transports", {"coap": {"baud": "fast"}}, "transports.coap.baud: must be int, got 'fast'"),
    ("transports", {"mqtt": {"host": 5}}, "transports.mqtt.host: must be str, got 5"),
    ("transports", {"lora": {}}, "transports.lora: unknown transport (use coap, mqtt or serial)"),
    ("transports", {"serial": {"ports": [1]}}, "transports.serial.ports: must be a list of device paths"),
    ("nodes", {"1": 5}, "nodes.1: must be a hex string"),
    ("nodes", {"1": "zz" * 32}, "nodes.1: is not hex"),
    ("downlink", {"key": "ab" * 31}, "downlink.key: must be 32 bytes (64 hex digits), got 31"),
])
def test_one_line_errors_name_the_field(section, body, message):
    tree = minimal()
    tree[section] = body
    with pytest.raises(ConfigError) as exc:
        parse_job(tree)
    assert str(exc.value) == f"job.toml: {message}"


def _doc_toml_blocks() -> list[tuple[str, str]]:
    out = []
    for md in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        for block in re.findall(r"```toml\n(.*?)```", md.read_text(), re.S):
            out.append((md.name, block))
    return out


@pytest.mark.parametrize("name, block", _doc_toml_blocks())
def test_job_file_snippets_in_the_docs_are_valid(name, block):
    """A snippet of a job file's sections (other TOML, e.g. node files, is skipped) parses when
    merged into a minimal job: no unknown or misspelled key, no value the checks refuse."""
    snippet = tomllib.loads(block)
    if not set(snippet) <= set(config.SECTIONS):
        pytest.skip("not a job file snippet")
    tree = minimal()
    for sec, body in snippet.items():
        tree[sec] = {**tree.get(sec, {}), **body}
    parse_job(tree, name)


def test_catavg_takes_the_job_node_count_unless_given():
    tree = minimal()
    tree["nodes"] = {"1": HEX, "2": HEX, "7": HEX}
    tree["training"] = {"scheme": "sq", "rule": "catavg"}
    job = parse_job(tree)
    assert (job.rule, job.rule_param) == (cat.RULE_CATAVG, 3)
    tree["training"]["rule_param"] = 16                    # a fleet larger than this table (shards)
    assert parse_job(tree).rule_param == 16
    tree["training"]["rule_param"] = -1
    with pytest.raises(ConfigError, match="rule_param must be >= 0"):
        parse_job(tree)
