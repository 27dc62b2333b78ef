"""Recipe: train the fast extractor's block classifier (``refinery/extract_fast.py``) with
trafilatura, at the extract stage's settings, as the teacher.

    python -m classifiers.extractor --out refinery/resources/models/extractor.ftz [--data-dir ../shared/data]

Data (real, read-only): trafilatura's evaluation pages (``extraction/trafilatura_eval_e90b0ef.tar.gz``)
and the HTML responses of the WARCs in ``warc/`` (and ``data/sample/warc``, the same files bundled).
**Held out:** half 1 of the evaluation pages (``refinery.eval_extract.split_pages(pages, 1)``, SHA-1
of the URL mod 2) is never read here; training uses half 0 + the WARC pages. Of those, one page in
five (SHA-1 of the name) is a validation split: a first model trained on the other four fifths
scores it, and the threshold (and whether to smooth headings) is chosen there on the "with"/"without"
snippets of its evaluation pages; the shipped model is then trained on all of half 0 + the WARCs.

Labels: a block is content (1) when its text is in the stage's output for its page (the cascade:
precision mode + tables + ``fast``, recall fallback; ``refinery.extract_fast.teacher_labels``).
Deterministic: fastText with seed 0 and one thread in a fresh process
(``refinery.classifiers.common.train_fasttext``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable, Sequence

from refinery.classifiers.common import FastTextParams, copy_atomic, sha256_file, train_fasttext, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"
EVAL_TARBALL = "extraction/trafilatura_eval_e90b0ef.tar.gz"

#: small on purpose: the model must stay < 2 MB quantized and cheap per block
PARAMS = FastTextParams(epoch=5, lr=0.3, dim=16, wordNgrams=2, minCount=2, bucket=200_000, loss="softmax", seed=0)
QUANTIZE = {"qnorm": True, "retrain": False, "cutoff": 60_000, "dsub": 2}
MIXES = (1.0, 0.7, 0.5)  # own-score weights tried (refinery.extract_fast.mix_scores); 1.0 = no mixing
THRESHOLDS = tuple(round(0.2 + 0.025 * i, 3) for i in range(25))  # 0.2 .. 0.8


@dataclass
class TrainPage:
    name: str
    html: str
    url: str | None
    source: str  # "eval" or "warc"
    with_snippets: list[str] = field(default_factory=list)
    without_snippets: list[str] = field(default_factory=list)


def eval_pages(data_dir: Path, half: int | None = 0) -> list[TrainPage]:
    """The trafilatura evaluation pages (decoded as the extract stage does); ``half`` picks one
    half by :func:`refinery.eval_extract.split_pages` (None: all)."""
    from refinery.eval_extract import load_gold, split_pages
    from refinery.stages.extract import decode_html

    tarball = data_dir / EVAL_TARBALL
    if not tarball.is_file():
        raise SystemExit(f"error: evaluation pages not found: {tarball}")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(tarball, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        found = sorted(Path(tmp).rglob("evaldata.json"))
        if not found:
            raise SystemExit(f"error: {tarball} holds no evaldata.json")
        gold = load_gold(found[0])
    if half is not None:
        gold = split_pages(gold, half)
    return [TrainPage(g.name, decode_html(g.html, None)[0], g.url, "eval", g.with_snippets, g.without_snippets)
            for g in gold]


def warc_pages(dirs: Sequence[Path]) -> list[TrainPage]:
    """HTML responses of the WARC files in ``dirs`` (identical bodies once)."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    from refinery.stages.extract import decode_html

    pages, seen = [], set()
    for d in dirs:
        for path in sorted(Path(d).glob("*.warc*")):
            try:
                with open(path, "rb") as f:
                    for record in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
                        ctype = record.http_headers.get("Content-Type") or ""
                        if "html" not in ctype.lower():
                            continue
                        body = record.reader.read()
                        key = hashlib.sha1(body).hexdigest()
                        if key in seen:
                            continue
                        seen.add(key)
                        url = (record.headers.get("WARC-Target-URI") or "").strip("<>") or None
                        pages.append(TrainPage(f"warc-{key[:12]}", decode_html(body, ctype)[0], url, "warc"))
            except Exception:  # noqa: BLE001 - a clipped sample WARC ends early: keep what was read
                pass
    return pages


def teacher(**overrides: Any) -> Callable[[str, str | None], str | None]:
    """The extract stage's own in-process cascade (its defaults, or ``overrides`` of its params)."""
    from refinery.stages.extract import TrafilaturaExtractor

    fn = TrafilaturaExtractor(timeout_s=0, **overrides)._extract_fn()
    return lambda html, url: fn(html, url)[0]


