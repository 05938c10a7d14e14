# What a node keeps on its filesystem across deep sleep (RAM is lost: the board reboots into
# main.py), and how it takes it back. Imported only by a node whose node.json asks for deep
# sleep ("sleep": {"mode": "deep", ...}, edge/board.py). MicroPython and CPython.
#
# Two files (docs/firmware.md, "Sleepy boards"):
#
# <state>: the node's state after it computed a round's frame and before that frame leaves,
# written to <state>.tmp, then renamed over <state> (a power cut mid-write leaves the old
# file). Little-endian:
#   0   4  magic "CATs"
#   4   1  format (1)
#   5   1  flags: 1 = the error-feedback residual follows the model; 2 = the node's last
#            update follows the frame (rule catavg on S and S+Q reads the next delta against it)
#   6   2  node id
#   8   4  job id
#  12   4  n, floats in the model (d, or classes x d)
#  16   1  scheme       17  1  value format      18  1  compact (0/1)     19  1  0
#  20   4  the job's K cap (k_cap of the config)
#  24   4  the job's seed
#  28   4  version of the model (int32)
#  32   4  round of the frame (int32; -1: none)
#  36   4  frame length in bytes
#  40   4  the SS sampler's state (edge.compress.XorShift32)
#  44  4n  model, float32 (array('f') bytes: every supported port is little-endian)
#   .  4n  residual, float32 (only with flag 1)
#   .   L  the frame: the COSE-signed bytes sent for that round, resent as they are
#   .   4  T, entries of the last update (only with flag 2)
#   .  bT  its indices, ascending, b bytes each as in the node's index buffer (2 when d <= 65536,
#            else 4: edge.topk.alloc_index)
#   .  4T  its values, float32
#   .  32  SHA-256 of every byte above
#
# <state>.sent: 16 bytes, rewritten in place twice a round: "SENT" before the frame leaves,
# "ACKD" once the gateway acknowledged it; then job id, round (int32), and the first 4 bytes
# of the SHA-256 of those 12 bytes. It bounds the rounds the node may already have signed a
# frame for even when <state> is lost: a node never signs a second, different frame for such a
# round (the gateway would take it for a duplicate and apply only the first).
#
# Arrays are written and read in place, through memoryviews of at most _CHUNK floats: no
# second d-sized buffer. A state file that fails its checksum (a flipped byte, a truncated
# write) or belongs to another job or setting is not used: the model is zeroed, the residual
# reset, and the node takes the snapshot at its next sync.

import hashlib
import json
import os
import struct

from edge.cbor import const

_FORMAT = const(1)
_HDR = "<4sBBHIIBBBBIIiiII"
_HDR_LEN = const(44)
_DIGEST = const(32)
_CHUNK = const(128)       # floats per read/write: 512 bytes
_MARK_LEN = const(16)
MAGIC = b"CATs"
_SENT = b"SENT"
_ACKD = b"ACKD"
_SCHEME_SS = const(3)     # edge.cat's numbers (folded: no dict entries on a board)
_RULE_CATAVG = const(5)


def _file_size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _sync(f):
    # CPython: to the disk before the rename; MicroPython's close() commits the file
    f.flush()
    if hasattr(os, "fsync"):
        os.fsync(f.fileno())


def _part(f, h, mv, nbytes, write):
    """Write memoryview mv of nbytes bytes (or read exactly those into it), hashing it; False
    when the file ends first."""
    if write:
        f.write(mv)
    elif f.readinto(mv) != nbytes:
        return False
    h.update(mv)
    return True


def _arrays(f, h, arr, write):
    """Write (or read into) array('f') arr in place, _CHUNK floats at a time, hashing as it goes."""
    mv = memoryview(arr)
    n = len(arr)
    i = 0
    while i < n:
        j = i + _CHUNK
        if j > n:
            j = n
        if not _part(f, h, mv[i:j], 4 * (j - i), write):
            return False
        i = j
    return True


