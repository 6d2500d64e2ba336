"""Intervention plans: which rows of the retraining window are deleted, duplicated or replaced.

A plan is resolved entirely from row ids before any training, so it can be saved, inspected and
checked. Vocabulary:

- ``delete``: row ids whose loss is multiplied by 0 (the batch keeps its shape, as in the paper).
- ``sources`` / ``targets``: the batch slot of row ``targets[i]`` is filled with the tokens of
  ``sources[i]`` (duplicate, insert). Synthetic rows have ids ``SYNTH_BASE + j`` (row j of the
  augmentation file), far above any real row id.

Plan kinds: ``baseline``; ``delete`` / ``duplicate`` of the top rows of a scores column
(``top="10%"`` of the window's rows or ``top="1000"`` rows; ``tail`` positive = strongest
strengtheners, negative = most negative; ``column=feature:<name>`` ranks by a row feature of
:mod:`.rowlabels` instead, the baseline a user could write without MDA); ``random-delete`` /
``random-duplicate`` with the same count drawn uniformly over the window (seeded), or only among
the rows labelled ``among="<labeling>:<label>"`` (e.g. ``stratum:strong``); ``kind-random-delete``
/ ``kind-random-duplicate``: as many rows as the top set, drawn at random from the same kinds in
the same proportions (``match`` names the labeling, default ``kind``), the control that separates
the ranking from the row kind; ``insert-synthetic`` (augmentation rows). Plans that use labels or
features need ``labels`` (:class:`~mda_fast.intervene.rowlabels.RowLabels`).
Duplicated/inserted rows take the slots of victim rows: the lowest-|score| rows (``replace=
"lowest"``) or random rows (``"random"``), never a selected row; with ``at=S`` the victims are
taken from steps S, S+1, ... (at most ``per_step`` per step), i.e. the rows are inserted at S.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from mda_fast.errors import ConfigError
from mda_fast.io import write_json
from mda_fast.vocab import resolve_count

PLAN_KINDS = ("baseline", "delete", "duplicate", "random-delete", "random-duplicate", "insert-synthetic",
              "kind-random-delete", "kind-random-duplicate")
FEATURE_PREFIX = "feature:"
SYNTH_BASE = 1 << 48


@dataclass
class PlanSpec:
    """What the user asked for; :func:`build_plan` resolves it to row ids."""

    kind: str
    top: str = "10%"
    tail: str = "positive"
    column: str | None = None
    replace: str = "lowest"
    at: int | None = None
    per_step: int | None = None
    synthetic: str | None = None
    n: int | None = None          # insert-synthetic: rows to insert (default: all in the file)
    copies: int = 1
    among: str | None = None      # random-*: draw only among rows labelled "<labeling>:<label>"
    match: str = "kind"           # kind-random-*: the labeling whose composition is matched
    name: str | None = None

    def label(self) -> str:
        return self.name or self.kind


_SPEC_KEYS = {"top": str, "tail": str, "column": str, "replace": str, "at": int, "per_step": int,
              "synthetic": str, "path": str, "n": int, "copies": int, "among": str, "match": str, "name": str}


def parse_plan_spec(text: str) -> PlanSpec:
    """``"delete"``, ``"duplicate:top=5%,replace=random,at=120"``, ``"insert-synthetic:path=syn"``."""
    kind, _, rest = text.strip().partition(":")
    if kind not in PLAN_KINDS:
        raise ConfigError(f"plan {text!r}: unknown kind {kind!r} (one of {', '.join(PLAN_KINDS)})")
    kw = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, val = item.partition("=")
        if not eq or key not in _SPEC_KEYS:
            raise ConfigError(f"plan {text!r}: bad option {item!r} (keys: {', '.join(_SPEC_KEYS)})")
        try:
            kw["synthetic" if key == "path" else key] = _SPEC_KEYS[key](val)
        except ValueError:
            raise ConfigError(f"plan {text!r}: option {key} needs an integer, got {val!r}") from None
    spec = PlanSpec(kind=kind, **kw)
    check_spec(spec)
    return spec


def check_spec(spec: PlanSpec) -> None:
    if spec.kind not in PLAN_KINDS:
        raise ConfigError(f"plan kind {spec.kind!r} is unknown (one of {', '.join(PLAN_KINDS)})")
    if spec.tail not in ("positive", "negative"):
        raise ConfigError(f"plan {spec.label()}: tail must be 'positive' or 'negative', got {spec.tail!r}")
    if spec.replace not in ("lowest", "random"):
        raise ConfigError(f"plan {spec.label()}: replace must be 'lowest' or 'random', got {spec.replace!r}")
    if spec.copies < 1:
        raise ConfigError(f"plan {spec.label()}: copies must be >= 1, got {spec.copies}")
    if spec.kind == "insert-synthetic" and not spec.synthetic:
        raise ConfigError(f"plan {spec.label()}: insert-synthetic needs path=<.bin/.idx prefix>")
    if spec.among is not None and (not spec.kind.startswith("random-") or ":" not in spec.among):
        raise ConfigError(f"plan {spec.label()}: among=<labeling>:<label> applies to random-delete / "
                          f"random-duplicate, got among={spec.among!r} on {spec.kind}")


def needs_labels(spec: PlanSpec) -> bool:
    """Whether resolving ``spec`` needs the window's :class:`RowLabels`."""
    return (spec.kind.startswith("kind-random-") or spec.among is not None
            or str(spec.column or "").startswith(FEATURE_PREFIX))