def _hash_frac(key: str) -> int:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 5


def examples(pages: Sequence[TrainPage], texts: Sequence[str | None]) -> list[tuple[str, str]]:
    from refinery.extract_fast import block_features, blocks_of, teacher_labels

    out = []
    for page, text in zip(pages, texts):
        blocks = blocks_of(page.html)
        out += [(str(y), x) for y, x in zip(teacher_labels(blocks, text), block_features(blocks))]
    return out


def _fit(pages: Sequence[TrainPage], texts: Sequence[str | None], workdir: Path, quantize: bool,
         params: FastTextParams = PARAMS) -> tuple[Path, int, dict]:
    ex = examples(pages, texts)
    random.Random(params.seed).shuffle(ex)
    counts = {"1": sum(1 for y, _ in ex if y == "1"), "0": sum(1 for y, _ in ex if y == "0")}
    workdir.mkdir(parents=True, exist_ok=True)
    bin_path, ftz_path, _ = train_fasttext(ex, params, workdir, QUANTIZE if quantize else None)
    return (ftz_path if quantize else bin_path), len(ex), counts


#: cascade rules tried on the validation pages (see ``FastExtractor.is_unsure``)
CASCADE_GRID = [{"short_chars": sc, "band": band, "share": share}
                for sc in (0, 200, 500) for band in (0.1, 0.2, 0.3) for share in (0.05, 0.1, 0.2, 0.3, 0.5)]


def _snippets(texts: Sequence[str], pages: Sequence[TrainPage]) -> tuple[float, float, int]:
    from refinery.eval_extract import snippet_counts
    from refinery.stages.extract import clean_text

    f = e = lk = u = 0
    for text, p in zip(texts, pages):
        c = snippet_counts(clean_text(text or ""), p.with_snippets, p.without_snippets)
        f, e, lk, u = f + c[0], e + c[1], lk + c[2], u + c[3]
    return (f / e if e else 0.0), (lk / u if u else 0.0), sum(1 for t in texts if not (t or "").strip())


def choose_threshold(model_path: Path, pages: Sequence[TrainPage], teacher_texts: Sequence[str | None]) -> dict[str, Any]:
    """On the validation pages (their "with"/"without" snippets): the threshold and smoothing
    maximising "with" found share - "without" leaked share (ties: the first of the grid: less mixing, no smoothing, the lower threshold); then the
    cascade rule sending the fewest pages to trafilatura whose objective is within 0.005 of
    trafilatura's own on these pages (else the best objective)."""
    from refinery.extract_fast import FastExtractor, blocks_of

    keep_idx = [i for i, p in enumerate(pages) if p.with_snippets or p.without_snippets]
    pages = [pages[i] for i in keep_idx]
    teacher_texts = [teacher_texts[i] for i in keep_idx]
    if not pages:  # nothing to choose on (e.g. a smoke run on WARC pages only): the defaults
        return {"threshold": 0.5, "smooth": True, "mix": 1.0, "validation_pages": 0,
                "cascade": {"short_chars": 200, "band": 0.2, "share": 0.2}}
    fx = FastExtractor(model_path, threshold=0.5, smooth=False)
    scored = [(bs, fx.scores(bs)) for p in pages for bs in [blocks_of(p.html)]]
    best: dict[str, Any] | None = None
    for mix in MIXES:
        fx.mix = mix
        for smooth in (False, True):
            fx.smooth = smooth
            for t in THRESHOLDS:
                fx.threshold = t
                texts = ["\n".join(b.text for b, k in zip(bs, fx.decide(bs, sc)) if k) for bs, sc in scored]
                w, wo, emptied = _snippets(texts, pages)
                row = {"threshold": t, "smooth": smooth, "mix": mix, "with": w, "without": wo, "emptied": emptied,
                       "objective": w - wo}
                if best is None or row["objective"] > best["objective"] + 1e-9:
                    best = row
    assert best is not None
    fx.threshold, fx.smooth, fx.mix = best["threshold"], best["smooth"], best["mix"]
    tw, two, temptied = _snippets(teacher_texts, pages)
    decided = [(bs, sc, "\n".join(b.text for b, k in zip(bs, fx.decide(bs, sc)) if k)) for bs, sc in scored]
    rules = []
    for rule in CASCADE_GRID:
        fx.cascade = rule
        go = [fx.is_unsure(bs, sc, text) for bs, sc, text in decided]
        texts = [tt if g else text for g, tt, (_, _, text) in zip(go, teacher_texts, decided)]
        w, wo, emptied = _snippets(texts, pages)
        rules.append({**rule, "to_trafilatura": sum(go) / len(go), "with": w, "without": wo, "emptied": emptied,
                      "objective": w - wo})
    good = [r for r in rules if r["objective"] >= (tw - two) - 0.005]
    cascade = (min(good, key=lambda r: (r["to_trafilatura"], -r["objective"])) if good
               else max(rules, key=lambda r: r["objective"]))
    return {**best, "validation_pages": len(pages),
            "trafilatura": {"with": tw, "without": two, "emptied": temptied, "objective": tw - two},
            "cascade": cascade}


