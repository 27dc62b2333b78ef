"""Does the quality stage remove programming pages for their code? Before/after ``exclude_code``.

    python benchmarks/quality_code_bias.py --work DIR [--threshold 0.0005] [--list] [--model PATH]

Runs the recipe's document stages (configs/refinedweb.yaml up to ``quality``, which is set to
remove nothing) over three real English sets, then scores what reaches ``quality`` twice with
the packaged model: the whole text (``exclude_code: false``, before) and the prose only
(``exclude_code: true``, after). Sets (read-only, nothing downloaded):

- ``trafilatura_eval``: trafilatura's evaluation pages (../shared/data/extraction), packed as WARCs;
  never seen by the quality model's training;
- ``warc``: the responses of ../shared/data/warc (the bundled sample); 70% of its English
  documents were the model's "web" training examples;
- ``cc_docs``: ../shared/data/cc_docs (JSON lines, no extraction); likewise mostly training data.

A document is *code-heavy* when at least 3 of its non-empty lines, and at least 10% of them, are
code lines (``refinery.classifiers.prose.is_code_line``); *prose* when none is. Each code-heavy
document is compared with the 3 prose documents of the same set nearest to it in length (without
replacement). Prints JSON: per set and group, counts, median scores and removals at the
threshold, before and after; with ``--list``, every document removed before or after. ``--model``
scores with another quality model than the packaged one (e.g. one trained with ``--docs-positives``).
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "benchmarks"))

MIN_CODE_LINES, MIN_CODE_SHARE, MATCHES = 3, 0.10, 3


def _configs(work: Path) -> dict[str, Path]:
    """The recipe's document stages, quality removing nothing; a copy without the HTML stages for JSON lines."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "refinedweb.yaml").read_text())
    for key in ("dedup", "tokenize"):
        cfg.pop(key, None)
    for stage in cfg["stages"]:
        if stage["type"] == "quality":
            stage["params"] = {"mode": "threshold", "threshold": 0.0}
    html = work / "html.yaml"
    html.write_text(yaml.safe_dump(cfg))
    cfg["stages"] = [s for s in cfg["stages"] if s["type"] not in ("url_filter", "prescreen", "extract")]
    jsonl = work / "jsonl.yaml"
    jsonl.write_text(yaml.safe_dump(cfg))
    return {"html": html, "jsonl": jsonl}


def _inputs(work: Path) -> dict[str, tuple[Path, str]]:
    import shutil

    import real_pages

    ee = work / "in_trafilatura_eval"
    if not ee.is_dir():
        real_pages.write_warcs(real_pages._eval_pages(), ee)
    sets = {"trafilatura_eval": (ee, "html")}
    for name, pattern, kind in (("warc", "warc/*.warc.gz", "html"), ("cc_docs", "cc_docs/*.jsonl.gz", "jsonl")):
        folder = work / f"in_{name}"
        folder.mkdir(exist_ok=True)
        for f in sorted(SHARED.glob(pattern)):
            if not (folder / f.name).exists():
                shutil.copy(f, folder / f.name)
        sets[name] = (folder, kind)
    return sets


def _run(config: Path, inp: Path, out: Path) -> pa.Table:
    if not (out / "passes" / "filter.json").is_file():
        subprocess.run([sys.executable, "-m", "refinery", "run", str(config), "-i", str(inp), "-o", str(out),
                        "--workers", "2", "--max-failed-fraction", "0.5"], check=True, stdout=subprocess.DEVNULL)
    files = sorted(glob.glob(str(out / "kept" / "*.parquet")))
    return pa.concat_tables([pq.read_table(f, columns=["id", "url", "text"]) for f in files])


def _scores(table: pa.Table, exclude_code: bool, model: Path | None = None) -> np.ndarray:
    from refinery.stages.classifiers import QualityFilter

    stage = QualityFilter(model_path=str(model) if model else None, mode="threshold", threshold=0.0,
                          exclude_code=exclude_code)
    batch = pa.RecordBatch.from_pydict({"id": table.column("id").to_pylist(), "text": table.column("text").to_pylist()})
    out = stage.process(batch)
    return np.array(out.column("quality_score").to_pylist(), dtype=np.float64)


