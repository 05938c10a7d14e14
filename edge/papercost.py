"""The paper's cost models (§2.2: payload, affine, packet; eq. 5 and 6) for paper profiles: a
module of its own, imported by edge.cost.CostModel only for them, so a board priced by a link
profile does not hold its code. MicroPython and CPython.
"""

from edge.cbor import const
from edge.frame import index_bits

_SCHEME_IDENTITY = const(0)  # edge.cat's scheme numbers (folded: no dict entries on a board)
_SCHEME_SQ = const(2)


def no_metric(text, link):
    """The ValueError for a metric edge.cost does not compute, naming the ones it does."""
    from edge.profile import LINK_METRICS, PAPER_METRICS
    return ValueError("%s (use %s)" % (text, ", ".join(LINK_METRICS if link else PAPER_METRICS)))


def paper_payload_bits(scheme, d, t, fpp_bits):
    """P(T) of eq. (5): S and SS send T (index, float) pairs; S+Q one float and T indices."""
    if scheme == _SCHEME_IDENTITY:
        return d * fpp_bits
    b = index_bits(d)
    if scheme == _SCHEME_SQ:
        return fpp_bits + t * b
    return t * (b + fpp_bits)


def paper_cost(paper, metric, payload_bits):
    """Cost of a payload under the paper's payload / affine / packet model (units: bits by default)."""
    model = paper["model"]
    if model == "payload":
        bits = payload_bits
        packets = 1
    elif model == "affine":
        bits = paper["c1"] * payload_bits + 8.0 * paper["c0"]
        packets = 1
    elif model == "packet":
        pmax = 8.0 * paper["pmax_bytes"]
        packets = int((payload_bits + pmax - 1) // pmax)
        if packets < 1:
            packets = 1
        bits = 8.0 * (paper["c1"] * packets + paper["c0"])
    else:
        raise ValueError("unknown paper model %r" % model)
    if metric == "bits":
        return float(bits)
    if metric == "bytes":
        return bits / 8.0
    if metric == "packets":
        return float(packets)
    raise no_metric("metric %r is not defined for paper profiles" % metric, False)
