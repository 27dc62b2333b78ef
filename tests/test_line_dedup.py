"""Corpus-level repeated-line removal (``method: lines``) on real Common Crawl text: the bundled
sample's 717 documents (MediaWiki, StackExchange, DokuWiki and library-catalogue pages of many
sites), through the real driver, shuffle files and shard runner."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.dedup.config import DedupConfig, load_dedup_config, DedupConfigError
from refinery.dedup.driver import run_dedup
from refinery.dedup.lines import LineRule, aggregate_pairs
from refinery.dedup.passes import DedupInputError
from refinery.executors import make_executor
from refinery.io import fs
from refinery.stats.domains import DomainCounter
from tests._dedup_fixtures import load_cc_docs

# real debris lines of the sample (each on pages of several sites)
CHROME = [
    "Jump to navigation Jump to search",  # MediaWiki (wikipedia, wiktionary, wikisource, wikimedia)
    "Jump to: navigation, search",  # older MediaWiki skins
    "By clicking “Post Your Answer”, you agree to our terms of service, privacy policy and cookie policy",
    "Not the answer you're looking for? Browse other questions tagged .",  # StackExchange
    "You must log in to answer this question.",
    "Site Tools",  # DokuWiki
    "Skip to main content",
]


def _rows(directory: Path) -> list[dict]:
    files = sorted(directory.glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def _shards(tmp: Path, shards: dict[str, list[dict]]) -> Path:
    """Plain Parquet shards (id, url, text): what a run's kept/ holds, without running a pipeline."""
    run = tmp / "run"
    run.mkdir(parents=True)
    for name, docs in shards.items():
        columns = ("id", "url", "text") + (("source",) if any("source" in d for d in docs) else ())
        pq.write_table(pa.table({k: [d.get(k) for d in docs] for k in columns},
                                schema=pa.schema([(k, pa.string()) for k in columns])),
                       run / f"{name}.parquet")
    return run


def _run(tmp: Path, shards: dict[str, list[dict]], **lines) -> tuple[dict, Path]:
    run = _shards(tmp, shards)
    ex = make_executor("local", 1)  # one worker runs inline: no process spawn in a test
    try:
        stats = run_dedup(str(run), str(tmp / "out"), DedupConfig(method="lines", lines=lines), ex)
    finally:
        ex.close()
    return stats, tmp / "out"


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    docs = load_cc_docs()
    stats, out = _run(tmp_path_factory.mktemp("lines"), {"a": docs[0::2], "b": docs[1::2]})
    return docs, stats, out


def test_real_chrome_lines_are_cut_and_every_document_is_accounted_for(sample_run):
    docs, stats, out = sample_run
    kept, removed = _rows(out / "kept"), _rows(out / "removed")
    assert stats["docs_read"] == len(docs) == len(kept) + len(removed)  # kept + removed = read
    assert {r["removed_reason"] for r in removed} == {"too_many_repeated_lines"}
    before = {d["id"]: d["text"] for d in docs}
    order = [d["id"] for d in docs[0::2] + docs[1::2]]  # doc-key order: shard a, then shard b
    rule = LineRule()
    for line in CHROME:
        had = [d for d in docs if line in d["text"].split("\n")]
        assert len(had) >= 4, line  # the debris really is in the sample
        # cut everywhere but in the first document holding it that stays (keep_first)
        holders = [i for i in order if rule.key(line) in rule.doc_keys(before[i])]
        survivors = [r["id"] for r in kept if line in r["text"].split("\n")]
        staying = [i for i in holders if i in {r["id"] for r in kept}]
        assert survivors == staying[:1], line
    # the cut lines are exactly the lines that are gone; kept text is otherwise untouched
    edited = [r for r in kept if r["lines_dedup_cut_lines"]]
    assert len(edited) == stats["docs_edited"] > 20
    for r in edited:
        old = [ln for ln in before[r["id"]].split("\n") if ln.strip()]
        new = [ln for ln in r["text"].split("\n") if ln.strip()]
        assert len(old) - len(new) == r["lines_dedup_cut_lines"]
        assert len(before[r["id"]]) - len(r["text"]) >= r["lines_dedup_cut_chars"] > 0
    assert sum(r["lines_dedup_cut_lines"] for r in kept) == stats["lines_cut"]
    assert sum(r["lines_dedup_cut_chars"] for r in kept) == stats["chars_cut"]
    untouched = [r for r in kept if not r["lines_dedup_cut_lines"]]
    assert all(r["text"] == before[r["id"]] for r in untouched)


def test_the_five_percent_rule_decides_removal(sample_run):
    docs, stats, out = sample_run
    kept, removed = _rows(out / "kept"), _rows(out / "removed")
    before = {d["id"]: d["text"] for d in docs}
    assert stats["docs_removed"] == stats["docs_removed_for_lines"] == len(removed) > 0
    for r in removed:  # removed documents keep their original text, with what the cut would have taken
        assert r["text"] == before[r["id"]] and r["lines_dedup_cut_lines"] > 0
        assert r["removed_metric"] == pytest.approx(r["lines_dedup_removed_frac"], rel=1e-6) and r["removed_metric"] > 0.05
    assert all(r["lines_dedup_removed_frac"] <= 0.05 for r in kept)
    # a StackExchange question page: its chrome is > 5% of a short question, so it goes
    se = [r for r in removed if "stackexchange.com" in (r["url"] or "")]
    assert se and any("Your Answer" in r["text"].split("\n") for r in se)


