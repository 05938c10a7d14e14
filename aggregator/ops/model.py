"""`cat-aggregator model export|evaluate`: the trained model out of a gateway's state directory.

The weights are the checkpoint's float32 model (aggregator.gateway.state), the one the edges
hold after their last sync; what they mean (logistic or softmax, features, classes, lambda)
comes from `<state>/status.json`, which the gateway writes (aggregator.gateway.live), or from
--job. Layout: logistic, `features` weights (class 1 iff w.a > 0); softmax, a classes x
features matrix W (the class is the argmax of W a, the lowest on ties).

    export --format npy    float32 array, shape (features,) or (classes, features)
    export --format csv    header `class,w0,...`; one row per class (logistic: one row, class 1)
    export --format json   {"format": "cat-iot-model", "job", "round", "kind", "features",
                            "classes", "lambda", "shape", "weights"}

Values are written exactly: CSV and JSON hold each float32 as the shortest decimal that reads
back to the same double, which is the float32 value itself.

`evaluate --data FILE` scores the model on held-out rows: a CATD file (what `partition`
writes), a LIBSVM or CSV file (features then an integer label 0..classes-1 per line), or the
name of a built-in set (`digits`, ...: rows preprocessed as for training). The rows must be
preprocessed as the edges' were; --normalize scales LIBSVM/CSV rows to unit length, as the
built-in sets and the demo do. It prints loss, objective, accuracy and the confusion matrix,
and draws the matrix (--plot, PNG or SVG by extension).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.errors import UserError
from aggregator.ops.admin import _state_dir, _where

FORMATS = ("npy", "csv", "json")


@dataclass
class TrainedModel:
    """The checkpoint's weights with what they mean."""
    job_id: int
    round: int
    kind: str
    features: int
    classes: int
    lam: float
    weights: np.ndarray        # float32, flat as on the wire (softmax: W row-major)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.features,) if self.kind == "logistic" else (self.classes, self.features)

    def matrix(self) -> np.ndarray:
        return self.weights.reshape(self.shape)


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("model", help="export the trained model, or evaluate it on held-out data")
    ms = m.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = ms.add_parser("export", help="write the model's weights as npy, csv or json")
    _where(p)
    p.add_argument("--format", choices=FORMATS, default=None, help="default: from --out's extension")
    p.add_argument("--out", required=True, metavar="FILE")
    p.set_defaults(func=export)
    p = ms.add_parser("evaluate", help="loss, accuracy and confusion matrix on a data file")
    _where(p)
    p.add_argument("--data", required=True, metavar="FILE",
                   help="CATD, LIBSVM or CSV file (label last), or a built-in set's name")
    p.add_argument("--normalize", action="store_true", help="scale LIBSVM/CSV rows to unit L2 norm")
    p.add_argument("--plot", metavar="FILE", default="confusion_matrix.png",
                   help="confusion-matrix plot (default confusion_matrix.png)")
    p.set_defaults(func=evaluate)


def _description(args: argparse.Namespace, job, d: Path) -> dict[str, Any]:
    """kind, features, classes, lambda, id: from --job, else the gateway's status file."""
    if job is not None:
        from aggregator.gateway.live import job_description
        return job_description(job)
    from aggregator.gateway.live import NoStatusFileError, read_status
    try:
        return read_status(d)["job"]
    except NoStatusFileError:
        raise UserError(f"{d}: no status file tells what the model is: give --job JOB.toml") from None


def load_model(args: argparse.Namespace) -> TrainedModel:
    from aggregator.gateway.state import Store
    job, d = _state_dir(args)
    desc = _description(args, job, d)
    st = Store(d).load()           # CheckpointError (a UserError) when both copies are corrupt
    if st is None:
        raise UserError(f"{d}: no checkpoint yet: the gateway has not closed a round")
    if st.job_id != desc["id"] or st.model.shape[0] != desc["d"]:
        raise UserError(f"{d}: the checkpoint is job {st.job_id} with d={st.model.shape[0]}, "
                        f"not job {desc['id']} with d={desc['d']}")
    return TrainedModel(st.job_id, st.round, desc["kind"], desc["features"], desc["classes"],
                        desc["lambda"], st.model.astype(np.float32))


def write_model(model: TrainedModel, fmt: str, out: Path) -> None:
    w = model.matrix()
    if fmt == "npy":
        with open(out, "wb") as fh:
            np.save(fh, w)
    elif fmt == "csv":
        rows = [w] if model.kind == "logistic" else list(w)
        labels = [1] if model.kind == "logistic" else range(model.classes)
        head = "class," + ",".join(f"w{j}" for j in range(model.features))
        body = [f"{c}," + ",".join(repr(float(v)) for v in row) for c, row in zip(labels, rows)]
        out.write_text("\n".join([head, *body]) + "\n")
    else:
        doc = {"format": "cat-iot-model", "version": 1, "job": model.job_id, "round": model.round,
               "kind": model.kind, "features": model.features, "classes": model.classes,
               "lambda": model.lam, "shape": list(model.shape), "weights": w.astype(np.float64).tolist()}
        out.write_text(json.dumps(doc) + "\n")


