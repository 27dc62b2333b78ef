"""How sure an ``eval-extract`` score is: page-bootstrap 95% intervals, and paired differences
between two runs on the same gold pages.

Why: on trafilatura's 990 evaluation pages one snippet moves "with" by 0.03 points, and the snippets
of a page come and go together (one wrong extraction loses all of them), so a difference of a few
tenths of a point between two settings can be chance. The unit of resampling is therefore the
page: each resample draws as many pages as were scored, with replacement, and recomputes the
figure exactly as ``score`` does (ratios of sums for snippets, the mean of per-page F1 for tokens).
A paired comparison draws the same pages for both runs, so what the pages share cancels out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

#: resamples behind every interval; the seed is fixed so a rerun prints the same interval
RESAMPLES = 2000
SEED = 0

#: the figures with intervals: name -> label (the row label of ``EvalResult.table``)
FIGURES = {
    "with_recall": '"with" snippets found',
    "without_leakage": '"without" snippets leaked',
    "macro_f1": "token F1 (mean per page)",
    "emptied_share": "pages emptied",
}


def _field(row: Any, key: str) -> Any:
    """A per-page result's field: a PageResult, or its JSON dict (an earlier ``--json``)."""
    return row[key] if isinstance(row, Mapping) else getattr(row, key)


def _arrays(per_page: Sequence[Any]) -> dict[str, np.ndarray]:
    """Per-page columns of a result's ``per_page``."""
    column = lambda key: [_field(r, key) for r in per_page]  # noqa: E731
    return {
        **{key: np.array(column(key), dtype=np.float64) for key in ("found", "expected", "leaked", "unwanted")},
        "f1": np.array([np.nan if v is None else v for v in column("f1")], dtype=np.float64),
        "emptied": np.array([bool(v) for v in column("emptied")], dtype=np.float64),
    }


def _figures(cols: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every figure for each resample (rows of ``idx``: page indices), as ``score`` computes it."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "with_recall": cols["found"][idx].sum(1) / cols["expected"][idx].sum(1),
            "without_leakage": cols["leaked"][idx].sum(1) / cols["unwanted"][idx].sum(1),
            "emptied_share": cols["emptied"][idx].mean(1),
        }
        f1 = cols["f1"][idx]
        has = ~np.isnan(f1)
        out["macro_f1"] = np.where(has, f1, 0.0).sum(1) / has.sum(1)
    return out


def _present(cols: dict[str, np.ndarray]) -> set[str]:
    """The figures these pages have at all (no snippets: no snippet figures; no full gold: no F1)."""
    names = {"emptied_share"}
    if cols["expected"].sum():
        names.add("with_recall")
    if cols["unwanted"].sum():
        names.add("without_leakage")
    if (~np.isnan(cols["f1"])).any():
        names.add("macro_f1")
    return names


def _resample(n_pages: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_pages, size=(resamples, n_pages))


def _bounds(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def intervals(per_page: Sequence[Any], resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, tuple[float, float]]:
    """95% page-bootstrap interval of each figure these pages have: name -> (low, high)."""
    if not per_page:
        return {}
    cols = _arrays(per_page)
    figures = _figures(cols, _resample(len(per_page), resamples, seed))
    return {name: _bounds(figures[name]) for name in FIGURES if name in _present(cols)}


@dataclass
class Difference:
    name: str
    label: str
    this: float
    baseline: float
    low: float  # 95% interval of this - baseline
    high: float

    @property
    def delta(self) -> float:
        return self.this - self.baseline

    @property
    def clear(self) -> bool:
        """The interval excludes 0: more than resampling noise."""
        return self.low > 0 or self.high < 0

    def line(self) -> str:
        sign = lambda v: f"{100 * v:+.2f}"  # noqa: E731
        verdict = "beyond chance" if self.clear else "within chance"
        return (f"{self.label}: {100 * self.this:.2f}% vs {100 * self.baseline:.2f}%, "
                f"{sign(self.delta)} points (95% interval {sign(self.low)} to {sign(self.high)}: {verdict})")


class CompareError(ValueError):
    """The baseline cannot be compared with this result (a user error: one line)."""


def paired_differences(this: Sequence[Any], baseline: Sequence[Any], resamples: int = RESAMPLES,
                       seed: int = SEED) -> list[Difference]:
    """This run minus the baseline on the pages both scored (matched by name), each figure with a
    95% interval from one page bootstrap drawn for both."""
    base = {_field(r, "name"): r for r in baseline}
    pairs = [(r, base[_field(r, "name")]) for r in this if _field(r, "name") in base]
    if not pairs:
        raise CompareError("no page of this evaluation is in the baseline (pages are matched by name)")
    a, b = _arrays([p[0] for p in pairs]), _arrays([p[1] for p in pairs])
    idx = _resample(len(pairs), resamples, seed)
    fa, fb = _figures(a, idx), _figures(b, idx)
    everything = np.arange(len(pairs))[None, :]
    wa, wb = _figures(a, everything), _figures(b, everything)
    out = []
    for name, label in FIGURES.items():
        if name not in _present(a) & _present(b):
            continue
        lo, hi = _bounds(fa[name] - fb[name])
        out.append(Difference(name, label, float(wa[name][0]), float(wb[name][0]), lo, hi))
    return out