def test_no_boilerplate_line_lives_on_one_domain_only(sample_run):
    """Recount from the input: every line the index holds occurs on >= 2 registered domains and
    in >= 3 documents (the defaults), and no such line is missing; sites count by registered
    domain (math.stackexchange.com and meta.stackexchange.com are one site)."""
    docs, stats, out = sample_run
    manifest = json.loads((out / "dedup" / "manifest.json").read_text())
    rule = LineRule.from_params(manifest["params"])
    index = {r["line_hash"]: r for r in _rows(out / "dedup" / "boilerplate")}
    assert len(index) == stats["boilerplate_lines"] >= len(CHROME)
    dc = DomainCounter()
    domains, counts = collections.defaultdict(set), collections.Counter()
    for d in docs:
        for key in rule.doc_keys(d["text"]):
            domains[key].add(dc.domain(d["url"]))
            counts[key] += 1
    for key, row in index.items():
        assert (row["docs"], row["domains"]) == (counts[key], len(domains[key]))
        assert row["docs"] >= manifest["params"]["min_docs"] == 3 and row["domains"] >= 2
    missed = [k for k in counts if counts[k] >= 3 and len(domains[k]) >= 2 and k not in index]
    assert missed == []


def test_a_line_repeated_by_one_site_is_never_cut_however_often(tmp_path):
    """30 real documents of one registered domain (several subdomains) share a footer line; the
    same kind of line on three sites is cut: the rule, not the line, decides."""
    # real words, each page's text as one paragraph (so only the added lines can recur)
    docs = [{"text": " ".join(d["text"].split())} for d in load_cc_docs() if 300 <= len(d["text"].split()) <= 3000][:60]
    site_line = "Subscribe to the Riverside Gazette newsletter for weekly updates"
    shared_line = "Share this story with your friends on social media today"
    one_site, many_sites = [], []
    for i, d in enumerate(docs[:30]):
        host = ["www.gazette.co.uk", "news.gazette.co.uk", "gazette.co.uk"][i % 3]
        one_site.append({"id": f"site-{i}", "url": f"https://{host}/p/{i}", "text": d["text"] + "\n" + site_line})
    for i, d in enumerate(docs[30:]):
        host = ["alpha.example.org", "beta.example.net", "gamma.example.com"][i % 3]
        many_sites.append({"id": f"many-{i}", "url": f"https://{host}/p/{i}", "text": shared_line + "\n" + d["text"]})
    stats, out = _run(tmp_path, {"a": one_site[:15] + many_sites[:15], "b": one_site[15:] + many_sites[15:]},
                      min_docs=5, min_domains=2)
    kept, removed = _rows(out / "kept"), _rows(out / "removed")
    assert len(kept) + len(removed) == 60 and not removed  # 10 words of 300+: under 5%
    by_id = {r["id"]: r for r in kept}
    assert all(by_id[f"site-{i}"]["text"].endswith(site_line) for i in range(30))
    # cut from all but the first document holding it (shard a, row 15)
    assert by_id["many-0"]["text"].startswith(shared_line)
    assert all(shared_line not in by_id[f"many-{i}"]["text"] for i in range(1, 30))
    assert stats["lines_cut"] == 29 and stats["docs_edited"] == 29


def test_a_sites_own_template_line_is_cut_with_min_site_docs(tmp_path):
    """``min_site_docs``: a line in that many documents of one registered domain is boilerplate
    too (kept in its first holder); documents without a URL are no site, and below the count, or
    by default, a site's line stays."""
    docs = [{"text": " ".join(d["text"].split())} for d in load_cc_docs() if 300 <= len(d["text"].split()) <= 3000][:45]
    site_line = "Subscribe to the Riverside Gazette newsletter for weekly updates"
    no_url_line = "Printed from the archive of an unnamed reading room today"
    rows = [{"id": f"site-{i}", "url": f"https://{['www.gazette.co.uk', 'gazette.co.uk'][i % 2]}/p/{i}",
             "text": d["text"] + "\n" + site_line} for i, d in enumerate(docs[:30])]
    rows += [{"id": f"bare-{i}", "url": None, "text": d["text"] + "\n" + no_url_line} for i, d in enumerate(docs[30:])]
    shards = {"a": rows[0::2], "b": rows[1::2]}
    for min_site_docs, cut in ((30, 29), (31, 0), (None, 0)):
        stats, out = _run(tmp_path / f"s{min_site_docs}", shards, min_site_docs=min_site_docs)
        by_id = {r["id"]: r for r in _rows(out / "kept")}
        assert len(by_id) == 45 and not _rows(out / "removed")
        holding = [i for i in range(30) if by_id[f"site-{i}"]["text"].endswith(site_line)]
        assert len(holding) == 30 - cut and (not cut or holding == [0])  # the first holder keeps it
        assert all(by_id[f"bare-{i}"]["text"].endswith(no_url_line) for i in range(15))
        assert stats["site_boilerplate_lines"] == (1 if cut else 0) and stats["lines_cut"] == cut


def test_min_site_docs_cuts_real_site_chrome(tmp_path):
    """On the real CC documents: wikidot's licence footer and StackExchange's "Not the answer"
    line each live on one registered domain, so only ``min_site_docs`` finds them; every line the
    index holds by it is in that many documents of one domain (recounted from the input)."""
    docs = load_cc_docs()
    stats, out = _run(tmp_path, {"a": docs[0::2], "b": docs[1::2]}, min_site_docs=5)
    rule = LineRule(min_chars=10, min_words=2, max_words=30, fold_digits=True)
    index = {r["line_hash"]: r for r in _rows(out / "dedup" / "boilerplate")}
    footer = rule.key("Unless otherwise stated, the content of this page is licensed under Creative Commons "
                      "Attribution-ShareAlike 3.0 License")
    not_the_answer = rule.key("Not the answer you're looking for? Browse other questions tagged or ask your own question.")
    assert index[footer]["domains"] == 1 and index[footer]["site_docs"] >= 5
    assert index[not_the_answer]["domains"] == 1 and index[not_the_answer]["site_docs"] >= 5
    dc = DomainCounter()
    per_site: collections.Counter = collections.Counter()
    for d in docs:
        for key in rule.doc_keys(d["text"]):
            per_site[key, dc.domain(d["url"])] += 1
    best: dict = {}
    for (key, _), n in per_site.items():
        best[key] = max(best.get(key, 0), n)
    by_site = {k for k, r in index.items() if r["domains"] < 2 or r["docs"] < 3}
    assert by_site and all(best[k] >= 5 and index[k]["site_docs"] == best[k] for k in by_site)
    assert stats["site_boilerplate_lines"] == len(by_site)
    assert not [k for k, n in best.items() if n >= 5 and k not in index]


