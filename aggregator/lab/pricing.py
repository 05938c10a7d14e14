"""What a node's frames cost under a cost profile, for the simulator, the experiments and the energy budgets.

Every price comes from the edge's own cost code (`edge.cost`): the exact wire frame
(`edge.frame.frame_length`) through `LinkCost` for a link profile, the paper's P(T)
(eq. 5 and 6) for a paper profile. Nothing here re-derives a link model.
"""

from __future__ import annotations

import math

from aggregator.errors import UserError
from edge.cost import CostModel, LinkCost
from edge.papercost import paper_cost, paper_payload_bits
from edge.frame import frame_length
from edge.profile import LINK_METRICS, PAPER_METRICS, ProfileError, load_profile

#: the shipped profiles of the paper's own cost models: the payload model with 64-bit floats
#: (eq. 5) and the packet models 128/64/128 and 576/64/512 (eq. 6, appendix I).
PAYLOAD = "paper-payload-fpp64"
PACKET_SMALL = "paper-packet-128-64-128"
PACKET_LARGE = "paper-packet-576-64-512"

#: every metric a run records per node and round: the paper's (defined for every profile)
#: first, then the ones only a link profile's radio gives (NaN under a paper profile).
COST_METRICS = PAPER_METRICS + tuple(m for m in LINK_METRICS if m not in PAPER_METRICS)


class CostArgumentError(UserError):
    """A cost profile that does not load, or a metric the profile does not define."""


def profile_dict(profile: str | dict) -> dict:
    """A loaded profile: `profile` itself when already loaded, else `edge.profile.load_profile`
    of its name or path (CostArgumentError naming the problem when that fails)."""
    if isinstance(profile, dict):
        return profile
    try:
        return load_profile(profile)
    except ProfileError as e:
        raise CostArgumentError(str(e)) from None


def messages(profile: dict, frame: int) -> list[int]:
    """The message sizes a `frame`-byte frame travels as on a link profile: itself, or (over the
    link's largest message) as many full messages as it takes plus the rest.

    Why: LoRaWAN has no fragmentation, so a big downlink delta goes as several messages and
    is priced so. An uplink update never does: NodeCost refuses one over the largest message.
    """
    mx = int(profile["message"]["max_bytes"])
    if frame <= mx:
        return [frame]
    k, rest = divmod(frame, mx)
    return [mx] * k + ([rest] if rest else [])


def lorawan_region(profile: dict) -> str | None:
    """"EU868", "US915", "AS923" or None: the profile's [lora] region (checked by edge/regions.py)."""
    return (profile.get("lora") or {}).get("region")


def link_models(prof: dict, dim: int, scheme: int, metric: str, fmt: int, telemetry: bool, nodes: int,
                rounds: int) -> list[CostModel]:
    """One CostModel per node, and (by building it at the run's last round first) the check
    that updates fit the link in every round: the round number is in the frame header, so
    a frame grows by a byte at rounds 24, 256 and 65536. set_round(r) keeps t_max right for
    each round as the run goes (compress is called with models[k].t_max).
    A metric the profile does not define raises CostArgumentError."""
    models = []
    for k in range(nodes):
        try:
            m = CostModel(prof, dim, scheme, metric, fmt, telemetry, 0, k, max(0, rounds - 1))
        except ValueError as e:
            raise CostArgumentError(str(e)) from None
        m.t_max_all_rounds = m.t_max     # the longest header of the run: fits every round
        m.set_round(0)
        models.append(m)
    return models


class FrameRefused(UserError):
    """An update frame larger than the link's largest message: the link would refuse it, so
    the simulator never prices it (the edge's t_max and SS draw limit keep frames within)."""


class NodeCost:
    """What a node's frame costs under one profile, for any number of entries (memoised).

    Link profiles: the exact wire frame (edge.frame.frame_length) through edge.cost.LinkCost.
    Paper profiles: the paper's P(T) through its payload/affine/packet model (no airtime or
    energy: NaN). The frame bytes are the real wire frame in both cases.
    """

    def __init__(self, profile: dict, model: CostModel) -> None:
        self.profile = profile
        self.model = model
        self.memo: dict[tuple[int, int], tuple] = {}

    def __call__(self, m: int) -> tuple[int, float, float, float, float, float, float]:
        """(frame bytes, then COST_METRICS in order: bits, bytes, packets, seconds, joules,
        then the profile's CAT metric) for m entries."""
        cm = self.model
        key = (m, cm.version)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        fb = frame_length(cm.d, m, cm.scheme, cm.fmt, cm.telemetry, cm.job, cm.node, cm.rnd)
        if self.profile["kind"] == "paper":
            paper = self.profile["paper"]
            pay = paper_payload_bits(cm.scheme, cm.d, m, 8.0 * paper["fpp_bytes"])
            bits = paper_cost(paper, "bits", pay)
            pk = paper_cost(paper, "packets", pay)
            val = (fb, bits, bits / 8.0, pk, math.nan, math.nan, paper_cost(paper, cm.metric, pay))
        else:
            mx = int(self.profile["message"]["max_bytes"])
            if fb > mx:
                raise FrameRefused(f"an update of {m} entries is a {fb} B frame, over the link's largest "
                                   f"message ({mx} B): the link would refuse it")
            tot = [0.0] * 6
            for size in messages(self.profile, fb):
                lc = LinkCost(self.profile, size)
                for i, v in enumerate((8.0 * lc.tx_bytes, float(lc.tx_bytes), float(lc.packets), lc.seconds,
                                       lc.joules, lc.metric(cm.metric))):
                    tot[i] += v
            val = (fb, *tot)
        self.memo[key] = val
        return val