@dataclass
class Plan:
    """A resolved plan. All arrays are int64 row ids."""

    name: str
    kind: str
    window: tuple[int, int]
    rows_per_step: int
    delete: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sources: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    targets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    synthetic: str | None = None
    info: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("delete", "sources", "targets"):
            d[k] = [int(x) for x in getattr(self, k)]
        d["window"] = list(self.window)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        d = dict(d)
        for k in ("delete", "sources", "targets"):
            d[k] = np.asarray(d.get(k, []), dtype=np.int64)
        d["window"] = tuple(d["window"])
        return cls(**d)

    def save(self, path) -> None:
        write_json(path, self.to_json())


def pick_column(columns: list[str], column: str | None, unit: tuple[int, int] | None = None) -> int:
    """Index of the scores column to use: named, else the one naming the unit, else the only one."""
    if column is not None:
        if column not in columns:
            raise ConfigError(f"scores column {column!r} does not exist (columns: {', '.join(columns)})")
        return columns.index(column)
    if unit is not None:
        hits = [i for i, c in enumerate(columns) if f"L{unit[0]}.H{unit[1]}" in c]
        if len(hits) == 1:
            return hits[0]
    if len(columns) == 1:
        return 0
    raise ConfigError(f"the scores file has {len(columns)} columns ({', '.join(columns[:6])}...); choose one with --column")


def window_rows(window: tuple[int, int], rows_per_step: int) -> np.ndarray:
    """Row ids of the window, int64[rps * (b - a)] (Pythia: rows of step s are [rps*s, rps*(s+1)))."""
    a, b = window
    return np.arange(rows_per_step * a, rows_per_step * b, dtype=np.int64)