def test_five_percent_rule_on_exact_word_counts(tmp_path):
    """A 9-word debris line in a 190-word page (9/199 = 4.5%) is cut; in a 160-word page
    (9/169 = 5.3%) the page is removed."""
    words = " ".join(d["text"] for d in load_cc_docs()[:40]).split()
    line = "Cookies help us deliver our services to every reader"  # 9 words
    shards = {"a": [], "b": []}
    for i in range(6):
        n = 190 if i % 2 == 0 else 160
        body = " ".join(words[i * 200: i * 200 + n])
        shards["ab"[i % 2]].append({"id": f"d{i}", "url": f"https://site{i}.example{i}.org/x", "text": body + "\n" + line})
    stats, out = _run(tmp_path, shards, min_docs=3, min_domains=3)
    kept, removed = _rows(out / "kept"), _rows(out / "removed")
    assert sorted(r["id"] for r in kept) == ["d0", "d2", "d4"] and sorted(r["id"] for r in removed) == ["d1", "d3", "d5"]
    by_id = {r["id"]: r for r in kept}
    assert by_id["d0"]["text"].endswith(line) and by_id["d0"]["lines_dedup_removed_frac"] == 0  # the first holder keeps it
    assert all(by_id[i]["lines_dedup_removed_frac"] == pytest.approx(9 / 199) and line not in by_id[i]["text"]
               for i in ("d2", "d4"))
    assert all(r["removed_metric"] == pytest.approx(9 / 169) for r in removed)


@pytest.mark.parametrize("keep_first", [True, False])
def test_text_published_on_several_sites_survives_once(tmp_path, keep_first):
    """A real article syndicated on three sites, one sentence per line (every line a candidate):
    with keep_first its first copy stays whole and the two later copies go; cutting every copy
    (CCNet's way) loses the article altogether. Found by adversarial testing."""
    import re

    docs = [d for d in load_cc_docs() if 400 <= len(d["text"].split()) <= 3000]
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(docs[0]["text"].split())) if 3 <= len(s.split()) <= 30]
    story = "\n".join(sentences[:40])
    assert len(sentences) >= 20
    others = [{"id": f"other-{i}", "url": f"https://o{i}.example.org/", "text": " ".join(d["text"].split())}
              for i, d in enumerate(docs[1:7])]
    copies = [{"id": f"copy-{k}", "url": f"https://{site}/news/1", "text": story}
              for k, site in enumerate(["wire.example.com", "daily.example.net", "herald.example.org"])]
    stats, out = _run(tmp_path, {"a": others[:3] + copies[:1], "b": copies[1:] + others[3:]}, keep_first=keep_first)
    kept = {r["id"]: r for r in _rows(out / "kept")}
    removed = {r["id"]: r for r in _rows(out / "removed")}
    assert len(kept) + len(removed) == 9
    assert all(f"other-{i}" in kept for i in range(6))
    if keep_first:
        assert kept["copy-0"]["text"] == story and kept["copy-0"]["lines_dedup_cut_lines"] == 0
        assert sorted(removed) == ["copy-1", "copy-2"]
    else:
        assert sorted(removed) == ["copy-0", "copy-1", "copy-2"]
    assert {r["removed_reason"] for r in removed.values()} == {"too_many_repeated_lines"}


def test_a_line_is_kept_by_the_first_holder_that_stays_not_by_one_the_five_percent_rule_removes(tmp_path):
    """Found by adversarial testing: story P on sites a, b, e and story Q on b, c, d, where b (a
    roundup holding both) came first among Q's holders. b kept Q's lines but lost P's to a, so the
    5% rule removed it, and c and d lost Q: Q survived in 0 of its lines. The keeper of a line is
    now the first holder the removal stage keeps."""
    import re

    docs = [d for d in load_cc_docs() if 400 <= len(d["text"].split()) <= 3000]

    def story(doc: dict) -> str:
        sentences = [x for x in re.split(r"(?<=[.!?])\s+", " ".join(doc["text"].split())) if 3 <= len(x.split()) <= 30]
        return "\n".join(sentences[:12])

    p, q = story(docs[0]), story(docs[1])
    rows = [("a", "https://news-a.example.com/x", "Site A daily\n" + p),
            ("b", "https://news-b.example.net/roundup", "Weekly roundup\n" + p + "\n" + q),
            ("c", "https://paper-c.example.org/q", "Paper C\n" + q), ("d", "https://blog-d.example.io/q", "Blog D\n" + q),
            ("e", "https://mag-e.example.co.uk/p", "Mag E\n" + p)]
    stats, out = _run(tmp_path, {"s0": [{"id": i, "url": u, "text": t} for i, u, t in rows]})
    kept = {r["id"]: r for r in _rows(out / "kept")}
    assert sorted(kept) == ["a", "c"] and len(kept) + len(_rows(out / "removed")) == 5
    assert p in kept["a"]["text"] and q in kept["c"]["text"]  # each story whole, once
    assert stats["passes"]["keepers"]["keepers_moved"] > 0


