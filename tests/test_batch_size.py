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

    out = tmp_path / "old"
    with monkeypatch.context() as m:
        m.setattr(refinery.plan, "OUTPUT_FREE_READER", ())  # fingerprints as refinery did before
        run_pipeline(_config(500), str(runs / "in"), str(out), workers=1, progress=False)
    recorded = json.loads((out / "run.json").read_bytes())["passes"][0]["params"]["reader"]
    assert recorded["batch_size"] == 500
    assert run_pipeline(_config(7), str(runs / "in"), str(out), workers=1, progress=False).passes == {"filter": "skipped"}
    # a change the fingerprint still covers is refused
    changed = _config(7)
    changed = changed.model_copy(update={"stats": changed.stats.model_copy(update={"samples_per_reason": 3})})
    with pytest.raises(Exception, match="samples_per_reason"):
        run_pipeline(changed, str(runs / "in"), str(out), workers=1, progress=False)
