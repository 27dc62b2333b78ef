"""Real-data fixtures for the dedup tests: Common Crawl documents from ``data/sample/cc_docs`` with
known near-duplicates injected (word edits, appended boilerplate, reordered paragraphs) and known
low-similarity variants, turned into a run directory by the real shard runner."""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass
from pathlib import Path

from refinery.dedup.text import reference_shingles
from refinery.runner import ShardRunner, ShardTask

ROOT = Path(__file__).resolve().parents[1]
CC_DOCS = ROOT / "data" / "sample" / "cc_docs"

BOILERPLATE = (
    "\n\nShare this article: Facebook | Twitter | LinkedIn | Email. Related posts you may also like. "
    "Leave a reply: your email address will not be published. Required fields are marked. "
    "Subscribe to our newsletter to get the latest updates delivered to your inbox every week. "
    "Copyright 2019 All rights reserved. Privacy Policy | Terms of Use | Cookie Settings | Contact Us | Sitemap."
)


def load_cc_docs() -> list[dict]:
    docs = []
    for path in sorted(CC_DOCS.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                url = (d.get("metadata") or {}).get("url")
                docs.append({"id": str(d["id"]), "text": d["text"], "url": url})
    return docs


def jaccard(a: str, b: str, ngram: int = 5) -> float:
    sa, sb = reference_shingles(a, ngram), reference_shingles(b, ngram)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


def _edit(text: str, rate: float, rng: random.Random) -> str:
    words = text.split(" ")
    out = []
    for w in words:
        r = rng.random()
        if r < rate / 3:
            continue  # delete
        if r < 2 * rate / 3:
            out.append(f"edited{rng.randint(0, 10**6)}")  # substitute
            continue
        out.append(w)
        if r < rate:
            out.append(f"inserted{rng.randint(0, 10**6)}")  # insert
    return " ".join(out)


def _reorder(text: str, rng: random.Random) -> str:
    paragraphs = [p for p in text.split("\n") if p.strip()]
    if len(paragraphs) < 3:
        return text
    i, j = rng.sample(range(len(paragraphs)), 2)
    paragraphs[i], paragraphs[j] = paragraphs[j], paragraphs[i]
    return "\n".join(paragraphs)


@dataclass
class Pair:
    original: str  # id
    variant: str  # id
    kind: str
    jaccard: float


@dataclass
class Corpus:
    shards: dict[str, list[dict]]  # shard name -> documents
    pairs: list[Pair]


def build_corpus(seed: int = 7, n_high: int = 90, n_low: int = 45) -> Corpus:
    """The 717 real documents spread over 3 shards, plus a 4th and 5th shard of injected variants:
    ``n_high`` near-duplicates (mostly J >= 0.85) and ``n_low`` variants with J < 0.5, each of a
    distinct original so pairs do not interact."""
    rng = random.Random(seed)
    docs = load_cc_docs()
    shards: dict[str, list[dict]] = {"a": [], "b": [], "c": []}
    for i, d in enumerate(docs):
        shards["abc"[i % 3]].append(d)
    candidates = [d for d in docs if 150 <= len(d["text"].split()) <= 4000]
    rng.shuffle(candidates)
    high_src, low_src = candidates[:n_high], candidates[n_high : n_high + n_low]
    pairs: list[Pair] = []
    variants: list[dict] = []
    kinds = ["edit", "boilerplate", "reorder", "edit+boilerplate"]
    for k, d in enumerate(high_src):
        kind = kinds[k % len(kinds)]
        text = d["text"]
        if "edit" in kind:
            text = _edit(text, rng.choice([0.003, 0.005, 0.01]), rng)
        if "boilerplate" in kind:
            text = text + BOILERPLATE
        if kind == "reorder":
            text = _reorder(text, rng)
        vid = f"injected-high-{k}"
        variants.append({"id": vid, "text": text, "url": f"https://mirror.example.org/copy/{k}"})
        pairs.append(Pair(d["id"], vid, kind, jaccard(d["text"], text)))
    for k, d in enumerate(low_src):
        words = d["text"].split(" ")
        mode = k % 3
        if mode == 0:  # heavy rewrite
            text = _edit(d["text"], rng.choice([0.2, 0.3, 0.45]), rng)
        elif mode == 1:  # a fragment of the page
            cut = max(10, int(len(words) * rng.uniform(0.2, 0.45)))
            text = " ".join(words[:cut])
        else:  # half of the page, half of another page
            other = rng.choice(docs)["text"].split(" ")
            text = " ".join(words[: len(words) // 2] + other[: len(words)])
        vid = f"injected-low-{k}"
        variants.append({"id": vid, "text": text, "url": f"https://other.example.org/page/{k}"})
        pairs.append(Pair(d["id"], vid, f"low-{mode}", jaccard(d["text"], text)))
    rng.shuffle(variants)
    shards["d"] = variants[: len(variants) // 2]
    shards["e"] = variants[len(variants) // 2 :]
    return Corpus(shards, pairs)


def write_inputs(directory: Path, shards: dict[str, list[dict]]) -> Path:
    """Dolma-style ``.jsonl.gz`` inputs (id, text, metadata.url), one file per shard."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, docs in shards.items():
        with gzip.open(directory / f"{name}.jsonl.gz", "wt", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps({"id": d["id"], "text": d["text"], "metadata": {"url": d.get("url")}}) + "\n")
    return directory


def make_run_dir(tmp: Path, shards: dict[str, list[dict]]) -> Path:
    """A run directory as the filtering pipeline leaves it (kept/removed/stats), made by the real
    shard runner with no stages over JSONL inputs."""
    inputs = write_inputs(tmp / "inputs", shards)
    run = tmp / "run"
    runner = ShardRunner([])
    for name in shards:
        runner.run(ShardTask(str(inputs / f"{name}.jsonl.gz"), str(run), name))
    return run


def one_document_url_dedup_run(tmp_path: Path) -> Path:
    """A real two-pass run (a URL filter, then URL dedup) over one JSONL document: a run whose last
    pass's directory holds no kept/ of its own (its documents are the run's kept/)."""
    import json

    from refinery.config import parse_config
    from refinery.pipeline import run_pipeline

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text(json.dumps({"id": "1", "url": "https://a.example/1", "text": "t"}) + "\n")
    config = parse_config({"name": "t", "stages": [{"type": "url_filter", "params": {"use_blocklist": False}}],
                           "dedup": [{"method": "url"}]})
    run = tmp_path / "run"
    run_pipeline(config, str(tmp_path / "in"), str(run), workers=1, progress=False)
    return run
