"""Score an extraction configuration against a gold set (``refinery eval-extract``).

Gold sets, in two formats (docs/extraction.md):

* **pairs**: a directory of ``<name>.html`` + ``<name>.txt`` (the page and its cleaned main text,
  as in CleanEval or the article-extraction benchmarks). CleanEval's markup in the gold text (a
  first line ``URL: ...``, ``<p>``/``<h>``/``<l>`` paragraph marks) is removed before scoring. A
  directory may also hold ``<name>.url`` (one line) to pass the page URL to the extractor.
* **snippets**: trafilatura's ``evaldata.json`` (``{url: {"file": ..., "with": [...], "without":
  [...]}}``), the HTML files next to it or in its ``cache/`` or ``eval/`` sub-directory; or an
  entry names ``"warc": <path relative to the JSON>`` and the page is that WARC's response for
  ``url`` (``data/gold/warc_sample.json``: 43 pages of the bundled sample).

Metrics:

* token precision / recall / F1, bag of tokens (CleanEval-style: lower-cased ``\\w+`` words,
  multiset intersection), per page and summed over pages ("micro"); the mean of per-page F1
  ("macro") is the headline. A page whose extract is empty (removed, or no text) scores 0 for
  all three; a page with empty gold and an empty extract scores 1.
* pages emptied: the extractor removed the page or returned no text.
* snippets: the share of "with" snippets found in the extract and the share of "without" snippets
  leaked into it, after collapsing whitespace, as in tests/test_extract.py. Snippets holding a URL
  are skipped on both sides (the stage removes URLs on purpose: such a "without" snippet could
  never leak, so counting it would flatter the leakage figure; before session 22 only "with"
  snippets were skipped).

Everything runs the real ``extract`` stage (``TrafilaturaExtractor``) built from a config's
``extract`` params, in batches, with its timeout and helper process.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pyarrow as pa

from refinery.stages._trafilatura_rules import RULE_PARAMS

log = logging.getLogger("refinery.eval_extract")

_WORD = re.compile(r"\w+")
_SPACES = re.compile(r"\s+")
_URL = re.compile(r"https?://\S|\bwww\.\w")
_CLEANEVAL_MARK = re.compile(r"^[ \t]*<(?:p|h|l|P|H|L)>[ \t]*", re.MULTILINE)
_CLEANEVAL_URL = re.compile(r"\AURL:[^\n]*\n")


class GoldError(ValueError):
    """A gold set cannot be read (one line, naming the path)."""


@dataclass
class GoldPage:
    name: str
    html: bytes
    url: str | None = None
    text: str | None = None  # full gold text (pairs); None for snippet-only pages
    with_snippets: list[str] = field(default_factory=list)
    without_snippets: list[str] = field(default_factory=list)


def tokens(text: str | None) -> list[str]:
    """Bag-of-words tokens: lower-cased Unicode ``\\w+`` runs."""
    return _WORD.findall(text.lower()) if text else []


def strip_cleaneval(text: str) -> str:
    """Remove CleanEval gold markup: the leading ``URL: ...`` line and ``<p>``/``<h>``/``<l>`` marks."""
    return _CLEANEVAL_MARK.sub("", _CLEANEVAL_URL.sub("", text.lstrip("\ufeff")))


@dataclass
class TokenScore:
    overlap: int  # |pred ∩ gold| as multisets
    predicted: int
    gold: int

    @property
    def precision(self) -> float:
        if self.predicted == 0:
            return 1.0 if self.gold == 0 else 0.0
        return self.overlap / self.predicted

    @property
    def recall(self) -> float:
        if self.gold == 0:
            return 1.0 if self.predicted == 0 else 0.0
        return self.overlap / self.gold

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def token_score(predicted: str | None, gold: str) -> TokenScore:
    pred, ref = Counter(tokens(predicted)), Counter(tokens(gold))
    return TokenScore(sum((pred & ref).values()), sum(pred.values()), sum(ref.values()))


def _norm(s: str) -> str:
    return _SPACES.sub(" ", s).strip()


def snippet_counts(text: str | None, with_snippets: Sequence[str],
                   without_snippets: Sequence[str]) -> tuple[int, int, int, int]:
    """(found, expected, leaked, unwanted) for one page."""
    norm = _norm(text or "")
    # a snippet holding a URL can be neither found nor leaked: the stage removes URLs on purpose
    wanted = [s for s in with_snippets if not _URL.search(s)]
    unwanted = [s for s in without_snippets if not _URL.search(s)]
    found = sum(_norm(s) in norm for s in wanted)
    leaked = sum(_norm(s) in norm for s in unwanted)
    return found, len(wanted), leaked, len(unwanted)


# -- loading gold sets ----------------------------------------------------------------------------


def load_gold(path: str | Path, cleaneval_markup: bool = True) -> list[GoldPage]:
    """Pages of a gold set: a directory of pairs (and/or an ``evaldata.json``), or an evaldata JSON file."""
    path = Path(path)
    if not path.exists():
        raise GoldError(f"gold set not found: {path}")
    if path.is_file():
        if path.suffix != ".json":
            raise GoldError(f"gold set {path}: expected a directory of <name>.html + <name>.txt "
                            "or an evaldata .json file")
        return _load_snippets(path)
    pages = _load_pairs(path, cleaneval_markup)
    evaldata = path / "evaldata.json"
    if evaldata.is_file():
        pages += _load_snippets(evaldata)
    if not pages:
        raise GoldError(f"gold set {path}: no <name>.html + <name>.txt pairs and no evaldata.json")
    return pages


def _read_text(path: Path) -> str:
    """A gold text file: UTF-8 (with or without a BOM), UTF-16 with its BOM, else Windows-1252
    (what gold sets of CleanEval's era were often written in; Latin-1 for the five bytes it leaves
    undefined), with a warning naming the file. Scoring lower-cased words, a wrong guess among
    single-byte codecs only changes the few non-ASCII words."""
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise GoldError(f"gold text {path} starts with a UTF-16 byte order mark but is not UTF-16 "
                            f"(byte {exc.start})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        first_bad = exc.start
    try:
        text, codec = raw.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:
        text, codec = raw.decode("latin-1"), "Latin-1"
    log.warning("gold text %s is not UTF-8 (byte %d): read as %s", path, first_bad, codec)
    return text


def _load_pairs(folder: Path, cleaneval_markup: bool) -> list[GoldPage]:
    pages = []
    # any case: a.HTML + a.txt was skipped without a word (adversarial testing)
    htmls = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".html", ".htm") and p.is_file())
    # the gold text's suffix in any case too: a.html + a.TXT was skipped, and not even warned of
    texts = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".txt" and p.is_file()),
                   key=lambda p: p.suffix == ".txt")  # a.txt beside a.TXT is the one read
    gold_text = {t.stem: t for t in texts}
    paired = {gold_text[h.stem] for h in htmls if h.stem in gold_text}
    orphans = sorted(t.name for t in texts if t not in paired)
    if orphans:
        log.warning("gold set %s: %d .txt file(s) without a <name>.html beside them, not scored: %s", folder,
                    len(orphans), ", ".join(orphans[:5]) + (", ..." if len(orphans) > 5 else ""))
    for html_path in htmls:
        txt = gold_text.get(html_path.stem)
        if txt is None:
            continue  # an HTML file without gold text (e.g. a snippet-format page) is not a pair
        gold = _read_text(txt)
        url_file = html_path.with_suffix(".url")
        url = _read_text(url_file).strip() or None if url_file.is_file() else None
        if url is None and gold.startswith("URL:"):
            url = gold.split("\n", 1)[0][4:].strip() or None
        pages.append(GoldPage(html_path.stem, html_path.read_bytes(), url,
                              strip_cleaneval(gold) if cleaneval_markup else gold))
    return pages


def _unique_keys(path: Path) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A ``json`` object hook refusing a key given twice in one object (json keeps the last
    silently: a gold set of two entries for one URL was scored as one page)."""
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        data = dict(pairs)
        if len(data) < len(pairs):
            twice = next(k for i, (k, _) in enumerate(pairs) if any(k == other for other, _ in pairs[:i]))
            raise GoldError(f"gold file {path}: key {twice!r} is given twice")
        return data
    return hook