def _code_lines(text: str) -> tuple[int, int]:
    from refinery.classifiers.prose import is_code_line

    lines = [line for line in text.split("\n") if line.strip()]
    return sum(is_code_line(line) for line in lines), len(lines)


def _matched_prose(lengths: np.ndarray, code: list[int], prose: list[int]) -> list[int]:
    """For each code-heavy document, the MATCHES prose documents nearest in length, each used once."""
    free, chosen = set(prose), []
    for i in sorted(code, key=lambda i: lengths[i]):
        near = sorted(free, key=lambda j: abs(np.log(lengths[j]) - np.log(lengths[i])))[:MATCHES]
        chosen += near
        free -= set(near)
    return chosen


def _group(idx: list[int], before: np.ndarray, after: np.ndarray, lengths: np.ndarray, threshold: float) -> dict[str, Any]:
    if not idx:
        return {"documents": 0}
    b, a = before[idx], after[idx]
    return {"documents": len(idx), "median_chars": int(np.median(lengths[idx])),
            "median_score_before": round(float(np.median(b)), 4), "median_score_after": round(float(np.median(a)), 4),
            "removed_before": int((b < threshold).sum()), "removed_after": int((a < threshold).sum())}


def measure(work: Path, threshold: float, listing: bool, model: Path | None = None) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    configs = _configs(work)
    report: dict[str, Any] = {"threshold": threshold, "model": str(model) if model else "packaged"}
    for name, (inp, kind) in _inputs(work).items():
        table = _run(configs[kind], inp, work / f"run_{name}")
        texts = table.column("text").to_pylist()
        before, after = _scores(table, False, model), _scores(table, True, model)
        lengths = np.array([max(1, len(t)) for t in texts], dtype=np.float64)
        counts = [_code_lines(t) for t in texts]
        code = [i for i, (c, n) in enumerate(counts) if c >= MIN_CODE_LINES and c >= MIN_CODE_SHARE * n]
        prose = [i for i, (c, _) in enumerate(counts) if c == 0]
        some = [i for i in range(len(texts)) if i not in set(code) | set(prose)]
        entry = {
            "all": _group(list(range(len(texts))), before, after, lengths, threshold),
            "code_heavy": _group(code, before, after, lengths, threshold),
            "prose_length_matched": _group(_matched_prose(lengths, code, prose), before, after, lengths, threshold),
            "prose_all": _group(prose, before, after, lengths, threshold),
            "some_code_lines": _group(some, before, after, lengths, threshold),
            "scored_text_changed": int(sum(1 for i in range(len(texts)) if before[i] != after[i])),
        }
        if listing:
            urls = table.column("url").to_pylist()
            entry["code_heavy_urls"] = [f"{before[i]:.4f} -> {after[i]:.4f} {urls[i]}" for i in code]
            entry["removed"] = [
                f"{'still removed' if before[i] < threshold and after[i] < threshold else 'newly kept' if before[i] < threshold else 'newly removed'}"
                f" {before[i]:.5f} -> {after[i]:.5f} code {counts[i][0]}/{counts[i][1]} lines {urls[i]}"
                for i in range(len(texts)) if before[i] < threshold or after[i] < threshold]
        report[name] = entry
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="scratch directory (inputs and runs are reused)")
    ap.add_argument("--threshold", type=float, default=0.0005)
    ap.add_argument("--list", action="store_true", help="list code-heavy and removed documents")
    ap.add_argument("--model", type=Path, help="a quality model file [default: the packaged one]")
    args = ap.parse_args()
    print(json.dumps(measure(args.work, args.threshold, args.list, args.model), indent=1))


if __name__ == "__main__":
    main()
