"""Configs are validated before any work starts, with errors that name the key and the problem."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from refinery.config import ConfigError, PipelineConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]




def _stage(config: dict, kind: str) -> dict:
    """The recipe's stage of type ``kind`` (by type, not position: recipes gain stages)."""
    return next(st for st in config["stages"] if st["type"] == kind)

def _base() -> dict:
    return yaml.safe_load((ROOT / "configs" / "refinedweb.yaml").read_text())


def test_shipped_configs_validate():
    """Every file in configs/ loads with its command's loader, and configs/dedup.yaml shows every
    section `refinery dedup -c` reads (its lines: section was missing; review h98)."""
    from pydantic import BaseModel

    from refinery.dedup.config import DedupConfig, DedupConfigError, load_dedup_config

    paths = sorted((ROOT / "configs").iterdir())
    assert paths and all(p.suffix == ".yaml" for p in paths), paths
    for path in paths:
        data = yaml.safe_load(path.read_text())
        if "stages" in data:  # a pipeline recipe (`refinery run`)
            recipes = [load_config(path)]
        else:  # one dedup pass's settings (`refinery dedup -c`)
            load_dedup_config(path)
    sections = {name for name, f in DedupConfig.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}
    assert sections == {"minhash", "substring", "lines", "decontaminate", "executor"}
    assert not sections - set(yaml.safe_load((ROOT / "configs" / "dedup.yaml").read_text()))
    # h170: `refinery dedup -c` refuses a method's section under another method, as a recipe does;
    # the template (every section, at the defaults) serves every --method, and a config dumped
    # whole (run.json's) loads again
    for method in ("exact", "url", "substring", "lines"):
        assert load_dedup_config(ROOT / "configs" / "dedup.yaml", {"method": method}).method == method
    with pytest.raises(DedupConfigError, match=r"^invalid dedup config .*dedup.yaml:\n  minhash: only read by method: "
                       r"minhash \(and its seed by method: exact or url\); the method is url, got bands$"):
        load_dedup_config(ROOT / "configs" / "dedup.yaml", {"method": "url", "minhash.bands": 10})
    recipe = recipes[0]
    assert PipelineConfig.model_validate(recipe.model_dump(mode="json")).model_dump() == recipe.model_dump()


