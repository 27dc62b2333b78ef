"""``reader.batch_size`` is a memory knob: a shard's outputs (kept, removed, samples, stats) do not
depend on it, so it is left out of the fingerprint and a rerun at another batch size resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from refinery.config import PipelineConfig, load_config
from refinery.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
#: 697 real Common Crawl documents: every document stage of the recipe removes some
CC_DOCS = ROOT / "data/sample/cc_docs/CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"


def _config(batch_size: int) -> PipelineConfig:
    config = load_config(ROOT / "configs/refinedweb.yaml").model_copy(update={"dedup": [], "tokenize": None})
    return config.model_copy(update={"reader": config.reader.model_copy(update={"batch_size": batch_size})})


def _outputs(out: Path) -> dict[str, bytes]:
    """Every shard file of the run, stats without their timings and fingerprint."""
    files = {f"{d}/{f.name}": f.read_bytes() for d in ("kept", "removed", "samples")
             for f in sorted((out / d).glob("*.parquet"))}
    for f in sorted((out / "stats").glob("*.json")):
        files[f"stats/{f.name}"] = json.dumps(_untimed(json.loads(f.read_bytes()))).encode()
    return files


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in ("seconds", "fingerprint")}
    return [_untimed(x) for x in obj] if isinstance(obj, list) else obj


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("batch_size")
    (work / "in").mkdir()
    shutil.copy(CC_DOCS, work / "in")
    run_pipeline(_config(500), str(work / "in"), str(work / "o500"), workers=1, progress=False)
    run_pipeline(_config(7), str(work / "in"), str(work / "o7"), workers=1, progress=False)
    return work


def test_outputs_do_not_depend_on_the_batch_size(runs: Path) -> None:
    big, small = _outputs(runs / "o500"), _outputs(runs / "o7")
    assert sorted(big) == sorted(small) and len(big) == 4
    removed = next(k for k in big if k.startswith("removed/"))
    assert len(big[removed]) > 100_000  # the shard removed documents at several stages
    for name in big:
        assert big[name] == small[name], name


def test_a_rerun_at_another_batch_size_resumes(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(runs / "o500", out)
    assert run_pipeline(_config(7), str(runs / "in"), str(out), workers=1, progress=False).passes == {"filter": "skipped"}
    # the pass unfinished: its finished shard is skipped, not redone (its marker would be rewritten)
    (out / "passes" / "filter.json").unlink()
    stats = {f.name: f.read_bytes() for f in (out / "stats").glob("*.json")}
    run_pipeline(_config(7), str(runs / "in"), str(out), workers=1, progress=False)
    assert {f.name: f.read_bytes() for f in (out / "stats").glob("*.json")} == stats


def test_a_run_that_fingerprinted_the_batch_size_resumes(runs: Path, tmp_path: Path, monkeypatch) -> None:
    """Runs made before batch_size left the fingerprint recorded it in run.json's params."""
    import refinery.plan

    # 80 documents of the shard (in every run here): the plan's terms are tested, not the stages
    out = tmp_path / "old"
    with monkeypatch.context() as m:
        m.setattr(refinery.plan, "OUTPUT_FREE_READER", ())  # fingerprints as refinery did before
        run_pipeline(_config(500), str(runs / "in"), str(out), workers=1, progress=False, limit=80)
    recorded = json.loads((out / "run.json").read_bytes())["passes"][0]["params"]["reader"]
    assert recorded["batch_size"] == 500
    again = run_pipeline(_config(7), str(runs / "in"), str(out), workers=1, progress=False, limit=80)
    assert again.passes == {"filter": "skipped"}
    # a change the fingerprint still covers is refused
    changed = _config(7)
    changed = changed.model_copy(update={"stats": changed.stats.model_copy(update={"samples_per_reason": 3})})
    with pytest.raises(Exception, match="samples_per_reason"):
        run_pipeline(changed, str(runs / "in"), str(out), workers=1, progress=False, limit=80)


# -- tokenize.batch_size ------------------------------------------------------------------------
NEO_JSON = ROOT / "data/sample/tokenizers/tokenizer_gpt-neo-test-tokenizer.json"


