"""The quality stage's ``code_pages``: documents that explain code scored max(packaged model,
documentation-aware model); every other document exactly as before.

Real documents and the packaged models only: code how-tos of trafilatura's evaluation pages and the
bundled sample WARC, paste dumps of the bundled Common Crawl documents, the Wikipedia leads.
Figures on more data: docs/classifiers.md ("Programming pages, code_pages").
"""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from refinery.classifiers.common import PACKAGED_MODELS, binary_scores, load_fasttext, prepare_text
from refinery.classifiers.prose import explains_code, is_code_line
from refinery.config import StageConfig, parse_config
from refinery.stages.classifiers import CODE_PAGES_MAX_RISE, QualityFilter
from tests.conftest import SAMPLE_CC_DOCS, SHARED_DATA
from tests.test_quality_prose import EVAL_TARBALL, RECIPE_THRESHOLD, _recipe_text, _sample_pip_tutorial, _scores


def _cc_docs() -> dict[str, str]:
    """url -> text of the bundled Common Crawl documents."""
    docs = {}
    for path in sorted(SAMPLE_CC_DOCS.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for doc in map(json.loads, f):
                if doc.get("text", "").strip():
                    docs[(doc.get("metadata") or {}).get("url") or doc["id"]] = doc["text"]
    return docs


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason=f"{EVAL_TARBALL} is absent")
def test_code_howtos_the_packaged_model_removes_are_kept() -> None:
    # a tmux how-to (evaluation pages) and a pip-packaging guide (sample WARC): both were removed
    # without code_pages; the guide's code blocks, extracted whole since h217 (keep_code_blocks),
    # lift it over the threshold on their own now, the how-to is still removed without code_pages
    with tarfile.open(EVAL_TARBALL) as tar:
        html = tar.extractfile("tests/eval/flowfx.de.tmux.html").read()
    texts = [_recipe_text(html, "https://flowfx.de/blog/copy-paste-from-tmux-to-system-clipboard/"), _sample_pip_tutorial()]
    assert all(explains_code(t, 50) for t in texts)
    before, after = _scores(texts), _scores(texts, code_pages=True)
    assert before[0] < RECIPE_THRESHOLD and np.all(after >= RECIPE_THRESHOLD) and np.all(after >= before)
    docs_model = load_fasttext(PACKAGED_MODELS / "quality_docs.ftz")
    docs = binary_scores(docs_model, [prepare_text(t, 20_000) for t in texts], "wiki")
    assert np.array_equal(after, np.maximum(before, np.minimum(docs, CODE_PAGES_MAX_RISE * before)))


def test_paste_dumps_stay_removed_though_the_docs_model_would_keep_one() -> None:
    # code with no prose around it (pastebin's chrome and a script): the gate stays shut
    docs = _cc_docs()
    dumps = [docs["pastebin.com/QFs9hKka"], docs["pastebin.com/zB7rdACg"]]
    assert all(sum(map(is_code_line, t.split("\n"))) >= 3 and not explains_code(t, 50) for t in dumps)
    before, after = _scores(dumps), _scores(dumps, code_pages=True)
    assert np.array_equal(before, after) and np.all(after < RECIPE_THRESHOLD)
    docs_model = load_fasttext(PACKAGED_MODELS / "quality_docs.ftz")
    assert binary_scores(docs_model, [prepare_text(dumps[0], 20_000)], "wiki")[0] > 0.5  # what the gate prevents


def test_only_documents_that_explain_code_change_and_only_upwards() -> None:
    texts = list(_cc_docs().values())
    before, after = _scores(texts), _scores(texts, code_pages=True)
    gated = np.array([explains_code(t[:20_000], 50) for t in texts])
    assert 0 < gated.sum() < 0.05 * len(texts)
    assert np.array_equal(before[~gated], after[~gated])
    assert np.all(after[gated] >= before[gated]) and np.any(after[gated] > before[gated])
    # the docs model scores most gated pages far above the packaged model (a StackExchange answer
    # 0.005 -> 0.13): the rise is capped, so the deep junk tail is not lifted over the threshold
    assert np.all(after[gated] <= CODE_PAGES_MAX_RISE * before[gated] * (1 + 1e-6))