def test_a_preset_is_what_it_says_or_one_line_naming_the_values_that_contradict_it(tmp_path):
    """Found by h172: the template's `# preset: refinedweb` uncommented (or `-c` with `--preset
    refinedweb`) gave 14 x 8 of 128, its explicit values winning over the preset, silently."""
    from refinery.dedup.config import DedupConfig, DedupConfigError, load_dedup_config

    template = (ROOT / "configs" / "dedup.yaml").read_text()
    assert "  # preset: refinedweb " in template
    uncommented = tmp_path / "dedup.yaml"
    uncommented.write_text(template.replace("  # preset: refinedweb ", "  preset: refinedweb   "))
    refinedweb = (9000, 450, 20)
    for path, overrides in ((uncommented, {}), (ROOT / "configs" / "dedup.yaml", {"minhash.preset": "refinedweb"})):
        got = load_dedup_config(path, overrides).minhash
        assert (got.num_perm, got.bands, got.rows) == refinedweb, (path, overrides)
    # `--preset` on the command line replaces a file's values too; a value beside a preset that
    # says otherwise is one line naming both
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text("minhash:\n  num_perm: 128\n  bands: 14\n  rows: 8\n")
    assert load_dedup_config(tuned, {"minhash.preset": "refinedweb"}).minhash.bands == 450
    tuned.write_text("minhash:\n  preset: refinedweb\n  num_perm: 128\n  bands: 14\n  rows: 8\n")
    with pytest.raises(DedupConfigError, match=r"^invalid dedup config .*tuned.yaml:\n  minhash: preset refinedweb is "
                       r"num_perm 9000, bands 450, rows 20, but num_perm 128, bands 14, rows 8 are also given: "
                       r"write the preset alone, or num_perm: 128, bands: 14, rows: 8 without it$"):
        load_dedup_config(tuned)
    # h178: what to write, the preset's values filled in, spelled as the user gave them (it said
    # "give the preset or num_perm, bands and rows, not both" for `--preset refinedweb --bands 400`)
    with pytest.raises(DedupConfigError, match=re.escape(
            "invalid dedup config (command line): --preset refinedweb is --num-perm 9000 --bands 450 --rows 20, but "
            "--bands 400 is also given: give --preset refinedweb alone, or --num-perm 9000 --bands 400 --rows 20 "
            "without it")) as refused:
        load_dedup_config(None, {"minhash.preset": "refinedweb", "minhash.bands": 400})
    assert "\n" not in str(refused.value)
    with pytest.raises(DedupConfigError, match=re.escape(
            "--bands 20 is also given: give --preset default alone, or --num-perm 128 --bands 20 --rows 8 without it "
            "(--num-perm at least 160: bands x rows is 160)")):
        load_dedup_config(None, {"minhash.preset": "default", "minhash.bands": 20})
    tuned.write_text("minhash:\n  preset: refinedweb\n")
    with pytest.raises(DedupConfigError, match=re.escape(
            f"invalid dedup config {tuned} and the command line: {tuned}'s preset refinedweb is num_perm 9000, bands "
            f"450, rows 20, but --bands 400 is also given: drop --bands, or take the preset out of {tuned} and give "
            f"--num-perm 9000 --bands 400 --rows 20")):
        load_dedup_config(tuned, {"minhash.bands": 400})
    # h184: the file's own rows clash too, so dropping --bands would not do; a value that is no
    # number, or a preset that is no name, is the model's one line (they were TypeErrors)
    tuned.write_text("minhash:\n  preset: refinedweb\n  rows: 8\n")
    with pytest.raises(DedupConfigError, match=re.escape(
            f"but --bands 400, rows: 8 ({tuned}) are also given: take the preset out of {tuned} and give "
            f"--num-perm 9000 --bands 400 --rows 8")):
        load_dedup_config(tuned, {"minhash.bands": 400})
    for section, said in (("preset: refinedweb\n  bands: abc", "minhash.bands: must be a whole number, got 'abc'"),
                          ("preset: refinedweb\n  bands: null", "minhash.bands: must be a whole number, got nothing"),
                          ("preset: [refinedweb]", "minhash.preset: must be 'default' or 'refinedweb', got a list")):
        tuned.write_text(f"minhash:\n  {section}\n")
        with pytest.raises(DedupConfigError, match=re.escape(said)):
            load_dedup_config(tuned, {"minhash.rows": 8})
    tuned.write_text("minhash:\n  preset: refinedweb\n  bands: 400\n")
    with pytest.raises(DedupConfigError, match=re.escape(
            "minhash: preset refinedweb is num_perm 9000, bands 450, rows 20, but bands 400 is also given: write the "
            "preset alone, or num_perm: 9000, bands: 400, rows: 20 without it")):
        load_dedup_config(tuned)
    # a dump (run.json's) writes the preset and its values, which agree: it loads, as a recipe's entry too
    cfg = DedupConfig(minhash={"preset": "refinedweb"})
    assert DedupConfig.model_validate(cfg.model_dump()).model_dump() == cfg.model_dump()
    recipe = _base() | {"dedup": [{"method": "minhash", "minhash": {"preset": "refinedweb"}}]}
    dumped = parse_config(recipe).model_dump(mode="json")
    assert parse_config(dumped).dedup[0].minhash.bands == 450


