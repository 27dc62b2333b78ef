"""A stage's fingerprint holds what the stage runs with, not how the config wrote it: ``name``
equal to its type is no name, and a value the stage normalizes (``phone_region: us``, domains'
case and order, Gopher's n-gram table as pairs) is hashed as the stage holds it. A config written
otherwise but meaning the same resumes its run, every pass skipped; it was refused
(``stages.url_filter.name '<unset>' -> 'url_filter'``, session 49, h197), and ``--force`` redid
every pass. A run whose fingerprints an earlier refinery took as written resumes too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _old_code import archived_package, run_with
from _scale_fixtures import write_dedup_input

from _custom_stages import Phrases
from refinery.config import parse_config
from refinery.pipeline import run_pipeline
from refinery.plan import RerunError, plan_run
from refinery.stages.gopher import STOP_WORDS
from refinery.stages import registry

#: main before this change (0.8.10): stage names and params fingerprinted as written
AS_WRITTEN_COMMIT = "b9a296e7069220a94ddd4fab0722e73a28526558"
#: 0.8.11: stop words, languages in order and the phone settings under phone: false as written
STOP_WORDS_AS_WRITTEN_COMMIT = "f952e675f4eeb9283d7f0e21864cc80e62776bd7"

#: (as written, as another config writes the same): each pair runs the same stage
SAME_MEANING = {
    "name_as_its_type": ({"type": "url_filter", "name": "url_filter"}, {"type": "url_filter"}),
    "region_case": ({"type": "pii", "params": {"phone_region": "us"}}, {"type": "pii"}),
    "domains_case_order_dot": ({"type": "url_filter", "params": {"extra_domains": ["B.example.", "a.example"]}},
                               {"type": "url_filter", "params": {"extra_domains": ["a.example", "b.example"]}}),
    "allowed_words_case": ({"type": "url_filter", "params": {"allowed_words": ["Sexo"]}},
                           {"type": "url_filter", "params": {"allowed_words": ["sexo", "sexo"]}}),
    "ngram_pairs_as_default": ({"type": "gopher_repetition", "params": {"top_n_grams": [[2, 0.2], [3, 0.18], [4, 0.16]]}},
                               {"type": "gopher_repetition"}),
    "a_default_placeholder": ({"type": "pii", "params": {"placeholders": {"email": "<EMAIL>"}}}, {"type": "pii"}),
    "float_written_as_int": ({"type": "language_id", "params": {"min_score": 1}},
                             {"type": "language_id", "params": {"min_score": 1.0}}),
    # session 50 (h216): the stop words' order, case and repeats; the languages' order and repeats;
    # the phone matcher's settings with phone: false (nothing reads them)
    "stop_words_case_order_repeats": ({"type": "gopher_quality", "params": {"stop_words": ["The", "of", "and", "the"]}},
                                      {"type": "gopher_quality", "params": {"stop_words": ["and", "of", "the"]}}),
    "stop_words_default_reordered": ({"type": "gopher_quality", "params": {"stop_words": sorted(STOP_WORDS)}},
                                     {"type": "gopher_quality"}),
    "languages_order": ({"type": "language_id", "params": {"languages": ["fr", "en", "fr"]}},
                        {"type": "language_id", "params": {"languages": ["en", "fr"]}}),
    "prescreen_languages_order": ({"type": "prescreen", "params": {"languages": ["de", "en"]}},
                                  {"type": "prescreen", "params": {"languages": ["en", "de"]}}),
    "phone_settings_without_phone": ({"type": "pii", "params": {"phone": False, "phone_region": "gb",
                                                                "phone_bare_digits": True}},
                                     {"type": "pii", "params": {"phone": False}}),
    # session 51 (h225): the placeholder of a type that is off (nothing is replaced by it)
    "placeholder_of_a_type_off": ({"type": "pii", "params": {"phone": False, "credit_card": False,
                                                             "placeholders": {"phone": "[P]", "credit_card": "[C]"}}},
                                  {"type": "pii", "params": {"phone": False, "credit_card": False}}),
}
#: pairs that differ in what the stage runs with
CHANGED = {
    "region": ({"type": "pii", "params": {"phone_region": "gb"}}, {"type": "pii"}),
    "a_name_of_its_own": ({"type": "url_filter", "name": "urls"}, {"type": "url_filter"}),
    "domains": ({"type": "url_filter", "params": {"extra_domains": ["a.example"]}}, {"type": "url_filter"}),
    "placeholder": ({"type": "pii", "params": {"placeholders": {"email": "[EMAIL]"}}}, {"type": "pii"}),
    "stop_words": ({"type": "gopher_quality", "params": {"stop_words": ["the", "and"]}}, {"type": "gopher_quality"}),
    "languages": ({"type": "language_id", "params": {"languages": ["en", "fr"]}}, {"type": "language_id"}),
    "phone_off": ({"type": "pii", "params": {"phone": False}}, {"type": "pii"}),
    "bare_digits_with_phone": ({"type": "pii", "params": {"phone_bare_digits": True}}, {"type": "pii"}),
    "placeholder_of_a_type_on_beside_one_off": ({"type": "pii", "params": {"phone": False, "placeholders": {"email": "[E]"}}},
                                                {"type": "pii", "params": {"phone": False}}),
}


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("docs") / "in"
    write_dedup_input(src, copies=5, per_shard=40)
    return src


def _fingerprint(stage: dict, docs: Path, out: Path) -> str:
    return plan_run(parse_config({"stages": [stage]}), str(docs), str(out)).passes[0].fingerprint


@pytest.mark.parametrize("pair", SAME_MEANING.values(), ids=SAME_MEANING.keys())
def test_a_stage_written_otherwise_but_run_the_same_has_the_same_fingerprint(pair, docs, tmp_path):
    assert _fingerprint(pair[0], docs, tmp_path) == _fingerprint(pair[1], docs, tmp_path)


@pytest.mark.parametrize("pair", CHANGED.values(), ids=CHANGED.keys())
def test_a_stage_that_runs_otherwise_has_another_fingerprint(pair, docs, tmp_path):
    assert _fingerprint(pair[0], docs, tmp_path) != _fingerprint(pair[1], docs, tmp_path)


def _spec(phone_region: str = "us", named: bool = True, min_words: int = 20) -> dict:
    """gopher_quality (named as its type, or not) and pii (its region as given), one dedup pass."""
    return {"name": "meaning", "reader": {"batch_size": 50},
            "stages": [{"type": "gopher_quality", "params": {"min_words": min_words}}
                       | ({"name": "gopher_quality"} if named else {}),
                       {"type": "pii", "params": {"phone_region": phone_region}}],
            "dedup": [{"method": "url"}]}


def _run(spec: dict, docs: Path, out: Path, force: bool = False) -> dict[str, str]:
    return run_pipeline(parse_config(spec), str(docs), str(out), workers=1, progress=False, force=force).passes


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*")
            if p.is_file() and p.parent.name in ("kept", "removed", "stats", "passes")}


def test_a_run_rerun_with_its_config_written_otherwise_skips_every_pass(docs, tmp_path):
    out = tmp_path / "run"
    assert _run(_spec(), docs, out) == {"filter": "done", "url_dedup": "done"}
    before = _mtimes(out)
    # as h197 wrote it: the default name left out, the region in capitals (both were refused)
    assert _run(_spec("US", named=False), docs, out) == {"filter": "skipped", "url_dedup": "skipped"}
    assert _mtimes(out) == before
    with pytest.raises(RerunError, match=r"'filter' pass: stages\.pii\.params\.phone_region 'US' -> 'GB'; rerun"):
        _run(_spec("gb", named=False), docs, out)


def test_a_run_made_by_the_code_of_before_resumes_written_either_way(docs, tmp_path, tmp_path_factory):
    """A 0.8.10 run (made by the code of before, from the repository's history) fingerprinted its
    stages as written (``name: gopher_quality``, ``phone_region: us``). Resumed by this code with
    the same config or one written otherwise, every pass is skipped and nothing is rewritten; a
    real change is refused naming that change alone; ``--force`` redoes from there, in today's terms."""
    old_code = archived_package(tmp_path_factory, AS_WRITTEN_COMMIT, "as-written-code")
    out = tmp_path / "run"
    run_with(old_code, _spec(), docs, out, cwd=tmp_path)
    recorded = json.loads((out / "run.json").read_text())["passes"][0]["params"]["stages"]
    assert recorded[0]["name"] == "gopher_quality" and recorded[1]["params"]["phone_region"] == "us"  # as written
    before = _mtimes(out)
    for spec in (_spec(), _spec("US", named=False), _spec("Us")):
        assert _run(spec, docs, out) == {"filter": "skipped", "url_dedup": "skipped"}, spec
        assert _mtimes(out) == before
    with pytest.raises(RerunError) as refused:
        _run(_spec("US", named=False, min_words=30), docs, out)
    assert "'filter' pass: stages.gopher_quality.params.min_words 20 -> 30; rerun" in str(refused.value)
    assert _run(_spec("US", named=False, min_words=30), docs, out, force=True) == {"filter": "done", "url_dedup": "done"}
    assert _run(_spec("us", min_words=30), docs, out) == {"filter": "skipped", "url_dedup": "skipped"}


def test_a_user_stage_keeping_its_own_objects_under_a_param_resumes_its_run(docs, tmp_path, registry_restored):
    """A user's stage holding a list of its own rule objects under the param's name
    (``self.phrases = [_Phrase(p) for p in phrases]``): the fingerprint took their ``str``,
    ``<_Phrase object at 0x7f...>``, another on every build, so the same command run again was
    refused ("stages.phrases.params.phrases [...] -> [...]") and --force redid every pass. Such a
    value is not the stage's normalized param: it is fingerprinted as written (session 49, h206)."""
    registry.register_stage("phrases", Phrases)
    spec = {"name": "phrases", "stages": [{"type": "phrases", "params": {"phrases": ["Buy now"]}}]}
    assert _fingerprint(spec["stages"][0], docs, tmp_path) == _fingerprint(spec["stages"][0], docs, tmp_path)
    out = tmp_path / "run"
    assert _run(spec, docs, out) == {"filter": "done"}
    recorded = json.loads((out / "run.json").read_text())["passes"][0]["params"]["stages"][0]["params"]
    assert recorded == {"phrases": ["Buy now"]}  # as written: the objects are not a value to hash
    assert _run(spec, docs, out) == {"filter": "skipped"}
    with pytest.raises(RerunError, match=r"stages\.phrases\.params\.phrases \['Buy now'\] -> \['sale'\]"):
        _run(spec | {"stages": [{"type": "phrases", "params": {"phrases": ["sale"]}}]}, docs, out)


def _written(stop_words: list[str], phone_region: str, phone: bool = False, phone_placeholder: str | None = "[P]") -> dict:
    """gopher_quality with its stop words and pii with its phone settings as given (its phone
    placeholder: None leaves the default), one dedup pass."""
    placeholders = {"placeholders": {"phone": phone_placeholder}} if phone_placeholder else {}
    return {"name": "written", "reader": {"batch_size": 50},
            "stages": [{"type": "gopher_quality", "params": {"min_words": 20, "stop_words": stop_words}},
                       {"type": "pii", "params": {"phone": phone, "phone_region": phone_region} | placeholders}],
            "dedup": [{"method": "url"}]}


def test_a_run_made_by_0_8_11_resumes_with_its_stop_words_and_phone_settings_written_otherwise(
        docs, tmp_path, tmp_path_factory):
    """0.8.11 fingerprinted gopher_quality's stop words as listed and pii's phone_region though
    ``phone: false`` (session 50, h216), and the placeholder of a type that is off (session 51,
    h225). Its run resumes, every pass skipped, with them written as it wrote them or otherwise
    (order, case, repeats; another region or phone placeholder nothing reads); this code's own run
    too; a real change is still refused, naming it."""
    old_code = archived_package(tmp_path_factory, STOP_WORDS_AS_WRITTEN_COMMIT, "stop-words-as-written")
    out = tmp_path / "run"
    run_with(old_code, _written(["The", "of", "and", "the"], "gb"), docs, out, cwd=tmp_path)
    recorded = json.loads((out / "run.json").read_text())["passes"][0]["params"]["stages"]
    assert recorded[0]["params"]["stop_words"] == ["The", "of", "and", "the"]  # as written
    before = _mtimes(out)
    for spec in (_written(["The", "of", "and", "the"], "gb"), _written(["and", "of", "the"], "de", phone_placeholder=None),
                 _written(["OF", "the", "And"], "us", phone_placeholder="<TEL>")):
        assert _run(spec, docs, out) == {"filter": "skipped", "url_dedup": "skipped"}, spec
        assert _mtimes(out) == before
    with pytest.raises(RerunError, match=r"'filter' pass: stages\.pii\.params\.phone False -> True"):
        _run(_written(["and", "of", "the"], "gb", phone=True), docs, out)
    with pytest.raises(RerunError, match=r"stages\.gopher_quality\.params\.stop_words \[.*\] -> \['of', 'the'\]"):
        _run(_written(["of", "the"], "gb"), docs, out)
    # a run of this code: the same
    mine = tmp_path / "mine"
    assert _run(_written(["The", "of", "and", "the"], "gb"), docs, mine) == {"filter": "done", "url_dedup": "done"}
    assert _run(_written(["the", "and", "of"], "fr", phone_placeholder="<TEL>"), docs, mine) == {
        "filter": "skipped", "url_dedup": "skipped"}
