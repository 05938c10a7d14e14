"""Does walking the message the client really sends change CAT's T?

For the CoAP over 802.15.4 link, CAT chooses T once with the old packet model of that link
(104 B fragments, no Block1, a 31 B reply: cost_profiles/legacy/ieee802154-6lowpan-coap-packet.toml) and once with
the walked profile (edge/onair.py: 64 B Block1 exchanges, their replies, exact 6LoWPAN). Both
choices are then priced by the walked model, which is what the radio spends: the guaranteed
descent per joule of the old choice against the new one, per scheme, model size and gradient
shape. Also printed: how far the old model's joules are off the walk's for a few frame sizes.

    python benchmarks/link_walk.py
"""

from __future__ import annotations

import sys
from array import array
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge import cat, compress  # noqa: E402
from edge.cat import SCHEME_S, SCHEME_SQ, SCHEME_SS  # noqa: E402
from edge.cost import CostModel, LinkCost  # noqa: E402
from edge.profile import load_profile  # noqa: E402

OLD = ROOT / "cost_profiles" / "legacy" / "ieee802154-6lowpan-coap-packet.toml"


def shapes(d: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"heavy-tailed": rng.standard_t(1.5, d), "gaussian": rng.standard_normal(d),
            "sparse": rng.standard_normal(d) * (rng.random(d) < 0.05)}


def choose(g: np.ndarray, scheme: int, cm: CostModel, d: int):
    ws = compress.Workspace(d, d)
    res = compress.compress(ws, array("d", g), scheme, cat.Rule("cat"), cm, cm.t_max, 1.0, compress.XorShift32(5))
    return res.choice


def main() -> None:
    old, new = load_profile(str(OLD)), load_profile("ieee802154-6lowpan-coap")
    print("frame B   old model uJ   walked uJ   old/walked")
    for n in (20, 100, 200, 500, 1000):
        a, b = LinkCost(old, n).joules, LinkCost(new, n, 1).joules
        print(f"{n:7d}   {a * 1e6:12.0f}   {b * 1e6:9.0f}   {a / b:10.2f}")
    print()
    print("scheme  d      gradient       T old  T walked  descent/J old choice / walked choice (walked pricing)")
    rng = np.random.default_rng(3)
    worst = 1.0
    for scheme, name in ((SCHEME_S, "s"), (SCHEME_SQ, "sq"), (SCHEME_SS, "ss")):
        for d in (1000, 4096):
            for kind, g in shapes(d, rng).items():
                cm_old = CostModel(old, d, scheme, "joules", job=1)
                cm_new = CostModel(new, d, scheme, "joules", job=1)
                c_old, c_new = choose(g, scheme, cm_old, d), choose(g, scheme, cm_new, d)
                # the old choice's guaranteed descent, priced as the radio really spends it
                r_old = c_old.improvement / cm_new.cost(c_old.t)
                r_new = c_new.improvement / cm_new.cost(c_new.t)
                worst = min(worst, r_old / r_new)
                print(f"{name:6s}  {d:5d}  {kind:13s}  {c_old.t:5d}  {c_new.t:8d}  {r_old / r_new:.3f}")
    print()
    print(f"descent per joule of CAT on the old cost, worst case against the walked cost: {worst:.3f}")


if __name__ == "__main__":
    main()