def test_refinedweb_config_holds_paper_parameters():
    cfg = load_config(ROOT / "configs" / "refinedweb.yaml")
    stages = {s.kind: s for s in cfg.build_stages()}
    lid = stages["language_id"]
    assert lid.languages == ["en"] and lid.min_score == pytest.approx(0.65)
    assert stages["url_filter"].soft_word_threshold == 2
    assert stages["line_corrections"].max_removed_word_frac == pytest.approx(0.05)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(colour="blue"), r"colour: unknown key"),
        (lambda c: c["reader"].update(batch_size=0), r"reader\.batch_size: must be > 0, got 0$"),
        # the test-only fault injection works but is not offered among the known types
        (lambda c: c["stages"][0].update(type="no_such_stage"),
         r"unknown stage type 'no_such_stage'; known: (?!.*fault_injection).*url_filter"),
        (lambda c: _stage(c, "language_id")["params"].update(min_scor=0.5), r"stages\[\d+\] language_id\.min_scor: unknown parameter \(did you mean 'min_score'\?\); language_id takes: "),
        (lambda c: c["stages"].append(dict(c["stages"][0])), r"stage names must be unique"),
        (lambda c: c["executor"].update(type="spark"), r"executor.type"),
        (lambda c: c.update(stages=[]), r"stages"),
        # a mapping or one value where a list belongs said "Input should be a valid list": now what to write
        (lambda c: c.update(dedup={"method": "minhash"}),
         r"^invalid config test\.yaml: dedup: must be a list of dedup passes, not a mapping: e\.g\. "
         r"dedup: \[\{method: minhash\}\]$"),
        (lambda c: c["reader"].update(cc_subsets="warc"),
         r"reader\.cc_subsets: must be a list, not one value \('warc'\): e\.g\. cc_subsets: \[warc\]$"),
        (lambda c: c.update(dedup=[{"method": "fuzzy"}]),
         r"dedup\[0\]\.method: must be 'minhash', 'exact', 'url', 'substring', 'decontaminate' or 'lines', "
         r"got 'fuzzy'$"),
    ],
)
def test_bad_configs_name_the_problem(mutate, message):
    data = _base()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        parse_config(data, source="test.yaml")


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [\n  - type: extract\n  params: {")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_cli_reports_config_errors_before_any_work(tmp_path, cli):
    data = _base()
    _stage(data, "extract")["params"]["timeout_s"] = "soon"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    # in this process through the real entry point (``cli``): a subprocess cost ~1 s of imports
    code, _, err = cli("run", cfg, "--input", ROOT / "data/sample/warc", "--output", out)
    assert code == 2, err
    assert "extract" in err and "timeout_s" in err
    assert not out.exists()  # nothing was written


def test_unreachable_input_is_a_config_error(tmp_path, cli):
    code, _, err = cli("run", ROOT / "configs/refinedweb.yaml", "--input", tmp_path / "nowhere", "--output", tmp_path / "out")
    assert code == 2
    assert "input not found" in err and "nowhere" in err


def test_stats_options_reach_the_runner(tmp_path):
    from refinery.runner import runner_for

    data = _base()
    data["stats"] = {"samples_per_reason": 3, "top_domains": 0}
    runner = runner_for(parse_config(data).model_dump(mode="json"))
    assert runner.stats_options.samples_per_reason == 3 and runner.stats_options.top_domains == 0
    data["stats"] = {"samples_per_reason": -1}
    with pytest.raises(ConfigError, match="stats.samples_per_reason"):
        parse_config(data)


def test_unwritable_output_is_a_config_error(tmp_path, cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, _, err = cli("run", ROOT / "configs/refinedweb.yaml", "--input", ROOT / "data/sample/warc",
                       "--output", blocker / "out")
    assert code == 2, err
    assert "not writable" in err and "a-file" in err
    # why, in plain words: pyarrow's "[Errno 20] Cannot create directory ... Detail: [errno 20] ..." was appended (h154)
    assert err.strip().endswith(f"error: output {blocker / 'out'} is not writable: a part of the path is a file, "
                                        "not a directory"), err


# -- issue 18 item 13: semantics, not only types ----------------------------------------------
@pytest.mark.parametrize("stage, params, message", [
    ("gopher_quality", {"min_words": 500, "max_words": 100}, r"min_words \(500\) must not exceed max_words \(100\)"),
    ("gopher_quality", {"max_words": -5}, r"gopher_quality\.max_words: must be >= 1, got -5"),
    ("gopher_quality", {"min_alpha_words_frac": 1.5}, r"min_alpha_words_frac: must be within \[0, 1\]"),
    ("gopher_quality", {"min_mean_word_length": 12, "max_mean_word_length": 10}, r"min_mean_word_length \(12.0\) must not exceed"),
    ("gopher_repetition", {"dup_line_frac": -0.1}, r"dup_line_frac: must be within \[0, 1\]"),
    ("gopher_repetition", {"dup_n_grams": {5: 2.0}}, r"dup_n_grams\[5\] must be within \[0, 1\]"),
    ("line_corrections", {"max_removed_word_frac": -1}, r"max_removed_word_frac: must be within \[0, 1\]"),
    ("extract", {"timeout_s": -1}, r"extract\.timeout_s: must be >= 0"),
    ("gopher_quality", {"min_words": True}, r"gopher_quality\.min_words: must be a number, got the boolean true"),
    ("language_id", {"max_chars": False}, r"language_id\.max_chars: must be a number, got the boolean false"),
    ("gopher_quality", {"stop_words": ["the", "and"], "min_stop_words": 3},
     r"min_stop_words 3 is more than the 2 distinct stop_words given"),
])
def test_out_of_range_contradictory_and_boolean_params_are_refused(stage, params, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"stages": [{"type": stage, "params": params}]}, source="t.yaml")


def test_boolean_for_a_number_in_top_level_sections():
    with pytest.raises(ConfigError, match=r"reader.batch_size: .*boolean"):
        parse_config({"stages": [{"type": "gopher_quality"}], "reader": {"batch_size": True}})
    assert parse_config({"stages": [{"type": "gopher_quality"}], "stats": {"histograms": False}}).stats.histograms is False


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("stages:\n  - type: gopher_quality\n    params:\n      min_words: 50\n      min_words: 500\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: duplicate key 'min_words' at line 5, column 7 \(first at line 4\)"):
        load_config(path)
    path.write_text("name: a\nstages:\n  - type: gopher_quality\nname: b\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'name' at line 4"):
        load_config(path)
    path.write_text("base: &b {min_words: 5}\nstages:\n  - type: gopher_quality\n    params:\n      <<: *b\n      min_words: 7\n")
    with pytest.raises(ConfigError, match="unknown key"):  # merge keys still work (and 'base' is not a key)
        load_config(path)


def test_every_missing_model_is_listed_at_once(tmp_path):
    with pytest.raises(ConfigError) as info:
        parse_config({"stages": [
            {"type": "language_id", "params": {"model_path": str(tmp_path / "lid.bin")}},
            {"type": "toxicity", "params": {"model_path": str(tmp_path / "tox.ftz")}},
            {"type": "quality", "params": {"model_path": str(tmp_path / "qual.ftz")}},
        ]})
    message = str(info.value)
    assert "\n" not in message and message.startswith("3 stages are misconfigured")
    for name in ("lid.bin", "tox.ftz", "qual.ftz", "train-classifier toxicity", "train-classifier quality"):
        assert name in message


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        parse_config({"stages": [{"type": "gopher_quality"}], "colour": 1, "reader": {"batch_size": 0}}, source="t.yaml")
    assert "\n" not in str(info.value) and "colour: unknown key" in str(info.value) and "reader.batch_size" in str(info.value)


def test_a_language_id_stage_keeping_what_the_prescreen_removes_is_refused():
    """Found by adversarial testing: prescreen [en] (as in refinedweb.yaml) before language_id
    [ja] removed every Japanese page first, and the run kept nothing without a word."""
    stages = [{"type": "prescreen"}, {"type": "extract"}, {"type": "language_id", "params": {"languages": ["ja", "en"]}}]
    with pytest.raises(ConfigError, match=r"stages\[2\] language_id: keeps \['ja'\], but the prescreen before it \(stages\[0\]\) removes"):
        parse_config({"stages": stages}, source="t.yaml")
    stages[0]["params"] = {"languages": ["en", "ja"]}
    assert parse_config({"stages": stages}, source="t.yaml")
    # [] means every language: a prescreen passing all lets any language_id follow; a language_id
    # keeping all after a prescreen of some is the silent loss again
    stages[0]["params"] = {"languages": []}
    assert parse_config({"stages": stages}, source="t.yaml")
    stages[0]["params"], stages[2]["params"] = {"languages": ["en"]}, {"languages": []}
    with pytest.raises(ConfigError, match=r"keeps every language \(languages: \[\]\), but the prescreen"):
        parse_config({"stages": stages}, source="t.yaml")
    # a stage named like a pass made two funnel rows with one key
    with pytest.raises(ConfigError, match="stage name 'minhash_dedup' is also a pass's name"):
        parse_config({"stages": [{"type": "gopher_quality", "name": "minhash_dedup"}], "dedup": [{"method": "minhash"}]})
    # or like an input reader: the run failed with a ConservationError, and no view could read it
    with pytest.raises(ConfigError, match="stage name 'jsonl_reader' is the name of an input reader"):
        parse_config({"stages": [{"type": "gopher_quality", "name": "jsonl_reader"}]})


def test_gopher_quality_after_language_id_keeping_a_language_without_spaces_is_refused():
    """Found by adversarial testing: with languages [zh], gopher_quality removed every page
    (a Chinese paragraph is one 40-character "word")."""
    stages = [{"type": "language_id", "params": {"languages": ["en", "zh"]}}, {"type": "gopher_quality"}]
    with pytest.raises(ConfigError, match=r"keeps \['zh'\], and \['zh'\] are written without spaces"):
        parse_config({"stages": stages})
    # languages: [] keeps every language (it was read as [en]: a mixed corpus lost 99.7% of its
    # pages to these rules, adversarial testing)
    every = [{"type": "language_id", "params": {"languages": []}}, {"type": "gopher_quality"}]
    with pytest.raises(ConfigError, match=r"keeps every language, and \[.*'ja'.*'zh'\] are written without spaces"):
        parse_config({"stages": every})
    every[1]["params"] = {"max_mean_word_length": 1000, "min_stop_words": 0}
    assert parse_config({"stages": every})
    stages[1]["params"] = {"max_mean_word_length": 1000, "min_stop_words": 0}
    assert parse_config({"stages": stages})


def test_gopher_quality_with_english_stop_words_after_language_id_keeping_other_languages_is_refused():
    """Found by adversarial testing (session 30): the default stop words are English, and 99 of
    100 real 8-sentence German texts (French 100 of 100) have fewer than 2 of them: a German corpus
    was removed whole as `stop_words` while the run looked healthy."""
    stages = [{"type": "language_id", "params": {"languages": ["en", "de"]}}, {"type": "gopher_quality"}]
    with pytest.raises(ConfigError, match=r"requires English stop words .* keeps \['de'\]: nearly every page"):
        parse_config({"stages": stages})
    stages[1]["params"] = {"stop_words": ["the", "and", "of", "to", "der", "die", "das", "und"]}
    assert parse_config({"stages": stages})
    stages[1]["params"] = {"min_stop_words": 0}
    assert parse_config({"stages": stages})
    assert parse_config({"stages": [{"type": "language_id", "params": {"languages": ["en"]}}, {"type": "gopher_quality"}]})
    # a review: LID-176 named by its path is still LID-176; a quoted number is a number; a string
    # is refused by the stage itself, first (it was read as one language and refused for the stop
    # words); another model's spaceless labels (GlotLID's zho_Hans) are recognised
    from refinery.stages.language_id import lid_model_path

    with pytest.raises(ConfigError, match=r"requires English stop words .* keeps \['de'\]"):
        parse_config({"stages": [{"type": "language_id", "params": {"languages": ["de"], "model_path": str(lid_model_path())}},
                                 {"type": "gopher_quality"}]})
    with pytest.raises(ConfigError, match=r"stages\[0\] language_id\.languages: must be a list, not one "
                                          r"value \('de'\): e\.g\. languages: \[de\]$"):
        parse_config({"stages": [{"type": "language_id", "params": {"languages": "de"}}, {"type": "gopher_quality"}]})
    assert parse_config({"stages": [{"type": "language_id", "params": {"languages": ["de"]}},
                                    {"type": "gopher_quality", "params": {"min_stop_words": "0"}}]})
    from refinery.config import _written_without_spaces

    assert _written_without_spaces("zho_Hans") and _written_without_spaces("jpn_Jpan") and _written_without_spaces("th")
    assert not _written_without_spaces("eng_Latn") and not _written_without_spaces("de")


def test_a_pass_name_must_be_a_plain_folder_name_of_its_own():
    """A dedup pass named ".." wrote into OUT's parent and --force then deleted that directory;
    "kept" put a pass's files inside the corpus (found by adversarial testing)."""
    for name in ("..", "kept", "a/b", ".hidden", "tokens"):
        with pytest.raises(ConfigError, match=f"pass name '{re.escape(name)}' must be"):
            parse_config({"stages": [{"type": "gopher_quality"}], "dedup": [{"method": "url", "name": name}]})
    assert parse_config({"stages": [{"type": "gopher_quality"}], "dedup": [{"method": "url", "name": "url-2024"}]})


@pytest.mark.parametrize("stage", ["prescreen", "language_id"])
@pytest.mark.parametrize("given", ["en", 5, True, [["en"]], [None], {"en": 1}])
def test_languages_that_are_no_list_of_codes_are_named_by_the_stage(stage, given):
    """Found by testing the CLI as a new user: the prescreen / language_id cross-check ran on the
    raw params before the stage's own validation, so ``languages: 5`` stopped on "unexpected
    TypeError: 'int' object is not iterable" and ``languages: en`` was told that language_id keeps
    ['e', 'n']. The error is now the stage's own, naming the param."""
    stages = [{"type": "prescreen"}, {"type": "extract"}, {"type": "language_id"}, {"type": "gopher_quality"}]
    stages[0 if stage == "prescreen" else 2]["params"] = {"languages": given}
    with pytest.raises(ConfigError, match=rf"stages\[\d\] {stage}\.languages(\[0\])?: ") as info:
        parse_config({"stages": stages})
    assert "['e', 'n']" not in str(info.value)


def test_a_language_id_with_another_models_labels_is_not_compared_with_an_lid176_prescreen(tmp_path):
    """Found by adversarial testing: ``prescreen: [en]`` (LID-176) then a language_id with its own
    model keeping ``eng_Latn`` (GlotLID's English) was refused as if the prescreen removed those
    pages: the two models' labels do not compare. Labels of one kind still do."""
    glot = {"languages": ["eng_Latn"], "model_path": str(tmp_path / "glotlid.bin")}
    (tmp_path / "glotlid.bin").write_bytes(b"")  # loaded only when the run starts
    assert parse_config({"stages": [{"type": "prescreen"}, {"type": "language_id", "params": glot}]})
    with pytest.raises(ConfigError, match=r"keeps \['deu_Latn'\], but the prescreen"):
        parse_config({"stages": [{"type": "prescreen", "params": glot},
                                 {"type": "language_id", "params": {**glot, "languages": ["deu_Latn"]}}]})


_GOPHER_AT_1 = "name: t\nstages:\n  - type: url_filter\n  - type: gopher_quality\n    params: {min_words: %s}\n"


@pytest.mark.parametrize("text, expected", [
    # out of range, in a stage's params: the file, the stage's index and type, the key, the rule, the value
    (_GOPHER_AT_1 % "-3", "{cfg}: stages[1] gopher_quality.min_words: must be >= 0, got -3"),
    (_GOPHER_AT_1 % "lots", "{cfg}: stages[1] gopher_quality.min_words: must be a whole number, got 'lots'"),
    (_GOPHER_AT_1 % "3}\n    name: strict\n  - {type: extract, params: {backend: lxml}", "{cfg}: stages[2] extract.backend: "
     "must be 'trafilatura', 'resiliparse' or 'learned', got 'lxml'"),
    ("stages:\n  - type: gopher_quality\n    params: {min_word: 3}\n",
     "{cfg}: stages[0] gopher_quality.min_word: unknown parameter (did you mean 'min_words'?); gopher_quality takes: "),
    # out of range and of type, outside the stages; an enum lists what it takes
    ("reader: {batch_size: 0}\nstages: [{type: gopher_quality}]\n", "{cfg}: reader.batch_size: must be > 0, got 0"),
    ("reader: {batch_size: many}\nstages: [{type: gopher_quality}]\n", "{cfg}: reader.batch_size: must be a whole number, got 'many'"),
    ("executor: {type: spark}\nstages: [{type: gopher_quality}]\n", "{cfg}: executor.type: must be 'local' or 'ray', got 'spark'"),
    ("stages: [{type: gopher_quality}]\ndedup: [{method: url}, {method: minhash, minhash: {bands: -1}}]\n",
     "{cfg}: dedup[1].minhash.bands: must be > 0, got -1"),
    ("stages: [{type: gopher_quality}]\ntokenize: {bos: maybe}\n", "{cfg}: tokenize.bos: must be true or false or 'auto', got 'maybe'"),
    # unknown keys, near a key that has its default (not only a missing one); missing keys
    ("exectuor: {type: local}\nstages: [{type: gopher_quality}]\n", "{cfg}: exectuor: unknown key (did you mean 'executor'?)"),
    ("reader: {batch_sise: 5}\nstages: [{type: gopher_quality}]\n", "{cfg}: reader.batch_sise: unknown key (did you mean 'batch_size'?)"),
    ("name: t\n", "{cfg}: stages: is required"),
    ("stages: [{params: {}}]\n", "{cfg}: stages[0].type: is required"),
    # a list where a mapping is wanted, and the other way round
    ("reader: [1, 2]\nstages: [{type: gopher_quality}]\n", "{cfg}: reader: must be a mapping (key: value), got a list"),
    ("stages: [{type: gopher_quality, params: [min_words, 3]}]\n", "{cfg}: stages[0].params: must be a mapping (key: value), got a list"),
    # YAML syntax: the line and column first, in plain words
    ("stages:\n  - type: extract\n    params: {backend: [trafilatura\n", "{cfg}: not valid YAML: line 4, column 1: expected ',' or "
     "']', but got '<stream end>' (parsing a flow sequence from line 3, column 23)"),
    ("stages:\n\t- type: extract\n", "{cfg}: not valid YAML: line 2, column 1: found character '\\t' that cannot start any "
     "token; indent with spaces, not tabs"),
    # h162, from outside: what YAML made of what was written (Norwegian's `no` is false, 1e5 is text,
    # `on:` a boolean key that pydantic placed as `params[1].[key]`), a boolean as YAML spells it, a
    # long value cut, and a key written one section off named with its section (never a near key of
    # another section)
    ("stages:\n  - type: language_id\n    params: {languages: [en, no]}\n", "{cfg}: stages[0] language_id.languages[1]: "
     "must be text, got false (YAML reads yes, no, on, off, true and false unquoted as a boolean: quote it"),
    (_GOPHER_AT_1 % "1e5", "{cfg}: stages[1] gopher_quality.min_words: must be a whole number, got '1e5' (YAML reads 1e5 "
     "as text: write it out, e.g. 100000)"),
    (_GOPHER_AT_1 % "true", "{cfg}: stages[1] gopher_quality.min_words: must be a number, got the boolean true"),
    ("stages: [{type: gopher_quality, params: {on: 3}}]\n", "{cfg}: stages[0].params: key true: keys must be text (YAML "
     "reads yes, no, on, off unquoted as a boolean: quote the key)"),
    ("executor: {1: 2}\nstages: [{type: gopher_quality}]\n", "{cfg}: executor: key 1: keys must be text"),
    ("executor: {type: %s}\nstages: [{type: gopher_quality}]\n" % ("x" * 300), "{cfg}: executor.type: must be 'local' or "
     "'ray', got '%s...' (300 characters)" % ("x" * 75)),
    ("batch_size: 5\nstages: [{type: gopher_quality}]\n", "{cfg}: batch_size: unknown key (a key of reader or tokenize)"),
    ("stages: [{type: gopher_quality}]\ndedup: [{method: lines, min_docs: 3}]\n",
     "{cfg}: dedup[0].min_docs: unknown key (a key of dedup[0].lines)"),
    ("stages: [{type: gopher_quality}]\ndedup: [{method: minhash, minhash: {min_docs: 3}}]\n",
     "{cfg}: dedup[0].minhash.min_docs: unknown key (a key of dedup[0].lines)"),
    # h164: a method's section under another method did nothing, silently (only the sections written
    # are refused: every entry carries all four as defaults; url and exact read minhash.seed)
    ("stages: [{type: gopher_quality}]\ndedup: [{method: url}, {method: minhash, lines: {min_docs: 5}}]\n",
     "{cfg}: dedup[1].lines: only read by method: lines; this entry's method is minhash, got min_docs"),
    ("stages: [{type: gopher_quality}]\ndedup: [{method: url, minhash: {seed: 3, bands: 2}}]\n",
     "{cfg}: dedup[0].minhash: only read by method: minhash (and its seed by method: exact or url); this entry's "
     "method is url, got bands"),
    # h164: the checks across stages name the stage's place, as every other problem does
    ("stages: [{type: language_id, params: {languages: [en, de]}}, {type: gopher_quality, name: strict}]\n",
     "{cfg}: stages[1] 'strict' gopher_quality: requires English stop words"),
    ("stages: [{type: prescreen}, {type: extract}, {type: language_id, params: {languages: [ja, en]}}]\n",
     "{cfg}: stages[2] language_id: keeps ['ja'], but the prescreen before it (stages[0]) removes those pages"),
    ("stages: [{type: gopher_quality}, {type: url_filter}, {type: gopher_quality}]\n",
     "{cfg}: stages[2] gopher_quality: stage names must be unique; repeated: ['gopher_quality']"),
    # h170: a section written under another method to matter, at its defaults or empty, is refused
    # too (only a section written whole, as a dump or the template has it, is left); pass names' place
    ("stages: [{type: gopher_quality}]\ndedup: [{method: lines, minhash: {bands: 14}}]\n",
     "{cfg}: dedup[0].minhash: only read by method: minhash (and its seed by method: exact or url); this entry's "
     "method is lines, got bands at its default: leave the minhash section out"),
    ("stages: [{type: gopher_quality}]\ndedup: [{method: minhash, substring: {}}]\n",
     "{cfg}: dedup[0].substring: only read by method: substring; this entry's method is minhash, got an empty "
     "section: leave the substring section out"),
    ("stages: [{type: gopher_quality}]\ndedup: [{method: url}, {method: lines, name: x}, {method: url, name: x}]\n",
     "{cfg}: dedup[2].name: pass names must be unique; repeated: ['x']"),
    ("stages: [{type: gopher_quality}]\ndedup: [{method: url}, {method: url}]\n",
     "{cfg}: dedup[1] (method: url): pass names must be unique; repeated: ['url_dedup']"),
], ids=["range-param", "type-param", "enum-param-named", "unknown-param", "range", "type", "enum", "range-dedup", "union",
        "unknown-key-default", "unknown-nested", "missing", "missing-type", "list-for-mapping", "list-for-params",
        "yaml-syntax", "yaml-tab", "yaml-no-is-false", "yaml-1e5-is-text", "boolean-as-yaml", "boolean-key", "int-key",
        "long-value", "key-of-a-section", "key-of-the-method", "key-of-another-method", "section-of-another-method",
        "minhash-beside-url-seed", "cross-stage-stop-words", "cross-stage-prescreen", "cross-stage-unique-names",
        "section-of-another-method-at-defaults", "empty-section-of-another-method", "pass-names-named",
        "pass-names-by-method"])
def test_config_errors_are_in_the_projects_words(tmp_path, text, expected):
    """Session 46 (h154): every config mistake is ``invalid config FILE: where: rule, got value``,
    never pydantic's words ("Input should be greater than 0", "Field required") or PyYAML's
    ("in "<unicode string>", line 4"): the file, the place as the YAML spells it, the rule, the value."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    message = str(info.value)
    assert message.startswith("invalid config " + expected.format(cfg=cfg)) and "\n" not in message, message
    assert not re.search(r"Input should|Field required|unicode string|Value error", message), message


def test_a_wrong_param_override_is_named_as_given():
    """``eval-extract -p backend=lxml`` said ``stage 'extract' (extract): backend: Input should be
    ...``: the option as the user gave it now, in the project's words (session 46, h154)."""
    from refinery.eval_extract import extract_stage_from_config

    for override, expected in [({"backend": "lxml"}, "--param backend: must be 'trafilatura', 'resiliparse' or 'learned', "
                                                     "got 'lxml'"),
                               ({"favour_precision": True}, "--param favour_precision: unknown parameter (did you mean "
                                                            "'favor_precision'?); extract takes: ")]:
        with pytest.raises(ConfigError) as info:
            extract_stage_from_config(ROOT / "configs" / "refinedweb.yaml", override)
        assert str(info.value).startswith(expected), info.value