def test_pairs_seen_in_several_shards_count_one_domain_and_no_url_counts_none():
    line = np.array([7, 7, 7, 9, 9, 5], dtype=np.uint64)
    domain = np.array([1, 1, 2, 0, 0, 3], dtype=np.uint64)  # (7, 1) from two shards; 9 only without URL
    docs = np.array([4, 2, 1, 3, 8, 1], dtype=np.uint32)
    lines, n_docs, n_domains = aggregate_pairs(line, domain, docs)
    assert lines.tolist() == [5, 7, 9] and n_docs.tolist() == [1, 7, 11] and n_domains.tolist() == [1, 2, 0]
    # the keeper of each line: the id hash of its row with the lowest doc key
    first = np.array([5 << 32, 3, (1 << 32) | 7, 9, 2, 4], dtype=np.uint64)
    first_id = np.array([50, 30, 17, 90, 20, 40], dtype=np.uint64)
    *_, keepers, keeper_shards = aggregate_pairs(line, domain, docs, first, first_id)
    assert keepers.tolist() == [40, 30, 20] and keeper_shards.tolist() == [0, 0, 0]  # and its shard
    first[1] = (2 << 32) | 3  # line 7's lowest key is now (1 << 32) | 7: shard 1, id hash 17
    assert aggregate_pairs(line, domain, docs, first, first_id)[3:][0].tolist()[1] == 17
    assert aggregate_pairs(line, domain, docs, first, first_id)[4].tolist()[1] == 1
    # the most documents of one site: (7, 1) over its two shards' rows; a line without URLs has no site
    *_, site = aggregate_pairs(line, domain, docs, site_docs=True)
    assert site.tolist() == [1, 6, 0]
    assert aggregate_pairs(line, domain, docs, first, first_id, site_docs=True)[5].tolist() == [1, 6, 0]


def test_candidates_normalize_and_skip_prose_and_numbers():
    rule = LineRule(min_chars=10, min_words=2, max_words=12, fold_digits=True)
    assert rule.key("Page 2 of 9 — Next") == rule.key("  page 3  OF 7 — next ")
    assert rule.key("Jump to navigation") is not None
    assert rule.key("References") is None  # one word: line_corrections' business
    assert rule.key("12 / 03 / 2019") is None  # no letter
    assert rule.key(" ".join(["word"] * 13)) is None  # prose-length line
    # CJK characters count as words, as in every other stage: no Chinese line was ever a candidate
    # (one whitespace "word"), so a boilerplate line shared by 6 sites was never cut (adversarial testing)
    assert rule.key("版权所有 请勿随意转载") is not None
    assert rule.key("本文由作者原创发布，转载请注明出处，否则将追究法律责任，谢谢合作配合。") is None  # prose-length


def test_bad_config_and_input_are_one_clear_line(tmp_path):
    with pytest.raises(DedupConfigError, match="lines.min_domains"):
        load_dedup_config(overrides={"method": "lines", "lines.min_domains": 1})
    src = tmp_path / "plain"
    src.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["x y"]}), src / "s.parquet")
    with pytest.raises(DedupInputError, match=r"s\.parquet lacks column\(s\) \['url'\]"):
        run_dedup(str(src), str(tmp_path / "out"), DedupConfig(method="lines", executor={"workers": 1}))


def _texts(out: Path) -> dict[str, tuple[str, str | None]]:
    return {r["id"]: (r["text"], r.get("removed_reason")) for sub in ("kept", "removed") for r in _rows(out / sub)}


def test_several_partitions_give_the_same_cuts(sample_run, tmp_path):
    """The same index split over 3 hash partitions: the same documents kept, cut and removed as
    the single-partition run. (The same check on a real local Ray cluster, 2 workers, passes too
    but costs ~30 s on a loaded machine: ``benchmarks/dedup_lines.py --ray``, docs/dedup.md.)"""
    docs, stats, out = sample_run
    run = out.parent / "run"
    with make_executor("local", 1) as ex:
        multi = run_dedup(str(run), str(tmp_path / "multi"), DedupConfig(method="lines", partitions=3), ex)
    assert multi["partitions"] == 3 and multi["passes"]["boilerplate"]["tasks"] == 3
    assert {k: multi[k] for k in ("boilerplate_lines", "lines_cut", "chars_cut", "docs_removed")} == \
        {k: stats[k] for k in ("boilerplate_lines", "lines_cut", "chars_cut", "docs_removed")}
    assert _texts(tmp_path / "multi") == _texts(out)


@pytest.mark.parametrize("source", [None, "common-crawl"])
def test_ids_repeated_across_shards_keep_each_line_once(tmp_path, source):
    """Found by adversarial testing: keepers were named by id alone, so with per-file ids
    (``doc-0`` in every Parquet file of a dataset) every ``doc-0`` was a keeper, and the line stayed
    in each of them; named by the ``source`` column instead, a constant source (Dolma-style) did the
    same. The index names keepers by id and shard."""
    menu = ("Home | About us | Contact the editorial team\nSubscribe to our weekly newsletter today\n"
            "All rights reserved by the publisher group")
    shards = {f"part-{s}": [{"id": f"doc-{i}", "url": f"https://site{s}{i}.example/p",
                             "text": menu + "\n" + " ".join(f"unique{s}x{i}w{k}" for k in range(600)),
                             **({"source": source} if source else {})}
                            for i in range(3)] for s in range(4)}
    stats, out = _run(tmp_path, shards, max_removed_word_frac=0.5)
    kept = _rows(out / "kept")
    assert len(kept) == 12
    assert sum("Subscribe to our weekly newsletter today" in r["text"] for r in kept) == 1


