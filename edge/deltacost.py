"""C(T) with the node's share of the downlink: the model delta every node fetches each round.

CAT prices the node's update frame. But after each round every node also fetches the delta,
whose entries are the union of what all n nodes sent: on 802.15.4 CoAP (Block2 per 64 B) that
fetch is about half to three quarters of a node's round, on LoRaWAN a fifth to two fifths
(`cat-aggregator experiment link-costs`), so the frame's cost alone understates what a larger
T costs the node. With every node sending T entries on disjoint supports (the worst case the
energy budgets plan with, aggregator/lab/energy.py), the node's round costs

    C(T) = frame cost(T) + fetch(min(d, n T))

where fetch(m) is what fetching a delta of m entries costs the node in the model's metric
(joules, or seconds of radio time). A larger T now also costs the n T entries the node will
read back, which pulls T down; the fetch's fixed part (the GET exchange, the envelope) is paid
whatever T is, which pushes it up: both are the node's real round. Same interface as
edge.cost.CostModel where CAT uses it (cost, t_max, version, set_round, link, frame_bytes).
Runs unchanged on MicroPython and CPython; `fetch` comes from the caller (the simulator prices
it with aggregator.lab.energy.downlink_energy).
"""


from edge.energycost import CostOnTop


class DeltaShare(CostOnTop):
    """A cost model (CostModel or edge.energycost.BoardCost) plus the node's fetch of the delta."""

    def __init__(self, model, nodes, fetch):
        if nodes < 1:
            raise ValueError("nodes must be >= 1, got %r" % (nodes,))
        CostOnTop.__init__(self, model)
        self.nodes = int(nodes)
        self.fetch = fetch

    def delta_entries(self, t):
        """Entries of the delta when every node sends t on disjoint supports (at most d)."""
        m = self.nodes * t
        return m if m < self.d else self.d

    def cost(self, t):
        return self.model.cost(t) + self.fetch(self.delta_entries(t))