def _keeps_update(node):
    """True when the rule reads the next delta against the node's last update (catavg on S
    and S+Q: the condition of EdgeNode._observer), which the state file then keeps."""
    rule = node.rule
    return rule is not None and rule.kind == _RULE_CATAVG and node.scheme != _SCHEME_SS


def _flags(node):
    """The header's flags for node: 1 with error feedback, 2 when it keeps its last update."""
    return (1 if node.feedback is not None else 0) | (2 if _keeps_update(node) else 0)


def _entry_bytes(arr):
    """Bytes per entry of array arr (MicroPython's memoryview may lack itemsize)."""
    return len(bytes(memoryview(arr)[:1]))


def _update(f, h, ws, t, write):
    """The node's last update, T = t entries of ws.idx and ws.vals, after its count: written,
    or read into ws in place (t: the count the file's size implies, checked against the one
    it holds). False when the file ends first or the counts differ."""
    cnt = struct.pack("<I", t)
    if write:
        f.write(cnt)
    else:
        got = f.read(4)
        if got != cnt:
            return False
    h.update(cnt)
    return _part(f, h, memoryview(ws.idx)[:t], _entry_bytes(ws.idx) * t, write) \
        and _part(f, h, memoryview(ws.vals)[:t], 4 * t, write)


class SleepState:
    """The state file of a node that deep-sleeps between rounds (path: node.json's "state").

    EdgeNode calls restore() with the first config after a boot, save() when it has computed
    a round's frame (before sending it) and acked() when the gateway took it. `status` says
    what restore() found, for the console line edge/board.py prints."""

    def __init__(self, path):
        self.path = path
        self.pending = True        # restore() not called yet in this boot
        self.status = None
        self.saves = 0

    # ------------------------------------------------------------------ the round marker
    def _mark(self, tag, job, rnd):
        body = struct.pack("<4sIi", tag, job, rnd)
        with open(self.path + ".sent", "wb") as f:
            f.write(body)
            f.write(hashlib.sha256(body).digest()[:4])
            _sync(f)

    def marker(self, job):
        """(round, acknowledged) of the last frame this node signed for `job`; None when there
        is no marker (or it is another job's); False when it is unreadable."""
        try:
            with open(self.path + ".sent", "rb") as f:
                raw = f.read(_MARK_LEN + 1)
        except OSError:
            return None
        if len(raw) != _MARK_LEN or hashlib.sha256(raw[:12]).digest()[:4] != raw[12:]:
            return False
        tag, j, rnd = struct.unpack("<4sIi", raw[:12])
        if tag != _SENT and tag != _ACKD:
            return False
        if j != job:
            return None
        return rnd, tag == _ACKD

    # ------------------------------------------------------------------ save
    def save(self, node):
        """Persist the node after compute(): model, residual, sampler and the frame of
        node.frame_round; then mark the round as signed. Call before the frame is sent."""
        cfg = node.cfg
        ef = node.feedback is not None
        keep = _keeps_update(node)
        tmp = self.path + ".tmp"
        h = hashlib.sha256()
        with open(tmp, "wb") as f:
            hdr = struct.pack(_HDR, MAGIC, _FORMAT, _flags(node), node.node, node.job, len(node.model),
                              node.scheme, cfg["fmt"], 1 if cfg["compact"] else 0, 0, cfg["k_cap"],
                              cfg["seed"] & 0xFFFFFFFF, node.version, node.frame_round, node.frame_len,
                              node.rng.s & 0xFFFFFFFF)
            f.write(hdr)
            h.update(hdr)
            _arrays(f, h, node.model, True)
            if ef:
                _arrays(f, h, node.grad, True)
            _part(f, h, memoryview(node.buf)[:node.frame_len], node.frame_len, True)
            if keep:
                _update(f, h, node.ws, node.last["T"], True)
            f.write(h.digest())
            _sync(f)
        self._commit(tmp)
        self.saves += 1
        self._mark(_SENT, node.job, node.frame_round)

    def _commit(self, tmp):
        try:
            os.rename(tmp, self.path)      # atomic over the old file (POSIX, littlefs)
        except OSError:
            # FAT refuses to rename over a file: remove first; a cut in between leaves only
            # the complete .tmp, which restore() takes
            _remove(self.path)
            os.rename(tmp, self.path)
        if hasattr(os, "fsync") and hasattr(os, "O_RDONLY"):   # CPython: the rename, durable
            try:
                fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass

    def acked(self, node):
        """The gateway acknowledged the frame of node.last_sent."""
        self._mark(_ACKD, node.job, node.last_sent)

    # ------------------------------------------------------------------ restore
    def restore(self, node, cfg):
        """Take the state back after a boot, with the first config (the node's buffers are set
        up for it). Sets node.version, model, residual, sampler, the frame, the last update (in
        ws) and last_sent; or starts afresh (version -1: the snapshot at the next sync, residual
        zero)."""
        self.pending = False
        path = self.path
        if _file_size(path) < 0 and _file_size(path + ".tmp") >= 0:
            path = path + ".tmp"           # cut between FAT's remove and rename
        why = self._read(path, node, cfg)
        mark = self.marker(node.job)
        if why is None:
            node.last_sent = -1
            if mark and mark[1] and mark[0] == node.frame_round:
                node.last_sent = node.frame_round   # acknowledged: nothing to resend
            self.status = {"state": "resumed", "version": node.version, "frame_round": node.frame_round,
                           "acked": node.last_sent == node.frame_round}
            return self.status
        # Not usable: start afresh, never trusting a byte of it.
        for j in range(len(node.model)):
            node.model[j] = 0.0
        if node.feedback is not None:
            node.feedback.reset()
        node.version = -1
        node.frame_round = -1
        node.frame_len = 0
        if mark:
            node.last_sent = mark[0]        # signed up to that round: never again for it
        elif mark is False or why != "absent" and why != "other":
            node.last_sent = cfg["round"]   # unknown: sit this round out
        else:
            node.last_sent = -1
        self.status = {"state": "fresh" if why == "absent" else ("other" if why == "other" else "corrupt"),
                       "why": why, "resume_after": node.last_sent}
        return self.status

    def _read(self, path, node, cfg):
        """None when path held this node's state for cfg and it is now in node; else why not."""
        size = _file_size(path)
        if size < 0:
            return "absent"
        ef = node.feedback is not None
        n = len(node.model)
        try:
            f = open(path, "rb")
        except OSError:
            return "absent"
        try:
            hdr = f.read(_HDR_LEN)
            if len(hdr) != _HDR_LEN:
                return "truncated"
            (magic, fmt_v, flags, nd, job, fn, scheme, fmt, compact, _, k_cap, seed, version, frnd, flen,
             rng) = struct.unpack(_HDR, hdr)
            h = hashlib.sha256(hdr)
            if magic != MAGIC or fmt_v != _FORMAT:
                return "not a state file"
            if nd != node.node or job != node.job or fn != n or scheme != node.scheme or fmt != cfg["fmt"] \
                    or compact != (1 if cfg["compact"] else 0) or k_cap != cfg["k_cap"] \
                    or seed != cfg["seed"] & 0xFFFFFFFF or flags != _flags(node):
                # Another node, job or setting, or a flipped byte in these fields: tell which.
                return "other" if self._intact(f, h, size) else "checksum"
            t = -1
            left = size - (_HDR_LEN + 4 * n * (2 if ef else 1) + flen + _DIGEST)
            if flags & 2:       # the update's count, from the size: each entry an index and a float
                left -= 4
                per = _entry_bytes(node.ws.idx) + 4
                t = left // per
                if left >= 0 and t <= node.ws.cap:
                    left -= t * per
            if left != 0 or flen > len(node.buf):
                return "size"
            if not _arrays(f, h, node.model, False):
                return "truncated"
            if ef and not _arrays(f, h, node.grad, False):
                return "truncated"
            if not _part(f, h, memoryview(node.buf)[:flen], flen, False):
                return "truncated"
            if t >= 0 and not _update(f, h, node.ws, t, False):
                return "checksum"       # the count the file holds is not the one its size implies
            if f.read(_DIGEST) != h.digest():
                return "checksum"
        finally:
            f.close()
        node.version = version
        node.frame_round = frnd
        node.frame_len = flen
        node.rng.s = rng
        if frnd >= 0:
            node.last = {"round": frnd, "bytes": flen, "resent": True}
            if t >= 0:
                node.last["T"] = t      # in ws: catavg reads the next delta against it
        return None

    def _intact(self, f, h, size):
        """True when the rest of f (after the header already in h) matches its digest: hashed
        through a small scratch buffer (the arrays are not this file's size)."""
        left = size - _HDR_LEN - _DIGEST
        if left < 0:
            return False
        buf = bytearray(64)
        mv = memoryview(buf)
        while left > 0:
            m = 64 if left > 64 else left
            if f.readinto(mv[:m]) != m:
                return False
            h.update(mv[:m])
            left -= m
        return f.read(_DIGEST) == h.digest()