def test_an_index_applied_to_a_copy_of_its_files_still_keeps_each_line(tmp_path):
    """Found by adversarial testing: keepers named by the shard's path matched no document when
    the index was applied (the YAML stage) to the same files elsewhere: the line was cut from
    every copy. Without a shard to go by, ids alone decide, as before."""
    import shutil

    from refinery.config import parse_config
    from refinery.pipeline import run_pipeline

    menu = "Subscribe to our weekly newsletter today\nAll rights reserved by the publisher group"
    shards = {f"part-{s}": [{"id": f"s{s}-{i}", "url": f"https://site{s}{i}.example/p",
                             "text": menu + "\n" + " ".join(f"w{s}x{i}y{k}" for k in range(400))} for i in range(2)]
              for s in range(2)}
    stats, out = _run(tmp_path, shards, max_removed_word_frac=0.5)
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "run", copy)
    config = parse_config({"name": "apply", "stages": [{"type": "lines_dedup",
                                                         "params": {"dedup_dir": str(out / "dedup")}}]})
    applied = tmp_path / "applied"
    run_pipeline(config, str(copy), str(applied), workers=1, progress=False)
    texts = [r["text"] for r in _rows(applied / "kept")]
    assert len(texts) == 4 and sum("Subscribe to our weekly newsletter today" in t for t in texts) == 1


def test_keepers_are_walked_one_shard_file_at_a_time_in_document_order(tmp_path, monkeypatch):
    """The keeper walk held every (holder, line) pair of the corpus at once, ~100 B each, outside
    memory_budget. It now reads one shard's holders at a time, in shard order (the documents'
    order), and sorts a file whose rows are out of order; the keepers are those of one global
    walk."""
    from refinery.dedup import lines

    def holders(path: Path, shard: int, rows: list[tuple[int, int, int, int, int]]) -> str:
        # (row, id_hash, total_words, line_pos, words)
        cols = list(zip(*rows))
        pq.write_table(pa.table({"doc": [(shard << 32) | r for r in cols[0]], "id_hash": list(cols[1]),
                                 "total_words": list(cols[2]), "line_pos": list(cols[3]), "words": list(cols[4])},
                                schema=lines._HOLDERS_SCHEMA), path)
        return str(path)

    # shard 0: doc 0 holds lines 0 and 1 (10 of its 100 words: it stays, keeping both); doc 1
    # holds line 1 (kept by doc 0: 50 of 60 words cut, removed) and line 2, which it loses
    first = holders(tmp_path / "a.parquet", 0, [(1, 11, 60, 2, 5), (0, 10, 100, 0, 5), (1, 11, 60, 1, 50),
                                                (0, 10, 100, 1, 5)])
    # shard 1: doc 0 holds line 2 alone (kept by no earlier holder): it stays and keeps it
    second = holders(tmp_path / "b.parquet", 1, [(0, 20, 80, 2, 4)])
    read = []
    original = lines.parquet.read_table
    monkeypatch.setattr(lines.parquet, "read_table", lambda uri, *a, **k: read.append(uri) or original(uri, *a, **k))
    keeper, keeper_shard, has, counts = lines.assign_keepers([first, second], 3, 0.05)
    assert read == [first, second]  # one file at a time, in shard order
    assert has.tolist() == [True, True, True]
    assert keeper.tolist() == [10, 10, 20] and keeper_shard.tolist() == [0, 0, 1]
    assert counts == {"holders": 3, "holders_removed": 1, "lines_kept": 3, "lines_lost": 0}


def test_the_keeper_walk_holds_one_shard_of_holders_at_a_time(tmp_path):
    """Memory of the walk: the per-line arrays plus one shard's holders, not the whole corpus's
    (numpy's allocations, which tracemalloc sees: ~10 files of 20k pairs)."""
    import tracemalloc

    from refinery.dedup import lines

    rng = np.random.default_rng(7)
    uris = []
    for shard in range(10):
        rows = np.repeat(np.arange(4_000), 5)
        pq.write_table(pa.table({"doc": (np.uint64(shard) << np.uint64(32)) | rows.astype(np.uint64),
                                 "id_hash": rows.astype(np.uint64), "total_words": np.full(len(rows), 500),
                                 "line_pos": (np.tile(np.arange(5), 4_000) * 100 + rng.integers(0, 100, len(rows))),
                                 "words": np.ones(len(rows), dtype=np.int64)}, schema=lines._HOLDERS_SCHEMA),
                       tmp_path / f"{shard}.parquet")
        uris.append(str(tmp_path / f"{shard}.parquet"))
    one_shard = 20_000 * 5 * 8  # its five columns as numpy arrays
    tracemalloc.start()
    _, _, has, counts = lines.assign_keepers(uris, 500, 0.05)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert counts["holders"] == 40_000 and has.all()
    assert peak < 3 * one_shard, peak  # all ten shards' pairs at once were over 10x


def test_a_resumed_run_records_every_step(sample_run):
    """A run killed after the keepers step and resumed lost the line_holders step from its
    dedup_stats.json (found by killing runs): the resumed run's record equals the first one's."""
    docs, stats, out = sample_run
    ex = make_executor("local", 1)
    try:
        again = run_dedup(str(out.parent / "run"), str(out), DedupConfig(method="lines"), ex)
    finally:
        ex.close()
    assert list(again["passes"]) == list(stats["passes"]) and "line_holders" in again["passes"]
    assert again["passes"]["line_holders"] == stats["passes"]["line_holders"]


