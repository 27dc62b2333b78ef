"""Realistic synthetic corpora from real text, with near-duplicates at known rates.

    python benchmarks/corpus.py OUT --docs 100000 [--seed 0] [--docs-per-shard 5000]

Writes ``OUT/docs/part-NNNNN.parquet`` (the document schema, ``refinery.schema.DOCUMENT_SCHEMA``:
already-extracted text, ``html`` null -- an input for the recipe's text stages, not extraction)
and ``OUT/truth/part-NNNNN.parquet`` (per document: what it is and what it copies), plus
``OUT/corpus.json`` (the settings and counts).

Every document is recombined from real text (nothing is invented):

- ``wiki`` (English): sentences of the 10,033 Wikipedia leads (``../shared/data/quality``) drawn at
  random across articles, grouped into paragraphs;
- ``web``: the lines of one real Common Crawl document (``data/sample/cc_docs``, 717 documents,
  53 languages), subsampled and reordered; language ID decides what survives;
- ``foreign``: sentences of one of 74 non-English languages (lingua test data).

Why the text is perturbed: recombining a fixed pool of sentences makes each sentence recur more
often the larger the corpus (at 1M documents every Wikipedia sentence would appear ~150 times), so
the substring and line dedup would see a different corpus at each size. Each placed sentence/line
therefore gets one of its words swapped with another word of the same sentence every ``period``
words, at a random phase: two placements of one sentence share no run longer than ~2 periods
(< 50 GPT-2 tokens, the EXACTSUBSTR threshold), and documents share no 5-gram shingles beyond
chance. The corpus thus has the same duplicate structure at every size: only what is injected.

Injected (rates of all documents, ``truth.kind``): ``near`` copies of an earlier base document with
a contiguous run of words replaced so the word-5-gram Jaccard is ~``near_jaccard``; ``exact`` copies
(new id and URL); ``url_dup`` (an earlier document's URL, new text); ``short`` (< 50 words) and
``repetitive`` (a paragraph repeated) for the Gopher filters; and, on a share of documents, real
navigation lines (``chrome``) that recur on many sites, for the repeated-line dedup. Sources come
from a bounded reservoir of earlier base documents, so copies cross shards while memory stays flat.
Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refinery.schema import DOCUMENT_SCHEMA  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
WIKI = SHARED / "quality" / "summaries_en-us.json"
LINGUA = SHARED / "langid" / "lingua-testdata" / "sentences"
CC_DOCS = ROOT / "data" / "sample" / "cc_docs"

TRUTH_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("style", pa.string()),  # wiki | web | foreign
    pa.field("kind", pa.string()),  # base | near | exact | url_dup | short | repetitive
    pa.field("source_id", pa.string()),  # the copied document (near, exact, url_dup)
    pa.field("chrome_lines", pa.int32()),  # navigation lines added
])

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


@dataclass
class CorpusSpec:
    docs: int = 10_000
    seed: int = 0
    docs_per_shard: int = 5_000
    # style mix of base documents (rest: foreign)
    wiki_share: float = 0.70
    web_share: float = 0.15
    # injected, as shares of all documents
    near_rate: float = 0.10
    exact_rate: float = 0.02
    url_dup_rate: float = 0.005
    short_rate: float = 0.03
    repetitive_rate: float = 0.01
    chrome_rate: float = 0.30  # documents carrying 1-3 navigation lines
    near_jaccard: float = 0.90
    period: int = 12  # a word swapped every `period` words of every placed sentence
    reservoir: int = 5_000  # earlier base documents that copies are drawn from
    min_source_words: int = 100  # copies are of documents this long (a 20-word page has no "near" copy)
    wiki_sentences: tuple[int, int] = (6, 30)  # per wiki document (uniform)


@dataclass
class Pools:
    """The real text everything is built from (loaded once, ~60 MB)."""

    wiki: list[list[str]]  # sentences, pre-split into words
    web: list[list[list[str]]]  # per CC document: its non-empty lines, split
    foreign: dict[str, list[str]]  # language -> sentences
    domains: list[str]
    chrome: list[str]
    slugs: list[str] = field(default_factory=list)


def load_pools() -> Pools:
    for path in (WIKI, LINGUA, CC_DOCS):
        if not path.exists():  # one line, not a traceback
            raise SystemExit(f"corpus: real text not found: {path} (see ../shared/data/README.md)")
    wiki = []
    for entry in json.loads(WIKI.read_text(encoding="utf-8")).values():
        for s in _SENTENCE_END.split(entry.get("extract") or ""):
            words = s.split()
            if len(words) >= 4:
                wiki.append(words)
    web, domains, line_docs = [], set(), Counter()
    for f in sorted(CC_DOCS.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for raw in fh:
                doc = json.loads(raw)
                lines = [ln.split() for ln in doc["text"].split("\n") if ln.strip()]
                if len(lines) >= 3:
                    web.append(lines)
                url = (doc.get("metadata") or {}).get("url") or doc.get("id") or ""
                host = re.sub(r"^[a-z]+://", "", str(url)).split("/")[0].lower()
                if "." in host and " " not in host:
                    domains.add(host)
                line_docs.update({ln.strip() for ln in doc["text"].split("\n")})
    # real navigation/boilerplate lines: short ASCII lines found in >= 3 real documents
    chrome = sorted(ln for ln, n in line_docs.items() if n >= 3 and ln.isascii() and 2 <= len(ln.split()) <= 10
                    and not re.search(r"\d{3}", ln))
    foreign = {}
    for f in sorted(LINGUA.glob("*.txt")):
        if f.stem != "en":
            sents = [s for s in f.read_text(encoding="utf-8").splitlines() if s.strip()]  # split on use
            if sents:
                foreign[f.stem] = sents
    slugs = sorted({w.lower() for s in wiki[:5_000] for w in s if w.isalpha() and 4 <= len(w) <= 10})
    return Pools(wiki, web, foreign, sorted(domains), chrome, slugs)


def perturb(words: list[str], rng: random.Random, period: int) -> str:
    """The words joined, with one word swapped for another of the same sentence every ``period``
    words from a random phase: keeps the language and vocabulary, breaks long repeated runs."""
    n = len(words)
    if n < 4:
        return " ".join(words)
    out = list(words)
    for p in range(rng.randrange(period), n, period):
        out[p] = words[rng.randrange(n)]
    return " ".join(out)


def _shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: str, b: str, n: int = 5) -> float:
    """Word-n-gram Jaccard similarity (what MinHash estimates)."""
    sa, sb = _shingles(a, n), _shingles(b, n)
    return len(sa & sb) / max(1, len(sa | sb))


class Generator:
    def __init__(self, spec: CorpusSpec, pools: Pools | None = None) -> None:
        self.spec = spec
        self.pools = pools or load_pools()
        self.rng = random.Random(spec.seed)
        self.reservoir: list[tuple[str, str, str]] = []  # (id, url, text) of earlier base documents
        self.seen_base = 0
        self.languages = sorted(self.pools.foreign)

    # -- base documents -----------------------------------------------------------------------
    def _wiki(self) -> str:
        r, p, k = self.rng, self.pools.wiki, self.spec.period
        lo, hi = self.spec.wiki_sentences
        sentences = [perturb(p[r.randrange(len(p))], r, k) for _ in range(r.randint(lo, hi))]
        paras, i = [], 0
        while i < len(sentences):
            j = i + r.randint(2, 5)
            paras.append(" ".join(sentences[i:j]))
            i = j
        return "\n".join(paras)

    def _web(self) -> str:
        r = self.rng
        lines = self.pools.web[r.randrange(len(self.pools.web))]
        keep = [ln for ln in lines if r.random() < 0.6] or lines[:3]
        if len(keep) > 4:  # reorder a block of paragraphs, as page templates do
            a = r.randrange(len(keep) - 2)
            keep[a], keep[a + 1] = keep[a + 1], keep[a]
        return "\n".join(perturb(ln, r, max(6, self.spec.period // 2)) for ln in keep)

    def _foreign(self) -> str:
        r = self.rng
        sents = self.pools.foreign[self.languages[r.randrange(len(self.languages))]]
        chosen = [perturb(sents[r.randrange(len(sents))].split(), r, self.spec.period) for _ in range(r.randint(5, 25))]
        return "\n".join(" ".join(chosen[i:i + 3]) for i in range(0, len(chosen), 3))

    def _base(self) -> tuple[str, str]:
        u = self.rng.random()
        if u < self.spec.wiki_share:
            return "wiki", self._wiki()
        if u < self.spec.wiki_share + self.spec.web_share:
            return "web", self._web()
        return "foreign", self._foreign()

    def _url(self, i: int) -> str:
        r, s = self.rng, self.pools.slugs
        path = "-".join(s[r.randrange(len(s))] for _ in range(r.randint(1, 4)))
        return f"https://{self.pools.domains[r.randrange(len(self.pools.domains))]}/{path}-{i}"

    def _near(self, text: str) -> str:
        """``text`` with a contiguous run of words replaced by Wikipedia words so that the word
        5-gram Jaccard is ~near_jaccard: m replaced words change ~m+4 of S shingles, J=(S-c)/(S+c)."""
        r, j = self.rng, self.spec.near_jaccard
        parts = re.split(r"(\s+)", text)  # words at even indexes, separators kept
        words = len(parts[::2])
        shingles = max(1, words - 4)
        m = max(1, round(shingles * (1 - j) / (1 + j)) - 4)
        start = r.randrange(max(1, words - m))
        fresh = self.pools.wiki[r.randrange(len(self.pools.wiki))] * (m // 4 + 1)
        for k in range(m):
            idx = 2 * (start + k)
            if idx < len(parts):
                parts[idx] = fresh[k]
        return "".join(parts)

    def _remember(self, doc_id: str, url: str, text: str) -> None:
        """Reservoir sampling over base documents: a uniform sample of the past, bounded memory."""
        self.seen_base += 1
        if len(self.reservoir) < self.spec.reservoir:
            self.reservoir.append((doc_id, url, text))
        else:
            k = self.rng.randrange(self.seen_base)
            if k < self.spec.reservoir:
                self.reservoir[k] = (doc_id, url, text)

    def document(self, i: int) -> tuple[dict, dict]:
        s, r = self.spec, self.rng
        doc_id = f"doc-{s.seed}-{i:09d}"
        url = self._url(i)
        u = r.random()
        kind, source, style = "base", None, None
        cuts = [s.near_rate, s.exact_rate, s.url_dup_rate, s.short_rate, s.repetitive_rate]
        if self.reservoir and u < cuts[0]:
            kind = "near"
        elif self.reservoir and u < sum(cuts[:2]):
            kind = "exact"
        elif self.reservoir and u < sum(cuts[:3]):
            kind = "url_dup"
        elif u < sum(cuts[:4]):
            kind = "short"
        elif u < sum(cuts):
            kind = "repetitive"
        chrome = 0
        if kind in ("near", "exact"):
            source, _, src_text = self.reservoir[r.randrange(len(self.reservoir))]
            text = src_text if kind == "exact" else self._near(src_text)
            style = "copy"
        else:
            style, text = self._base()
            if kind == "url_dup":
                source, url, _ = self.reservoir[r.randrange(len(self.reservoir))]
            elif kind == "short":
                text = " ".join(text.split()[: r.randint(5, 40)])
            elif kind == "repetitive":
                para = text.split("\n")[0]
                text = "\n".join([para] * r.randint(4, 8))
            elif r.random() < s.chrome_rate and self.pools.chrome:
                chrome = r.randint(1, 3)
                lines = text.split("\n")
                for _ in range(chrome):
                    lines.insert(r.choice((0, len(lines))), self.pools.chrome[r.randrange(len(self.pools.chrome))])
                text = "\n".join(lines)
            if kind == "base" and text.count(" ") >= s.min_source_words:
                self._remember(doc_id, url, text)
        row = {"id": doc_id, "url": url, "warc_record_id": None,
               "warc_date": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00Z", "content_type": "text/html",
               "source": None, "html": None, "text": text}
        return row, {"id": doc_id, "style": style, "kind": kind, "source_id": source, "chrome_lines": chrome}

    def shards(self) -> Iterator[tuple[pa.Table, pa.Table]]:
        """(documents, truth) per shard of ``docs_per_shard`` documents, streamed."""
        s = self.spec
        for start in range(0, s.docs, s.docs_per_shard):
            rows, truth = zip(*(self.document(i) for i in range(start, min(s.docs, start + s.docs_per_shard))))
            yield (pa.Table.from_pylist(list(rows), schema=DOCUMENT_SCHEMA),
                   pa.Table.from_pylist(list(truth), schema=TRUTH_SCHEMA))


def generate(out: Path, spec: CorpusSpec, pools: Pools | None = None, log: bool = False) -> dict:
    """Write the corpus under ``out`` (docs/, truth/, corpus.json); returns the summary."""
    (out / "docs").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    kinds: Counter = Counter()
    chars = 0
    for n, (docs, truth) in enumerate(Generator(spec, pools).shards()):
        pq.write_table(docs, out / "docs" / f"part-{n:05d}.parquet", compression="zstd")
        pq.write_table(truth, out / "truth" / f"part-{n:05d}.parquet", compression="zstd")
        kinds.update(truth.column("kind").to_pylist())
        chars += sum(len(t) for t in docs.column("text").to_pylist())
        if log:
            print(f"  shard {n}: {sum(kinds.values()):,} docs, {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    summary = {"spec": asdict(spec), "docs": sum(kinds.values()), "kinds": dict(kinds), "text_chars": chars,
               "seconds": round(time.time() - t0, 1)}
    (out / "corpus.json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--docs-per-shard", type=int, default=5_000)
    args = ap.parse_args()
    summary = generate(args.out, CorpusSpec(docs=args.docs, seed=args.seed, docs_per_shard=args.docs_per_shard), log=True)
    print(json.dumps({k: v for k, v in summary.items() if k != "spec"}))


if __name__ == "__main__":
    main()