def train(pages: Sequence[TrainPage], out: Path, quantize: bool = True,
          teacher_fn: Callable[[str, str | None], str | None] | None = None,
          extra: dict[str, Any] | None = None, params: FastTextParams = PARAMS) -> dict[str, Any]:
    """Train on ``pages`` (never pass held-out pages), write ``out`` (.ftz, or fastText's .bin
    format when not ``quantize``) and its .json sidecar; returns the sidecar's content."""
    t0 = time.process_time()
    fn = teacher_fn or teacher()
    texts = [fn(p.html, p.url) for p in pages]
    t_teacher = time.process_time() - t0
    val = [i for i, p in enumerate(pages) if _hash_frac(p.name) == 0]
    fit = [i for i, p in enumerate(pages) if _hash_frac(p.name) != 0]
    with tempfile.TemporaryDirectory() as tmp:
        first, _, _ = _fit([pages[i] for i in fit], [texts[i] for i in fit], Path(tmp) / "fit", quantize, params)
        choice = choose_threshold(first, [pages[i] for i in val], [texts[i] for i in val])
        final, n_examples, counts = _fit(pages, texts, Path(tmp) / "final", quantize, params)
        copy_atomic(final, out)
    meta = {
        "kind": "extractor",
        "model_file": out.name,
        "model_sha256": sha256_file(out),
        "model_bytes": out.stat().st_size,
        "quantized": quantize,
        "quantization": QUANTIZE if quantize else None,
        "labels": {"positive": "1", "negative": "0"},
        "score": "P(block is in trafilatura's output at the extract stage's defaults) from the fastText softmax",
        "threshold": choice["threshold"],
        "smooth": choice["smooth"],
        "mix": choice["mix"],
        "cascade": {k: choice["cascade"][k] for k in ("short_chars", "band", "share")},
        "threshold_rule": ("threshold, score mixing and heading smoothing maximising 'with' found - 'without' leaked on the validation fifth of the training "
                           "pages (SHA-1 of the name mod 5 == 0), scored by a model trained on the other fifths"),
        "validation": choice,
        "hyperparameters": {**asdict(params), "thread": 1},
        "data": {
            "train_pages": {"eval_half0": sum(p.source == "eval" for p in pages),
                            "warc": sum(p.source == "warc" for p in pages)},
            "held_out": "trafilatura evaluation pages of half 1 (refinery.eval_extract.split_pages(pages, 1)): never used",
            "teacher": "refinery.stages.extract.TrafilaturaExtractor defaults (precision + tables + fast, recall fallback)",
            "examples": n_examples, "labels": counts,
            **(extra or {}),
        },
        "fasttext_version": _fasttext_version(),
        "trained_on": date.today().isoformat(),
        "teacher_cpu_seconds": round(t_teacher, 2),
        "cpu_seconds": round(time.process_time() - t0, 2),
    }
    write_json_atomic(meta, out.with_suffix(".json"))
    return meta


def _fasttext_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in ("fasttext-numpy2", "fasttext", "fasttext-wheel"):
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            continue
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m classifiers.extractor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="model file to write (.ftz); its .json sidecar beside it")
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR)
    ap.add_argument("--limit", type=int, default=None, help="train on the first N pages only (a smoke run)")
    ap.add_argument("--no-quantize", action="store_true")
    args = ap.parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"error: data directory not found: {args.data_dir}", file=sys.stderr)
        return 2
    pages = eval_pages(args.data_dir, half=0) + warc_pages([args.data_dir / "warc", ROOT / "data" / "sample" / "warc"])
    if args.limit:
        pages = pages[: args.limit]
    sources = [{"path": EVAL_TARBALL, "sha256": sha256_file(args.data_dir / EVAL_TARBALL)}]
    sources += [{"path": f"warc/{p.name}", "sha256": sha256_file(p)} for p in sorted((args.data_dir / "warc").glob("*.warc*"))]
    meta = train(pages, args.out, quantize=not args.no_quantize, extra={"sources": sources})
    print(json.dumps({k: meta[k] for k in ("model_file", "model_bytes", "threshold", "smooth", "mix", "cascade", "validation", "cpu_seconds")},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