@pytest.mark.parametrize("min_site_docs", [None, 5])
def test_a_boilerplate_task_stays_within_its_bytes_per_row(min_site_docs):
    """Partitions are sized with LINE_BYTES_PER_ROW: the partition as read plus the aggregation's
    peak must fit it (a review measured 117 B/row against 104, and the site rule's arrays added
    ~20 more even with the rule off)."""
    import tracemalloc

    from refinery.dedup.lines import LINE_BYTES_PER_ROW

    rng = np.random.default_rng(0)
    n = 1_000_000
    cols = dict(line=rng.integers(0, n * 3 // 4, n).astype(np.uint64), domain=rng.integers(1, 50_000, n).astype(np.uint64),
                docs=rng.integers(1, 3, n).astype(np.uint32), first=rng.permutation(n).astype(np.uint64),
                first_id=rng.integers(0, 2**63, n).astype(np.uint64))
    read = sum(a.nbytes for a in cols.values())  # alive in the task meanwhile
    tracemalloc.start()
    try:
        aggregate_pairs(cols["line"], cols["domain"], cols["docs"], cols["first"], cols["first_id"],
                        site_docs=bool(min_site_docs))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (read + peak) / n <= LINE_BYTES_PER_ROW, f"{(read + peak) / n:.0f} B/row"


def _dated(docs: list[dict], lines: list[str]) -> list[dict]:
    """Real documents with one line put on top of each: where a news page's dateline sits."""
    return [dict(d, text=f"{line}\n{d['text']}") for d, line in zip(docs, lines)]


def test_datelines_stay_with_exact_dates_and_chrome_with_digits_is_still_cut(tmp_path):
    """``fold_digits`` made every dateline of a month one line ("april 00, 0000"): on the real
    pages of ``benchmarks/real_pages.py`` through the recipe, the only two lines the pass cut were
    "April 11, 2023" and "April 21, 2022" (articles of different sites). With ``exact_dates`` a
    dateline keeps its digits: different dates stay, the same date on many pages (a template's
    fixed date) is still cut, and chrome with digits ("3 comments") is still one folded line."""
    docs = [d for d in load_cc_docs() if d["url"]]
    by_site = collections.defaultdict(list)
    for d in docs:
        by_site[DomainCounter().domain(d["url"])].append(d)
    picked = [d for site in sorted(by_site)[:8] for d in by_site[site][:1]]  # 8 documents of 8 sites
    # the two real ones, and six more of their form: folded, all are "april 00, 0000"
    dates = ["April 11, 2023", "April 21, 2022"] + [f"April {day}, {year}" for day, year in
                                                    ((12, 2021), (14, 2019), (15, 2020), (16, 2018), (17, 2017), (18, 2016))]
    fixed = ["January 1, 2010"] * 4 + ["Last updated: 2020-01-01"] * 4
    comments = [f"{n} comments on this post" for n in range(2, 10)]
    shards = {"a": _dated(_dated(_dated(picked, dates), fixed), comments)}

    def cut_lines(run: Path) -> collections.Counter:  # each added line, counted where it is gone
        kept = {r["id"]: r["text"].split("\n") for r in _rows(run / "kept")}
        assert len(kept) == len(picked)
        return collections.Counter(line for i, d in enumerate(picked) for line in (dates[i], fixed[i], comments[i])
                                   if line not in kept[d["id"]])

    _, old = _run(tmp_path / "old", shards, max_removed_word_frac=1.0)
    _, new = _run(tmp_path / "new", shards, max_removed_word_frac=1.0, exact_dates=True)
    before, after = cut_lines(old), cut_lines(new)
    assert sum(before[d] for d in dates) == len(dates) - 1  # every dateline but the first, folded as one
    assert not any(after[d] for d in dates)  # each date is its own line now
    for line in set(fixed) | set(comments[1:]):  # a fixed date and the comment counters: cut but in one
        assert after[line] == before[line]
    assert sum(after[line] for line in set(fixed)) == 6 and sum(after[line] for line in comments) == 7


@pytest.mark.parametrize("line, dateline", [
    ("April 11, 2023", True), ("Posted on 11 April 2023", True), ("Updated: 2022-04-21 10:30", True),
    ("FRIDAY APRIL 17", True), ("3 de octubre de 2011", True), ("Published 12/03/2019", True),
    ("11. Mai 2021", True), ("Monday, April 17th, 2023 at 10:30 am EDT", True),
    ("3 comments", False), ("© 2023 Acme. All rights reserved.", False), ("Page 2 of 9", False),
    ("Line 11: Line 10:", False), ("Friday 10:30", False), ("ACL, 2022", False),
    ("May 3 people came to the show", False), ("Final score: Arsenal 3, Chelsea 1", False),
])
def test_which_lines_are_datelines(line, dateline):
    """A date with at most three other words; chrome with digits has no month name or numeric date."""
    import unicodedata

    from refinery.dedup.datelines import is_dateline

    assert is_dateline(unicodedata.normalize("NFKC", line).casefold()) is dateline


def test_exact_dates_at_its_old_value_leaves_old_runs_fingerprints_alone():
    """``lines.exact_dates`` is unset in run.json files written before it: at false (what they
    did) every dedup pass's fingerprint is as before, so such a run resumes; true changes it."""
    from refinery.plan import _dedup_params

    now = DedupConfig(method="lines").model_dump(mode="json")
    before = json.loads(json.dumps(now))
    del before["lines"]["exact_dates"]
    assert _dedup_params(now) == _dedup_params(before)
    now["lines"]["exact_dates"] = True
    assert _dedup_params(now) != _dedup_params(before)


@pytest.mark.parametrize("line", [
    # relative times and reading times: "ago" is agosto's abbreviation (es, pt, it, id), "min" Minggu's (id)
    "Updated 3 hours ago", "Posted 2 days ago", "Updated 3 hrs ago", "2 min read",
    # opening hours: weekday names beside hours are no date
    "Mon 9 am", "Sat 9-1", "Tue, Thu 9-12", "Open Mon-Sat 10am-6pm", "Opening hours: Mon - Fri 9 - 5",
    "Sonntag: 10-18 Uhr", "Montag - Freitag 9-18 Uhr",
    # a month name that is no date: its number belongs to something else
    "May sale: 20% off", "May sale 20% off everything", "10 % de descuento en mayo",
    # abbreviations that are words: "out" (outubro), "set" (setembro), "pro" (prosinec), "led" (leden)
    "Rated 4.5 out of 5", "Set of 4", "iPhone 14 Pro Max (6,7 Zoll)", "LED 12 V lamp", "20 per page",
])
def test_chrome_with_a_month_or_weekday_word_is_no_dateline(line):
    """Chrome lines whose folded form repeats on many sites ("updated 0 hours ago", "0 min read",
    "mon 0 am") were datelines because a CLDR abbreviation is also a word ("ago", "min", "out") or
    a weekday name beside opening hours counted as a date: their digits escaped folding, so each
    variant was its own line and the cut chrome stayed."""
    import unicodedata

    from refinery.dedup.datelines import is_dateline

    assert not is_dateline(unicodedata.normalize("NFKC", line).casefold())


@pytest.mark.parametrize("variants, key", [
    (["Archive: March 2023 (5)", "Archive: March 2023 (7)"], "archive: march 2023 (0)"),
    (["April 11, 2023 | 3 comments", "April 11, 2023 | 7 comments"], "april 11, 2023 | 0 comments"),
    (["5 min read · Mar 3", "7 min read · Mar 3"], "0 min read · mar 3"),
    (["04 DEC 19 | 3 comments", "04 DEC 19 | 5 comments"], "04 dec 19 | 0 comments"),
    (["Posted on 11 April 2023 by admin, 2 replies", "Posted on 11 April 2023 by admin, 5 replies"], None),
])
def test_a_datelines_other_numbers_stay_folded(variants, key):
    """Only the date keeps its digits: an archive widget's post count or a comment counter beside
    the date is still folded, so the widget line of a month is one line on every blog."""
    rule = LineRule(exact_dates=True)
    keys = {rule.normalize(v) for v in variants}
    assert len(keys) == 1
    assert key is None or keys == {key}


def test_dateline_names_do_not_depend_on_the_installed_babel(monkeypatch):
    """The key of a line must be the same in every process of a run, Ray nodes and a resume after
    an upgrade included: babel 2.12 (allowed by pyproject) has twelve Finnish month abbreviations
    ("tammik", "helmik", ...) that 2.19 does not, so one line was a dateline on one machine and not
    on another. The names are fixed in the source; babel is not read."""
    import babel.dates

    from refinery.dedup import datelines

    before = {line: datelines.is_dateline(line) for line in ("10 tammik 2023", "april 11, 2023", "11. mai 2021")}
    monkeypatch.setattr(babel.dates, "get_month_names", lambda *a, **k: {1: "tammik"})
    monkeypatch.setattr(babel.dates, "get_day_names", lambda *a, **k: {0: "foo"})
    if hasattr(datelines, "_names"):
        datelines._names.cache_clear()
    try:
        assert {line: datelines.is_dateline(line) for line in before} == before == {
            "10 tammik 2023": False, "april 11, 2023": True, "11. mai 2021": True}
    finally:
        if hasattr(datelines, "_names"):
            datelines._names.cache_clear()


def test_chrome_with_digits_is_cut_with_exact_dates_as_without(tmp_path):
    """Relative times, reading times and an archive widget's post counts, one per site with a
    different number: folded, each is one line on 8 sites and cut from all but the first; with
    ``exact_dates`` they were datelines ("ago" and "min" are CLDR abbreviations; a count beside a
    month kept its digits) and all 8 stayed."""
    docs = [d for d in load_cc_docs() if d["url"]]
    by_site = collections.defaultdict(list)
    for d in docs:
        by_site[DomainCounter().domain(d["url"])].append(d)
    picked = [d for site in sorted(by_site)[:8] for d in by_site[site][:1]]
    chrome = [[f"Updated {n} hours ago" for n in range(2, 10)], [f"{n} min read" for n in range(2, 10)],
              [f"Archive: March 2023 ({n})" for n in range(2, 10)]]
    shards = {"a": _dated(_dated(_dated(picked, chrome[0]), chrome[1]), chrome[2])}

    def cut(run: Path) -> int:
        kept = {r["id"]: r["text"].split("\n") for r in _rows(run / "kept")}
        return sum(line not in kept[d["id"]] for group in chrome for d, line in zip(picked, group))

    _, old = _run(tmp_path / "old", shards, max_removed_word_frac=1.0)
    _, new = _run(tmp_path / "new", shards, max_removed_word_frac=1.0, exact_dates=True)
    assert cut(old) == 3 * 7
    assert cut(new) == 3 * 7


def test_a_standalone_lines_dedup_fingerprint_leaves_out_added_settings_at_their_old_value():
    """``refinery dedup --method lines`` fingerprints its index and removal shards with the pass's
    params: ``exact_dates: false`` (and ``min_site_docs: null``) were in them, so a lines dedup
    made before these settings, rerun, redid its index and every removal shard instead of finding
    them finished. At their old value they are left out, as in a plan's fingerprint."""
    from refinery.dedup.config import ADDED_SETTINGS
    from refinery.dedup.driver import _fingerprint, _method_params

    now = _method_params(DedupConfig(method="lines"))
    assert not set(ADDED_SETTINGS["lines"]) & set(now)  # exact_dates, min_site_docs, min_words_left
    before = {k: v for k, v in DedupConfig(method="lines").lines.model_dump().items()
              if k not in ADDED_SETTINGS["lines"]} | {"keeper_key": now["keeper_key"]}
    assert _fingerprint("lines", now, []) == _fingerprint("lines", before, [])
    on = _method_params(DedupConfig(method="lines", lines={"exact_dates": True, "min_site_docs": 5}))
    assert on["exact_dates"] is True and on["min_site_docs"] == 5


def test_min_words_left_keeps_an_article_whose_site_template_is_cut(tmp_path):
    """Real articles in a template of real chrome lines on two sites: the template is over 20% of
    each page, so RefinedWeb's rule removed every page but the first, article and all (probe h89).
    With ``min_words_left`` a page keeps its article and loses the template when that many words
    remain; a page left shorter is still removed, and the first page keeps the template."""
    from refinery.stages.line_corrections import count_words

    # one real paragraph of 60-150 words from each of five documents
    articles = [next(p for p in d["text"].split("\n") if p.isascii() and 60 <= count_words(p) <= 150)
                for d in load_cc_docs() if any(p.isascii() and 60 <= count_words(p) <= 150 for p in d["text"].split("\n"))][:5]
    short = "A short note about the meeting on Tuesday: the room changed, bring the printed agenda and the minutes."
    assert len(articles) == 5
    rows = [{"id": f"p{i}", "url": f"https://site-{'ab'[i % 2]}.org/{i}", "text": "\n".join(CHROME[:4] + [t] + CHROME[4:])}
            for i, t in enumerate(articles + [short])]
    shards = {"a": rows[:3], "b": rows[3:]}
    _, out = _run(tmp_path / "rule", shards, max_removed_word_frac=0.2)
    assert sorted(r["id"] for r in _rows(out / "kept")) == ["p0"]
    stats, out = _run(tmp_path / "left", shards, max_removed_word_frac=0.2, min_words_left=50)
    kept = {r["id"]: r["text"] for r in _rows(out / "kept")}
    removed = {r["id"]: r["removed_reason"] for r in _rows(out / "removed")}
    assert removed == {"p5": "too_many_repeated_lines"} and sorted(kept) == [f"p{i}" for i in range(5)]
    assert kept["p0"] == rows[0]["text"]  # the first holder keeps the template
    assert all(kept[f"p{i}"] == articles[i] for i in range(1, 5))
    assert stats["lines_cut"] == 4 * len(CHROME)


def test_min_words_left_unset_leaves_old_runs_fingerprints_alone():
    """Unset (the old rule) it is left out of every dedup pass's fingerprint; set, it changes it."""
    from refinery.plan import _dedup_params

    now = DedupConfig(method="lines").model_dump(mode="json")
    before = json.loads(json.dumps(now))
    del before["lines"]["min_words_left"]
    assert _dedup_params(now) == _dedup_params(before)
    now["lines"]["min_words_left"] = 50
    assert _dedup_params(now) != _dedup_params(before)


def test_each_shard_is_read_twice_not_three_times(tmp_path, monkeypatch):
    """The pass read each input shard whole three times (line_counts, line_holders, the removal run):
    line_holders now reads the candidate lines line_counts wrote per shard (``doc_lines/``, ~20
    bytes a (document, line) pair against ~180 of text). Every open of an input shard's bytes is
    counted (``fs.open_input``: whole reads and the runner's; the driver's footer reads go through
    ``fs.open_parquet_input``); on S3 each is one GET of the whole object
    (``benchmarks/dedup_lines_reads.py --s3``)."""
    docs = [d for d in load_cc_docs() if any(line in d["text"] for line in CHROME)][:40]
    opened: collections.Counter = collections.Counter()
    real_open = fs.open_input

    def counting_open(uri, *args, **kwargs):
        opened[fs.basename(str(uri))] += "/run/" in str(uri) and str(uri).endswith(".parquet")
        return real_open(uri, *args, **kwargs)

    monkeypatch.setattr(fs, "open_input", counting_open)
    stats, out = _run(tmp_path, {"a": docs[0::2], "b": docs[1::2]})
    assert stats["passes"]["line_holders"]["holders"] > 0 and stats["docs_edited"] > 0
    assert {k: v for k, v in opened.items() if v} == {"a.parquet": 2, "b.parquet": 2}, opened


@pytest.mark.parametrize("min_words_after_cuts", [None, 50])
def test_line_holders_from_the_counted_lines_equal_those_from_the_text(sample_run, tmp_path, min_words_after_cuts):
    """line_holders reads line_counts' ``doc_lines`` file; an index whose line_counts ran before it
    wrote one (resumed from an older version), or with other settings, has the task read the text
    as before: the same holders either way, Gopher's counts with ``min_words_after_cuts`` only."""
    from refinery.dedup import lines

    docs, stats, out = sample_run
    config = DedupConfig(method="lines", lines={"min_words_after_cuts": min_words_after_cuts})
    rule = {k: getattr(config.lines, k) for k in ("min_chars", "min_words", "max_words", "fold_digits", "exact_dates")}
    gopher = min_words_after_cuts is not None
    shard = str(out.parent / "run" / "b.parquet")
    boiler = sorted(str(p) for p in (out / "dedup" / "boilerplate").glob("*.parquet"))
    made = str(tmp_path / "doc_lines.parquet")
    lines.line_count_task(shard, "b", str(tmp_path / "counts.parquet"), 1, rule, shard_index=1,
                          doc_lines_uri=made, gopher_words=gopher)
    other = str(tmp_path / "other.parquet")  # made with other settings: not used
    lines.line_count_task(shard, "b", str(tmp_path / "counts2.parquet"), 1, rule | {"min_words": 3}, shard_index=1,
                          doc_lines_uri=other, gopher_words=gopher)
    held = {}
    for name, uri in (("counted", made), ("missing", str(tmp_path / "none.parquet")), ("other", other)):
        result = lines.line_holders_task(uri, shard, "b", str(tmp_path / f"{name}-holders.parquet"), boiler, rule,
                                         gopher_words=gopher, shard_index=1)
        held[name] = (result, pq.read_table(tmp_path / f"{name}-holders.parquet"))
    assert held["counted"][0] == held["missing"][0] == held["other"][0]
    assert held["counted"][0]["docs"] == len(docs[1::2]) and held["counted"][0]["holders"] > 10
    assert held["counted"][1].equals(held["missing"][1]) and held["counted"][1].equals(held["other"][1])
    assert ("gopher_words" in held["counted"][1].column_names) == gopher