def test_the_default_scores_with_the_packaged_model_alone() -> None:
    texts = list(_cc_docs().values())[:200]
    model = load_fasttext(PACKAGED_MODELS / "quality.ftz")
    expected = binary_scores(model, [prepare_text(t, 20_000) for t in texts], "wiki")
    assert np.array_equal(_scores(texts), expected)


@pytest.mark.skipif(not (SHARED_DATA / "quality").is_dir(), reason=f"{SHARED_DATA} is absent")
def test_no_wikipedia_lead_opens_the_gate() -> None:
    with open(SHARED_DATA / "quality" / "summaries_en-us.json", encoding="utf-8") as f:
        leads = [e["extract"] for e in json.load(f).values() if e.get("extract", "").strip()]
    assert len(leads) > 10_000 and not any(explains_code(t, 50) for t in leads)


def test_the_option_changes_the_fingerprint_only_when_on() -> None:
    def fingerprint(params: dict) -> dict:
        return StageConfig(type="quality", params=params).fingerprint_params()

    old = fingerprint({"mode": "threshold", "threshold": 0.0005})
    assert fingerprint({"mode": "threshold", "threshold": 0.0005, "code_pages": False}) == old
    on = fingerprint({"mode": "threshold", "threshold": 0.0005, "code_pages": True})
    assert on != old and on["code_pages"] is True
    assert [f.name for f in QualityFilter(code_pages=True).model_files()] == ["quality.ftz", "quality_docs.ftz"]
    assert [f.name for f in QualityFilter().model_files()] == ["quality.ftz"]


def test_docs_model_path_needs_code_pages() -> None:
    with pytest.raises(ValueError, match="code_pages"):
        QualityFilter(docs_model_path=str(PACKAGED_MODELS / "quality_docs.ftz"))
    batch = pa.RecordBatch.from_pydict({"id": ["a"], "text": ["x = 1;\ny = 2;\nz = 3;"]})
    stage = QualityFilter(code_pages=True, docs_model_path=str(PACKAGED_MODELS / "quality_docs.ftz"))
    assert stage.process(batch).column("quality_score")[0].as_py() is not None


def _old_run(tmp_path, monkeypatch, missing: set[str]) -> tuple[Path, Path]:
    """A quality run made by a refinery whose quality stage lacked the params ``missing``
    (its effective params did not list them), with the params it had at their defaults."""
    import refinery.config as config_module
    from refinery.pipeline import run_pipeline

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text("".join(json.dumps({"id": str(i), "text": f"Sentence number {i} is about the weather "
                                                     "and the sea, and it is written in English."}) + "\n" for i in range(5)))
    out = tmp_path / "run"
    effective = config_module.StageConfig.effective_params
    with monkeypatch.context() as m:
        m.setattr(config_module.StageConfig, "effective_params",
                  lambda self, stage=None: {k: v for k, v in effective(self, stage).items() if k not in missing})
        done = run_pipeline(parse_config(_quality_spec({})), str(src), str(out), workers=1, progress=False)
    assert done.passes["filter"] == "done"
    return src, out


def _quality_spec(extra: dict) -> dict:
    return {"stages": [{"type": "quality", "params": {"mode": "threshold", "threshold": 0.0005, **extra}}]}


@pytest.mark.parametrize("missing", [
    {"code_pages", "docs_model_path"},  # made before session 34
    {"exclude_code", "min_prose_words", "code_pages", "docs_model_path"},  # made before session 32
])
def test_a_run_made_before_the_quality_params_resumes(tmp_path, monkeypatch, missing) -> None:
    from refinery.pipeline import run_pipeline

    src, out = _old_run(tmp_path, monkeypatch, missing)
    again = run_pipeline(parse_config(_quality_spec({})), str(src), str(out), workers=1, progress=False)
    assert again.passes["filter"] == "skipped"


@pytest.mark.parametrize("extra, named", [({"code_pages": True}, "code_pages"), ({"exclude_code": True}, "exclude_code")])
def test_the_new_settings_refuse_an_old_runs_quality_output(tmp_path, monkeypatch, extra, named) -> None:
    # the recipe's code_pages: true must not reuse shards scored without it
    from refinery.pipeline import run_pipeline
    from refinery.plan import RerunError

    src, out = _old_run(tmp_path, monkeypatch, {"exclude_code", "min_prose_words", "code_pages", "docs_model_path"})
    with pytest.raises(RerunError, match=named):
        run_pipeline(parse_config(_quality_spec(extra)), str(src), str(out), workers=1, progress=False)
