"""Error feedback (Stich et al. 2018) for edge.compress: the residual memory e of d floats.
A module of its own so that a board whose job has no error feedback never loads it.
MicroPython and CPython.
"""

from edge.learner import zeros


class Feedback:
    """Error-feedback memory: an array('f') of d on the edge (4*d bytes of RAM)."""

    def __init__(self, d):
        self.e = zeros(d)  # no 4 d-byte temporary

    def load(self, g, scale):
        """Turn g into v = scale*g + e in place; compress v with scale 1.0 afterwards."""
        e = self.e
        for j in range(len(g)):
            g[j] = g[j] * scale + e[j]

    def store(self, v, ws, res):
        """e <- v - q, where q is the sparse update just compressed from v."""
        e = self.e
        for j in range(len(v)):
            e[j] = v[j]
        idx = ws.idx
        vals = ws.vals
        for i in range(res.n):
            j = idx[i]
            e[j] = e[j] - vals[i]