def export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    fmt = args.format or out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise UserError(f"--format: give one of {', '.join(FORMATS)} (or an --out ending in .npy, .csv or .json)")
    model = load_model(args)
    try:
        write_model(model, fmt, out)
    except OSError as exc:
        raise UserError(f"--out: {out}: {exc.strerror or exc}") from None
    print(f"job {model.job_id}, round {model.round}: {model.kind} model, "
          f"{' x '.join(map(str, model.shape))} float32 weights -> {out} ({fmt})")
    return 0


def load_rows(path: str, classes: int, normalize: bool):
    """(X, y) of a CATD, LIBSVM or CSV file, or of a built-in set by name."""
    from aggregator.lab import datasets
    p = Path(path)
    if not p.exists():
        try:
            ds = datasets.load_builtin(path)
        except ValueError:
            raise UserError(f"--data: {path}: no such file or built-in set") from None
        return ds.X, ds.y
    try:
        with open(p, "rb") as fh:
            magic = fh.read(4)
        if magic == b"CATD":
            ds = datasets.read_datafile(p)
            return ds.X, ds.y
        if p.suffix.lower() == ".csv":
            with open(p) as fh:
                header = 0 if _numeric(fh.readline()) else 1
            raw = np.loadtxt(p, delimiter=",", ndmin=2, skiprows=header)
            X, y_raw = raw[:, :-1], raw[:, -1]
            if not np.all(y_raw == np.round(y_raw)):
                raise UserError(f"--data: {p}: the last column must hold integer labels")
            y = y_raw.astype(np.int64)
        else:
            from sklearn.datasets import load_svmlight_file
            X, y_raw = load_svmlight_file(str(p), dtype=np.float64)
            y = y_raw.astype(np.int64)
            if classes == 2 and set(np.unique(y)) <= {-1, 1}:
                y = (y > 0).astype(np.int64)      # LIBSVM's binary -1/+1 labels
    except (OSError, ValueError) as exc:
        raise UserError(f"--data: {p}: {exc}") from None
    if normalize:
        X = datasets.l2_normalize_rows(X)
    return X, y


def _numeric(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
        return True
    except ValueError:
        return False


def plot_confusion(cm: np.ndarray, title: str, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.45 * cm.shape[0] + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(cm).plot(ax=ax, colorbar=False, values_format="d")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def evaluate(args: argparse.Namespace) -> int:
    from sklearn.metrics import confusion_matrix

    from aggregator.lab import datasets
    model = load_model(args)
    X, y = load_rows(args.data, model.classes, args.normalize)
    if X.shape[1] > model.features:
        raise UserError(f"--data: rows have {X.shape[1]} features, the model {model.features}")
    if X.shape[1] < model.features:        # LIBSVM files omit trailing all-zero columns
        import scipy.sparse as sp
        X = sp.hstack([sp.csr_matrix(X), sp.csr_matrix((X.shape[0], model.features - X.shape[1]))]).tocsr()
    if X.shape[0] == 0:
        raise UserError(f"--data: {args.data}: no rows")
    if y.min() < 0 or y.max() >= model.classes:
        raise UserError(f"--data: labels must be 0..{model.classes - 1}, found {y.min()}..{y.max()}")
    w = model.weights.astype(np.float64)
    loss, _ = datasets.loss_grad_np(X, y, w, 0.0, model.kind)
    objective = loss + 0.5 * model.lam * float(w @ w)
    pred = datasets.predict_np(X, w, model.kind)
    acc = float(np.mean(pred == y))
    cm = confusion_matrix(y, pred, labels=list(range(model.classes)))
    print(f"job {model.job_id}, round {model.round}: {model.kind}, {model.features} features, "
          f"{model.classes} classes; {X.shape[0]} rows of {args.data}")
    print(f"loss {loss:.6f} (objective with lambda {model.lam:g}: {objective:.6f}), accuracy {acc:.4f}")
    print("confusion matrix (rows: true class, columns: predicted)")
    width = max(4, len(str(int(cm.max()))) + 1)
    print("     " + "".join(f"{c:>{width}}" for c in range(model.classes)))
    for c, row in enumerate(cm):
        print(f"{c:>4} " + "".join(f"{v:>{width}}" for v in row))
    out = Path(args.plot)
    try:
        plot_confusion(cm, f"job {model.job_id}, round {model.round}: accuracy {acc:.3f}", out)
    except (OSError, ValueError) as exc:
        raise UserError(f"--plot: {out}: {exc}") from None
    print(f"plot: {out}")
    return 0
