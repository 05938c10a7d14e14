"""Energy-aware C(T): the joules of a round that the node's choice of T decides, whole board.

With the job's metric in joules, a plain edge.cost.CostModel prices only the frame's radio
energy. On a microcontroller the CPU spends energy too, some of it growing with T (sorting
the chosen indices, writing values, encoding the frame and its MAC) and some of it paid
once per round whatever T is (the gradient, the selection, CAT's scan, the wake-up). CAT
maximises descent per joule across rounds, so both belong in the cost:

    C(T) = radio joules of the frame(T) + power_w x entry_s x T + round_j

The per-round constant makes a larger T worth more (fewer rounds), the per-entry term a
larger T cost more. power_w, entry_s and round_j come from the board profile and the compute
calibration (aggregator.lab.boardcompute.cat_terms), sent to a board as plain numbers in
node.json ("board_cost"). Runs unchanged on MicroPython and CPython.
"""


class CostOnTop:
    """A cost model with something added to its cost: forwards what CAT, the edge loop and the
    simulator read from an edge.cost.CostModel (t_max, version, set_round, frame_bytes, link,
    tabulated, tabulate, joules, packets);
    a subclass defines cost(t)."""

    def __init__(self, model):
        self.model = model
        self.metric = model.metric
        self.kind = model.kind
        self.affine = False
        self.d = model.d
        self.scheme = model.scheme

    @property
    def t_max(self):
        return self.model.t_max

    @property
    def version(self):
        return self.model.version

    def set_round(self, rnd):
        self.model.set_round(rnd)

    def frame_bytes(self, t):
        return self.model.frame_bytes(t)

    def link(self, t):
        return self.model.link(t)

    def tabulated(self, n):
        return self.model.tabulated(n)

    def tabulate(self, n):
        self.model.tabulate(n)

    def joules(self, t):
        return self.model.joules(t)

    def packets(self, t):
        return self.model.packets(t)

    def __call__(self, t):
        return self.cost(t)


class BoardCost(CostOnTop):
    """A CostModel's frame joules plus the board's compute energy; same interface as CostModel
    where CAT, the edge loop and the simulator use it (cost, t_max, version, set_round, link)."""

    def __init__(self, model, power_w, entry_s, round_j=0.0):
        if model.kind != "link":
            raise ValueError("energy-aware cost needs a link profile (radio joules)")
        CostOnTop.__init__(self, model)
        self.power_w = float(power_w)
        self.entry_s = float(entry_s)
        self.round_j = float(round_j)
        self.metric = "joules"

    def compute_j(self, t):
        """The CPU energy of a round that sends t entries (per-entry part and constant)."""
        return self.power_w * self.entry_s * t + self.round_j

    def cost(self, t):
        return self.model.joules(t) + self.compute_j(t)


def from_config(model, terms):
    """BoardCost for a node.json "board_cost" dict {"power_w", "entry_s", "round_j"}."""
    return BoardCost(model, terms["power_w"], terms["entry_s"], terms.get("round_j", 0.0))
