"""The quality recipe's documentation positives (refinery/classifiers/docs_text.py): cleaning real
package text (the installed wheels' METADATA, the bundled file), the licence filter, and the
recipe's ``docs_positives`` option on the tiny real quality data (no full training)."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest

from refinery.classifiers import docs_text, quality
from tests._classifiers_fixtures import TINY_QUALITY_PARAMS, needs_data

pytest_plugins = ["tests._classifiers_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "data" / "quality" / "docs_positives.jsonl.gz"
SITE = Path(sysconfig.get_paths()["purelib"])
#: never left in the text (code lines may hold links or HTML: they are kept as written)
MARKUP = ("[![", ".. image::", ":target:", "```")


def _installed(name: str) -> Path:
    found = sorted(SITE.glob(f"{name}-*.dist-info"))
    if not found:
        pytest.skip(f"{name} is not installed in {SITE}")
    return found[0]


def test_readme_of_an_installed_wheel_cleaned(tmp_path: Path) -> None:
    """trafilatura's README (markdown: badges, HTML, links, fenced code, a licence section):
    its prose and code survive, its markup and licence text do not."""
    dist = _installed("trafilatura")
    (tmp_path / dist.name).mkdir()
    shutil.copy(dist / "METADATA", tmp_path / dist.name / "METADATA")
    docs = list(docs_text.metadata_docs(tmp_path))
    assert len(docs) == 1 and docs[0].licence == "Apache-2.0" and docs[0].package == "trafilatura"
    raw = (dist / "METADATA").read_text(encoding="utf-8")
    text = docs[0].text
    assert "[![" in raw and "](http" in raw  # the raw README has badges and links
    assert not any(mark in text for mark in MARKUP)
    assert "Python package and command-line tool" in text  # the opening prose
    assert "## License" in raw and "distributed under the Apache" not in text  # the licence section goes
    assert len(text) < len(raw) / 2


def test_licence_filter_on_installed_metadata() -> None:
    """MPL-licensed wheels (certifi; tqdm's MPL-2.0 AND MIT) are left out; MIT and Apache ones are kept."""
    assert not docs_text.permissive("MPL-2.0 AND MIT") and not docs_text.permissive("Apache-2.0 OR GPL-2.0-only")
    assert docs_text.permissive("Apache-2.0 AND MIT") and not docs_text.permissive("")
    for name in ("certifi", "tqdm", "requests", "click"):
        _installed(name)
    keys = {d.key for d in docs_text.metadata_docs(SITE)}
    assert "pypi:certifi" not in keys and "pypi:tqdm" not in keys
    assert {"pypi:requests", "pypi:click"} <= keys


def test_pydoc_topics_keep_code_as_lines() -> None:
    docs = {d.key: d for d in docs_text.pydoc_docs()}
    assert docs and all(d.licence == "PSF-2.0" for d in docs.values())
    lines = docs["pydoc:for"].text.split("\n")
    assert lines[0] == "The \"for\" statement"
    assert any(line.startswith("for_stmt ::=") for line in lines)  # the grammar is its own line, not prose
    assert any(len(line) > 200 for line in lines)  # wrapped prose re-joined into paragraphs


def test_bundled_file_is_clean_and_licensed() -> None:
    docs = docs_text.load(BUNDLED)
    assert len(docs) > 150 and len({d.key for d in docs}) == len(docs)
    assert all(d.package and d.version and docs_text.permissive(d.licence) for d in docs)
    for d in docs:
        assert not any(mark in d.text for mark in MARKUP), d.key
    assert BUNDLED.stat().st_size < 1_000_000


def test_regeneration_is_deterministic(tmp_path: Path) -> None:
    docs = docs_text.collect([SITE])[:20]
    docs_text.write(docs, tmp_path / "a.jsonl.gz")
    docs_text.write(docs, tmp_path / "b.jsonl.gz")
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    assert docs_text.load(tmp_path / "a.jsonl.gz") == docs


@needs_data
def test_recipe_option_adds_docs_positives(tiny_quality_data: Path, tmp_path: Path) -> None:
    """``docs_positives``: more ``wiki`` training examples (at most MAX_DOC_CHUNKS per document),
    a ``docs_test`` split of held-out packages, the wiki-vs-web splits unchanged."""
    plain = quality.build_data(tiny_quality_data)
    with_docs = quality.build_data(tiny_quality_data, docs_positives=BUNDLED)
    docs = docs_text.load(BUNDLED)
    train_docs = [d for d in docs if quality._split(f"docs:{d.key}") == "train"]
    expected = sum(min(len(quality.paragraph_chunks(d.text)), quality.MAX_DOC_CHUNKS) for d in train_docs)
    added = [ex for ex in with_docs.train if ex not in plain.train]
    assert len(with_docs.train) - len(plain.train) == expected and {label for label, _ in added} == {quality.POSITIVE}
    for name in ("test", "validation"):
        assert with_docs.evals[name].texts == plain.evals[name].texts
    docs_test = with_docs.evals["docs_test"]
    n_test = sum(quality._split(f"docs:{d.key}") == "test" for d in docs)
    assert int(docs_test.labels.sum()) == n_test > 0 and int((~docs_test.labels).sum()) == int((~plain.evals["test"].labels).sum())
    assert BUNDLED in with_docs.sources and with_docs.notes["docs_documents"] == len(docs)

    report = quality.train(tiny_quality_data, tmp_path, TINY_QUALITY_PARAMS, quantize=False, docs_positives=BUNDLED)
    assert report["metrics"]["docs_test"]["positives"] == n_test
    assert any(s["path"].endswith("docs_positives.jsonl.gz") for s in report["data"]["sources"])


def test_the_readme_lists_every_bundled_package_and_licence() -> None:
    """data/quality/README.md's table and counts describe the bundled file (they said 143 READMEs
    and 75 topics for a file of 149 and 69)."""
    import re

    docs = docs_text.load(BUNDLED)
    readme = (BUNDLED.parent / "README.md").read_text(encoding="utf-8")
    rows = {tuple(c.strip() for c in m.groups()) for m in re.finditer(r"^\| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", readme, re.M)}
    pypi = [d for d in docs if d.key.startswith("pypi:")]
    pydoc = [d for d in docs if d.key.startswith("pydoc:")]
    assert {(d.package, d.version, d.licence) for d in pypi} <= rows
    assert len({r for r in rows if r[0] not in ("package", "---") and not r[0].startswith("python-docs")}) == len(pypi)
    assert f"| python-docs ({len(pydoc)} topics) | {pydoc[0].version} | PSF-2.0 |" in readme
    assert f"{len(pypi)} package READMEs" in readme and f"{len(pydoc)} topics of Python" in readme