def select_top(row_ids: np.ndarray, values: np.ndarray, count: int, tail: str = "positive") -> np.ndarray:
    """The ``count`` row ids with the largest (positive tail) or smallest (negative) values."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(-v if tail == "positive" else v, kind="stable")
    return np.asarray(row_ids, dtype=np.int64)[order[:count]]


def _victims(pool: np.ndarray, key: np.ndarray, n: int, rows_per_step: int, at: int | None,
             per_step: int | None, label: str) -> np.ndarray:
    """``n`` rows of ``pool`` with the smallest ``key``; with ``at``, filled step by step from ``at``."""
    if at is None:
        if n > pool.size:
            raise ConfigError(f"plan {label}: needs {n} rows to replace but only {pool.size} are available in the window")
        return pool[np.argsort(key, kind="stable")[:n]]
    per = per_step or max(1, rows_per_step // 2)
    steps = pool // rows_per_step
    out = []
    for s in np.unique(steps[steps >= at]):
        m = np.flatnonzero(steps == s)
        take = m[np.argsort(key[m], kind="stable")[: min(per, n - len(out))]]
        out.extend(pool[take].tolist())
        if len(out) >= n:
            break
    if len(out) < n:
        raise ConfigError(f"plan {label}: {n} rows inserted at step {at} with at most {per} per step "
                          "do not fit before the end of the window")
    return np.asarray(out, dtype=np.int64)


def _window_scores(spec: PlanSpec, win: np.ndarray, row_ids, scores, columns, unit, plan: Plan, labels=None):
    """(scored row ids [n], their values [n], |score| of every window row [win] with inf for unscored
    rows) of the plan's column (a scores column, or ``feature:<name>`` of ``labels``), or
    (None, None, None) without scores."""
    if str(spec.column or "").startswith(FEATURE_PREFIX):
        row_ids, scores, columns = labels.row_ids, labels.feature(spec.column[len(FEATURE_PREFIX):]), [spec.column]
    if scores is None:
        return None, None, None
    row_ids = np.asarray(row_ids, dtype=np.int64)
    col = pick_column(list(columns), spec.column, unit)
    vals = np.asarray(scores)[:, col] if np.ndim(scores) == 2 else np.asarray(scores)
    inwin = (row_ids >= win[0]) & (row_ids < win[-1] + 1)
    rid, vals = row_ids[inwin], vals[inwin]
    absval = np.full(win.size, np.inf)                 # unscored rows are never "lowest"
    absval[rid - win[0]] = np.abs(vals)
    plan.info["column"] = list(columns)[col]
    return rid, vals, absval


def _random_among(spec: PlanSpec, win: np.ndarray, count: int, rng, labels, plan: Plan) -> np.ndarray:
    """``count`` random window rows, among those labelled ``spec.among`` when given."""
    if spec.among is None:
        return np.sort(rng.choice(win, size=count, replace=False))
    if labels is None:
        raise ConfigError(f"plan {spec.label()}: among={spec.among} needs the window's row labels")
    labeling, _, name = spec.among.partition(":")
    pool = labels.row_ids[labels.labeling(labeling).mask(name)]
    plan.info["among_rows"] = int(pool.size)
    if count > pool.size:
        raise ConfigError(f"plan {spec.label()}: {count} rows asked among {spec.among}, which has only {pool.size}")
    return np.sort(rng.choice(pool, size=count, replace=False))


def _kind_matched(spec: PlanSpec, top: np.ndarray, rng, labels, plan: Plan) -> np.ndarray:
    """As many random window rows as ``top`` holds of each label of ``labels``'s ``spec.match``
    labeling, drawn from all window rows with that label (the top rows included)."""
    if labels is None:
        raise ConfigError(f"plan {spec.label()}: a kind-matched control needs the window's row labels")
    lab = labels.labeling(spec.match)
    top_lab = lab.index[labels.positions(top)]
    picked, composition = [], {}
    for k in np.unique(top_lab):
        pool = labels.row_ids[lab.index == k]
        n = int((top_lab == k).sum())
        composition[lab.names[k] if k >= 0 else "unlabelled"] = n
        picked.append(rng.choice(pool, size=n, replace=False))
    plan.info.update(matched=spec.match, composition=composition, kinds_from=labels.kinds_from)
    return np.sort(np.concatenate(picked))


def _selected(spec: PlanSpec, win: np.ndarray, rid, vals, rng, plan: Plan, labels=None) -> np.ndarray:
    """Sorted row ids a delete / duplicate plan acts on: the top of the column, or random ones
    (uniform, among a label, or matching the top set's kinds)."""
    label = spec.label()
    count = resolve_count(spec.top, win.size, f"plan {label}")
    plan.info["count"] = count
    if spec.kind.startswith("random-"):
        return _random_among(spec, win, count, rng, labels, plan)
    if rid is None:
        raise ConfigError(f"plan {label} needs a scores file")
    if count > rid.size:
        raise ConfigError(f"plan {label}: --top-k {spec.top} selects {count} rows but only "
                          f"{rid.size} rows of the window are scored")
    sel = np.sort(select_top(rid, vals, count, spec.tail))
    tot = np.abs(vals).sum()
    plan.info["abs_score_share"] = float(np.abs(vals[np.isin(rid, sel)]).sum() / tot) if tot > 0 else 0.0
    return _kind_matched(spec, sel, rng, labels, plan) if spec.kind.startswith("kind-random-") else sel


def _synthetic_sources(spec: PlanSpec, win: np.ndarray, n_synthetic: int | None) -> np.ndarray:
    label = spec.label()
    n = spec.n or n_synthetic
    if not n:
        raise ConfigError(f"plan {label}: the synthetic file {spec.synthetic} has no rows")
    if n > win.size:
        raise ConfigError(f"plan {label}: inserting {n} rows is larger than the window ({win.size} rows)")
    return SYNTH_BASE + (np.arange(n, dtype=np.int64) % max(1, n_synthetic or n))


def build_plan(spec: PlanSpec, window: tuple[int, int], rows_per_step: int, row_ids=None, scores=None,
               columns=None, unit=None, seed: int = 0, n_synthetic: int | None = None, labels=None) -> Plan:
    """Resolve ``spec`` over ``window`` with scores ``scores[N, C]`` of ``row_ids[N]``.

    ``seed`` draws the random controls (and random victims). ``n_synthetic``: rows in the
    insert-synthetic file. ``labels``: the window's :class:`~mda_fast.intervene.rowlabels.RowLabels`
    (kind-matched controls, ``among=``, feature columns). Raises ConfigError for a plan that does
    not fit the window.
    """
    check_spec(spec)
    a, b = window
    label = spec.label()
    win = window_rows(window, rows_per_step)
    plan = Plan(name=label, kind=spec.kind, window=(a, b), rows_per_step=rows_per_step,
                info={"spec": asdict(spec), "seed": seed, "window_rows": int(win.size)})
    if spec.kind == "baseline":
        return plan
    rng = np.random.default_rng([seed, PLAN_KINDS.index(spec.kind)])
    if needs_labels(spec) and labels is None:
        raise ConfigError(f"plan {label} needs the window's row labels (kinds / features)")
    rid, vals, absval = _window_scores(spec, win, row_ids, scores, columns, unit, plan, labels)
    if spec.kind == "insert-synthetic":
        sel = np.zeros(0, np.int64)
        plan.sources, plan.synthetic = _synthetic_sources(spec, win, n_synthetic), spec.synthetic
    else:
        sel = _selected(spec, win, rid, vals, rng, plan, labels)
        if spec.kind.endswith("delete"):
            plan.delete = sel
            return plan
        plan.sources = np.repeat(sel, spec.copies)
    # duplicate / insert: choose victim slots among the non-selected window rows
    pool = win[~np.isin(win, sel)]
    use_random = spec.replace == "random" or absval is None
    key = rng.random(pool.size) if use_random else absval[pool - win[0]]
    at = spec.at
    if spec.kind == "insert-synthetic" and at is None:
        at = (a + b) // 2                                   # paper: inserted mid-window
    if at is not None and not a <= at < b:
        raise ConfigError(f"plan {label}: insertion step {at} is outside the window [{a}, {b})")
    plan.targets = _victims(pool, key, plan.sources.size, rows_per_step, at, spec.per_step, label)
    plan.info.update(replace="random" if use_random else "lowest", at=at)
    return plan
