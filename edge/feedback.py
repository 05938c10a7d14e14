"""Error feedback (Stich et al. 2018) for edge.compress, at no extra RAM: the residual e lives
in the node's gradient array. edge.learner.loss_and_grad(..., add=scale) accumulates the
step-scaled gradient straight into it (v = e + scale * g), compress takes v with scale 1.0,
and `store` leaves e = v - q. A module of its own so that a board whose job has no error
feedback never loads it. MicroPython and CPython.
"""


class Feedback:
    """Error-feedback memory over a caller's array('f') of d (the node's gradient array)."""

    def __init__(self, e):
        self.e = e
        self.reset()

    def reset(self):
        """Forget the residual (a new job, or a snapshot staged through the same array)."""
        e = self.e
        for j in range(len(e)):
            e[j] = 0.0

    def add(self, g, scale):
        """e <- e + scale * g for a gradient already in an array (kernel tests, callers that
        compute g elsewhere); the edge loop has loss_and_grad accumulate into e instead."""
        e = self.e
        for j in range(len(e)):
            e[j] = e[j] + g[j] * scale

    def store(self, ws, res):
        """e <- v - q, where v is in e and q the sparse update just compressed from it."""
        e = self.e
        idx = ws.idx
        vals = ws.vals
        for i in range(res.n):
            j = idx[i]
            e[j] = e[j] - vals[i]