def _snippets(path: Path, url: str, item: dict[str, Any], key: str) -> list[str]:
    """An entry's ``with`` or ``without`` list; a string was read as one snippet per character
    (every "without" letter leaked) and a number failed with a TypeError."""
    value = item.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GoldError(f"gold file {path}: entry {url!r}: {key!r} must be a list of strings, "
                        f"not {json.dumps(value, default=str)[:60]}")
    return value


def _load_snippets(path: Path) -> list[GoldPage]:
    try:
        data = json.loads(path.read_bytes(), object_pairs_hook=_unique_keys(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GoldError(f"gold file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise GoldError(f"gold file {path}: expected an object {{url: {{file, with, without}}}}")
    folders = [path.parent, path.parent / "cache", path.parent / "eval"]
    pages, missing = [], []
    warcs: dict[Path, dict[str, bytes]] = {}
    for url, item in sorted(data.items()):
        if isinstance(item, dict) and isinstance(item.get("warc"), str):
            # the page is a response record of a WARC (relative to the gold file): a gold set over
            # a crawl sample needs no copy of its pages
            warc = (path.parent / item["warc"]).resolve()
            if warc not in warcs:
                if not warc.is_file():
                    raise GoldError(f"gold file {path}: entry {url!r} names WARC {item['warc']!r}, not found")
                warcs[warc] = _warc_pages(warc)
            if url not in warcs[warc]:
                raise GoldError(f"gold file {path}: WARC {item['warc']} has no HTML response for {url!r}")
            name = Path(item["file"]).stem if isinstance(item.get("file"), str) else _url_name(url)
            pages.append(GoldPage(name, warcs[warc][url], url, None,
                                  _snippets(path, url, item, "with"), _snippets(path, url, item, "without")))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("file"), str):
            raise GoldError(f"gold file {path}: entry {url!r} has no 'file' (or 'warc')")
        html_path = next((f / item["file"] for f in folders if (f / item["file"]).is_file()), None)
        if html_path is None:
            missing.append(item["file"])
            continue
        pages.append(GoldPage(Path(item["file"]).stem, html_path.read_bytes(), url, None,
                              _snippets(path, url, item, "with"), _snippets(path, url, item, "without")))
    if missing:  # a page left out without a word changed every figure (nothing is lost silently)
        raise GoldError(f"gold file {path}: {len(missing)} of its {len(data)} HTML files not found next to it or in "
                        f"cache/ or eval/: {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}")
    return pages


def _warc_pages(warc: Path) -> dict[str, bytes]:
    """URL -> HTML of a WARC's responses, as the pipeline's WARC reader decodes them (the first
    response of a URL fetched twice)."""
    from refinery.io.warc import read_warc

    pages: dict[str, bytes] = {}
    with warc.open("rb") as stream:
        for batch in read_warc(stream, warc.name):
            for url, html in zip(batch.column("url").to_pylist(), batch.column("html").to_pylist()):
                if url and html and url not in pages:
                    pages[url] = html
    return pages


def _url_name(url: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", url.split("://", 1)[-1]).strip("_")[:80]


# -- evaluation -----------------------------------------------------------------------------------


@dataclass
class PageResult:
    name: str
    emptied: bool
    reason: str | None
    path: str | None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    found: int = 0
    expected: int = 0
    leaked: int = 0
    unwanted: int = 0


@dataclass
class EvalResult:
    pages: int
    emptied: int
    token_pages: int  # pages with full gold text
    precision: float | None  # micro: summed over pages
    recall: float | None
    f1: float | None
    macro_precision: float | None
    macro_recall: float | None
    macro_f1: float | None  # the headline: mean of per-page F1
    snippet_pages: int
    with_recall: float | None
    without_leakage: float | None
    paths: dict[str, int]
    seconds: float
    params: dict[str, Any]
    per_page: list[PageResult] = field(default_factory=list)
    #: the same pages scored on the text after ``--through`` stages (see :func:`evaluate`)
    through: list[str] = field(default_factory=list)
    after: EvalResult | None = None
    #: pages a ``--through`` stage removes (their extracted text is scored in ``after``) ...
    after_removed: int = 0
    #: ... and ``after`` with those pages counted as emptied (what the corpus keeps of the gold text)
    after_removed_as_emptied: EvalResult | None = None

    @property
    def emptied_share(self) -> float:
        return self.emptied / self.pages if self.pages else 0.0

    def to_dict(self, per_page: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["emptied_share"] = self.emptied_share
        if not per_page:
            d.pop("per_page")
        return d

    def table(self) -> list[tuple[str, str]]:
        """(metric, value) rows for printing."""
        fmt = lambda v: "-" if v is None else f"{v:.4f}"
        rows = [("pages", str(self.pages)),
                ("pages emptied", f"{self.emptied} ({self.emptied_share:.1%})")]
        if self.token_pages:
            rows += [("token pages", str(self.token_pages)),
                     ("token F1 (mean per page)", fmt(self.macro_f1)),
                     ("token precision (mean per page)", fmt(self.macro_precision)),
                     ("token recall (mean per page)", fmt(self.macro_recall)),
                     ("token F1 (micro)", fmt(self.f1)),
                     ("token precision (micro)", fmt(self.precision)),
                     ("token recall (micro)", fmt(self.recall))]
        if self.snippet_pages:
            rows += [("snippet pages", str(self.snippet_pages)),
                     ('"with" snippets found', fmt(self.with_recall)),
                     ('"without" snippets leaked', fmt(self.without_leakage))]
        rows.append(("extraction paths", ", ".join(f"{k} {v}" for k, v in sorted(self.paths.items())) or "-"))
        rows.append(("seconds", f"{self.seconds:.1f}"))
        return rows


#: stages ``--through`` may apply after extraction: they rewrite text and need no model. Filters
#: (language_id, gopher_*) are not among them: they remove documents, they do not change the text.
REWRITE_STAGES: tuple[str, ...] = ("line_corrections",)


def through_stages_from_config(config_path: str | Path, names: Sequence[str] | None = None) -> list[Any]:
    """The text-rewriting stages to score after extraction: ``names`` (types in
    :data:`REWRITE_STAGES`; built with the config's params when the config has that stage after
    ``extract``, else its defaults), or by default those of the config (none: extraction alone)."""
    from refinery.config import ConfigError, StageConfig, load_config

    config = load_config(config_path)
    types = [s.type for s in config.stages]
    after = config.stages[types.index("extract") + 1:] if "extract" in types else []
    if names is None:
        return [s.build() for s in after if s.type in REWRITE_STAGES]
    stages = []
    for name in names:
        if name not in REWRITE_STAGES:
            raise ConfigError(f"--through {name!r}: only text-rewriting stages that need no model can be "
                              f"scored: {', '.join(REWRITE_STAGES)}")
        spec = next((s for s in after if s.type == name), None) or StageConfig(type=name)
        stages.append(spec.build())
    return stages


def _batch(pages: Sequence[GoldPage]) -> pa.RecordBatch:
    from refinery.schema import DOCUMENT_SCHEMA

    n = len(pages)
    return pa.RecordBatch.from_pydict(
        {"id": [f"gold/{i}" for i in range(n)], "url": [p.url for p in pages], "warc_record_id": [None] * n,
         "warc_date": [None] * n, "content_type": [None] * n, "source": ["gold"] * n,
         "html": [p.html for p in pages], "text": [None] * n},
        schema=DOCUMENT_SCHEMA,
    )


def evaluate(stage: Any, pages: Sequence[GoldPage], batch_size: int = 64,
             through: Sequence[Any] = (), progress: bool = False) -> EvalResult:
    """Run ``stage`` (an ``extract`` stage) over ``pages`` and score what it returns; with
    ``through`` (text-rewriting stages, e.g. ``line_corrections``), also score the text after them
    (``result.after``): the corpus text is what they leave. A page one of them removes keeps the
    text it had before that stage in ``after`` (a filter's decision is not an extraction result)
    and is counted in ``after_removed``; ``after_removed_as_emptied`` scores those as emptied.
    ``progress`` shows a bar of pages (pages/s, ETA) on a terminal."""
    import sys

    from tqdm import tqdm

    from refinery.stages.base import REASON

    texts: list[str | None] = []
    reasons: list[str | None] = []
    paths: list[str | None] = []
    after_texts: list[str | None] = []
    removed: list[bool] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(pages), unit="page", desc="eval-extract", leave=False, dynamic_ncols=True,
               disable=not progress or not sys.stderr.isatty())
    for start in range(0, len(pages), batch_size):
        out = stage(_batch(pages[start:start + batch_size]))
        bar.update(out.num_rows)
        texts += out.column("text").to_pylist()
        reasons += out.column(REASON).to_pylist()
        paths += (out.column("extract_path").to_pylist() if "extract_path" in out.schema.names
                  else [None] * out.num_rows)
        if through:
            rewritten, gone = _rewrite(out, through)
            after_texts += rewritten
            removed += gone
    bar.close()
    seconds = time.perf_counter() - t0
    result = score(pages, texts, reasons, paths, seconds, params=_stage_params(stage))
    if through:
        result.through = [s.name for s in through]
        result.after = score(pages, after_texts, reasons, paths, seconds)
        result.after_removed = sum(removed)
        emptied = [None if gone else t for t, gone in zip(after_texts, removed)]
        result.after_removed_as_emptied = score(pages, emptied, reasons, paths, seconds)
        result.after_removed_as_emptied.per_page = []
    return result


def _rewrite(extracted: pa.RecordBatch, stages: Sequence[Any]) -> tuple[list[str | None], list[bool]]:
    """Texts after ``stages`` (rows a stage removes keep their text from before it) and which
    rows a stage removed; rows the extractor removed are not passed on (they stay emptied)."""
    from refinery.stages.base import METRIC, REASON

    texts = extracted.column("text").to_pylist()
    removed = [False] * len(texts)
    kept = [i for i, r in enumerate(extracted.column(REASON).to_pylist()) if r is None]
    batch = extracted.select([n for n in extracted.schema.names if n not in (REASON, METRIC)]).take(
        pa.array(kept, pa.int64()))
    for stage in stages:
        out = stage(batch)
        reasons = out.column(REASON).to_pylist()
        new_texts = out.column("text").to_pylist()
        for i, reason, text in zip(kept, reasons, new_texts):
            if reason is None:
                texts[i] = text
            else:
                removed[i] = True
        keep_rows = [row for row, reason in enumerate(reasons) if reason is None]
        kept = [kept[row] for row in keep_rows]
        batch = out.select([n for n in out.schema.names if n in batch.schema.names]).take(
            pa.array(keep_rows, pa.int64()))
    return texts, removed


def _stage_params(stage: Any) -> dict[str, Any]:
    keys = ("backend", "favor_precision", "include_tables", "include_comments", "fast", "fallback",
            "fallback_below_chars", "fallback_min_gain", "fallback_mode", "fallback_judge_ratio", *RULE_PARAMS,
            "timeout_s", "max_html_bytes", "min_text_chars")
    return {k: getattr(stage, k) for k in keys if hasattr(stage, k)}


def score(pages: Sequence[GoldPage], texts: Sequence[str | None], reasons: Sequence[str | None] | None = None,
          paths: Sequence[str | None] | None = None, seconds: float = 0.0,
          params: dict[str, Any] | None = None) -> EvalResult:
    """Score extracted ``texts`` (None/empty = emptied) against ``pages``."""
    reasons = reasons or [None] * len(pages)
    paths = paths or [None] * len(pages)
    per_page: list[PageResult] = []
    overlap = predicted = gold = 0
    found = expected = leaked = unwanted = 0
    macro: list[TokenScore] = []
    path_counts: Counter[str] = Counter()
    for page, text, reason, path in zip(pages, texts, reasons, paths):
        emptied = not (text and text.strip())
        result = PageResult(page.name, emptied, reason, path)
        if path and not emptied:
            path_counts[path] += 1
        if page.text is not None:
            s = token_score(None if emptied else text, page.text)
            overlap, predicted, gold = overlap + s.overlap, predicted + s.predicted, gold + s.gold
            macro.append(s)
            result.precision, result.recall, result.f1 = s.precision, s.recall, s.f1
        if page.with_snippets or page.without_snippets:
            c = snippet_counts(text, page.with_snippets, page.without_snippets)
            result.found, result.expected, result.leaked, result.unwanted = c
            found, expected, leaked, unwanted = found + c[0], expected + c[1], leaked + c[2], unwanted + c[3]
        per_page.append(result)
    micro = TokenScore(overlap, predicted, gold)
    mean = lambda xs: sum(xs) / len(xs) if xs else None
    snippet_pages = sum(1 for p in pages if p.with_snippets or p.without_snippets)
    return EvalResult(
        pages=len(pages), emptied=sum(r.emptied for r in per_page), token_pages=len(macro),
        precision=micro.precision if macro else None, recall=micro.recall if macro else None,
        f1=micro.f1 if macro else None,
        macro_precision=mean([s.precision for s in macro]), macro_recall=mean([s.recall for s in macro]),
        macro_f1=mean([s.f1 for s in macro]),
        snippet_pages=snippet_pages,
        with_recall=found / expected if expected else None,
        without_leakage=leaked / unwanted if unwanted else None,
        paths=dict(path_counts), seconds=seconds, params=params or {}, per_page=per_page,
    )


def extract_stage_from_config(config_path: str | Path, overrides: dict[str, Any] | None = None) -> Any:
    """The ``extract`` stage of a pipeline config (its params validated as ``refinery run`` does),
    with ``overrides`` applied; the stage defaults when the config has no ``extract`` stage is an error."""
    from refinery.config import ConfigError, StageConfig, load_config

    config = load_config(config_path)
    found = [s for s in config.stages if s.type == "extract"]
    if not found:
        raise ConfigError(f"config {config_path} has no 'extract' stage to evaluate")
    spec = found[0]
    params = {**spec.params, **(overrides or {})}
    stage = StageConfig(type="extract", name=spec.name, params=params)
    try:
        return stage.build()
    except ConfigError as exc:
        # the config's own params were checked by load_config: a problem here is an override's,
        # named as the user gave it (``--param backend: must be ...``, not ``stage extract.backend``)
        message = str(exc)
        for key in overrides or {}:
            message = message.replace(f"{stage.where()}.{key}:", f"--param {key}:")
        raise ConfigError(message) from None


def split_pages(pages: Iterable[GoldPage], half: int) -> list[GoldPage]:
    """One half of a gold set by a stable hash (SHA-1 mod 2) of the page URL, else of its name (for
    held-out checks; the URL split is the one docs/extraction.md's thresholds were chosen on)."""
    import hashlib

    return [p for p in pages if int(hashlib.sha1((p.url or p.name).encode()).hexdigest(), 16) % 2 == half]