# ---------------------------------------------------------------------- node.json, one boot
def check(s, timeout=None):
    """node.json's "sleep", checked, with its defaults; a ValueError names what is wrong
    (edge/startup.py makes it a BoardError, `flash` a UserError)."""
    if not isinstance(s, dict):
        raise ValueError('"sleep" must be an object like {"mode": "deep"}')
    for k in s:
        if k not in ("mode", "state", "interval", "wait"):
            raise ValueError("sleep: unknown key %r (mode, state, interval, wait)" % (k,))
    if s.get("mode") != "deep":
        raise ValueError('sleep.mode must be "deep", got %r' % (s.get("mode"),))
    st = s.get("state", "state.bin")
    if not isinstance(st, str) or not st or st in ("node.json", "main.py") or st.endswith(".py") \
            or st.endswith(".mpy"):
        raise ValueError("sleep.state must name a file of its own, got %r" % (st,))
    out = {"mode": "deep", "state": st}
    for k, dflt in (("interval", 60.0), ("wait", timeout if timeout is not None else 30.0)):
        v = s.get(k, dflt)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1e7:
            raise ValueError("sleep.%s must be seconds > 0, got %r" % (k, v))
        out[k] = float(v)
    return out


def wake(node, link, sl, report=None):
    """One boot of a node that deep-sleeps between rounds (edge/board.py main): take the state
    back, do this round's work if there is any within sl["wait"] seconds, then deep-sleep for
    sl["interval"] seconds (until reset once the job is done). Returns updates sent (0 or 1)."""
    from edge.links import LinkError
    from edge.node import _elapsed, _now
    node.sleep = SleepState(sl["state"])
    t0 = _now()
    sent = 0
    st = "idle"
    while _elapsed(t0) < sl["wait"]:
        try:
            st = node.step(link)
        except LinkError:
            node.link_errors += 1
            link.wait(0.2)
            continue
        if st == "sent":
            sent = 1
            if report is not None:
                report(node.last)
            break
        if st == "done":
            break
        link.wait(0.05)
    if report is not None:
        print("cat-sleep", json.dumps({"node": node.node, "status": st, "sent": sent, "state": node.sleep.status,
                                       "version": node.version, "deltas": node.deltas,
                                       "snapshots": node.snapshots, "saves": node.sleep.saves}))
    deep_sleep(None if st == "done" else int(sl["interval"] * 1000))
    return sent


def deep_sleep(ms):
    """machine.deepsleep(ms) on a board (None: until reset); a no-op where there is none (the
    unix port, CPython): the caller returns and the process exits instead."""
    try:
        from machine import deepsleep
    except ImportError:
        return
    if ms is None:
        deepsleep()
    deepsleep(ms)