def _token_files(out: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(out.iterdir()) if f.is_file() and not f.name.startswith(".")}


def test_token_outputs_do_not_depend_on_the_batch_size_even_with_a_padding_tokenizer(runs: Path, tmp_path: Path) -> None:
    """A tokenizer.json asking for padding put pad ids inside documents, as many as the longest
    text of each encode batch needed; one asking for truncation cut every document at max_length
    (137,754 tokens of 986,833 on the 697 real documents). Both are switched off."""
    import pyarrow.parquet as pq

    from refinery.tokens import load_tokenizer
    from refinery.tokens.writer import tokenize_run
    from tests._tokens_fixtures import write_kept_run

    # the recipe's first 30 kept documents (of 128; 129k of 660k characters): the 12 tokenizations
    # below took ~0.5-2 s each on all of them; these 30 have as many lengths, 26 over 256 tokens
    (kept,) = (runs / "o500" / "kept").glob("*.parquet")
    docs = pq.read_table(kept, columns=["id", "text"]).slice(0, 30).to_pylist()
    write_kept_run(str(tmp_path / "run"), docs, [len(docs)])
    lengths = [len(e.ids) for e in load_tokenizer(str(NEO_JSON)).tokenizer.encode_batch_fast([d["text"] for d in docs])]
    assert sum(n > 256 for n in lengths) >= 20 and len(set(lengths[:7])) == 7  # truncation and padding would show
    spec = json.loads(NEO_JSON.read_text())
    padded = spec | {"padding": {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": None,
                                 "pad_id": 1, "pad_type_id": 0, "pad_token": "<|padding|>"},
                     "truncation": {"direction": "Right", "max_length": 256, "strategy": "LongestFirst", "stride": 0}}
    (tmp_path / "padded.json").write_text(json.dumps(padded))
    made = {}
    for tokenizer in ("gpt2", str(NEO_JSON), str(tmp_path / "padded.json")):
        for shuffle in (False, True):
            outputs = []
            for batch_size in (1000, 7):
                out = tmp_path / f"tok-{len(made)}-{batch_size}"
                tokenize_run(str(tmp_path / "run"), str(out), load_tokenizer(tokenizer), shuffle=shuffle, seed=1,
                             num_shards=2 if shuffle else None, batch_size=batch_size, progress=False)
                outputs.append(_token_files(out))
            assert outputs[0] == outputs[1], (tokenizer, shuffle)
            made[(tokenizer, shuffle)] = outputs[0]
    # padding and truncation switched off: the padded file's tokens are the plain file's
    neo, pad = made[(str(NEO_JSON), False)], made[(str(tmp_path / "padded.json"), False)]
    assert {k: v for k, v in neo.items() if k.endswith((".bin", ".idx"))} == \
        {k: v for k, v in pad.items() if k.endswith((".bin", ".idx"))}


def _tokens_config(batch_size: int) -> PipelineConfig:
    from refinery.config import TokenizeConfig

    return _config(500).model_copy(update={"tokenize": TokenizeConfig(batch_size=batch_size)})


def test_a_rerun_at_another_tokenize_batch_size_resumes(runs: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    run_pipeline(_tokens_config(1000), str(runs / "in"), str(out), workers=1, progress=False, limit=80)
    assert "batch_size" not in json.loads((out / "run.json").read_bytes())["passes"][-1]["params"]
    again = run_pipeline(_tokens_config(7), str(runs / "in"), str(out), workers=1, progress=False, limit=80)
    assert again.passes == {"filter": "skipped", "tokens": "skipped"}
    # a run made when the batch size was fingerprinted resumes in its own terms
    import refinery.plan

    old = tmp_path / "old"
    with monkeypatch.context() as m:
        m.setattr(refinery.plan, "OUTPUT_FREE_TOKENIZE", ())
        run_pipeline(_tokens_config(1000), str(runs / "in"), str(old), workers=1, progress=False, limit=80)
    assert json.loads((old / "run.json").read_bytes())["passes"][-1]["params"]["batch_size"] == 1000
    again = run_pipeline(_tokens_config(7), str(runs / "in"), str(old), workers=1, progress=False, limit=80)
    assert again.passes == {"filter": "skipped", "tokens": "skipped"}
