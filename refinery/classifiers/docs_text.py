"""Documentation-register positives for the quality recipe: technical prose with its code, taken
from text that installed packages carry (the long descriptions, i.e. READMEs, in wheels'
``*.dist-info/METADATA``, and Python's own documentation in ``pydoc_data/topics.py``).

Why: the quality model's only positives are Wikipedia leads, so it scores the second-person,
first-person register of how-tos low and removes programming tutorials (docs/classifiers.md).

Only permissively licensed sources are kept; each record names its package, version and licence.
Markup goes (markdown/reST inline marks, badges, images, HTML, tables, link targets, directives);
sections that are changelogs, licence texts, tables of contents, credits or sponsor lists go
whole; prose paragraphs are re-joined into one line each; code blocks stay as their lines.

Regenerate the bundled file (reads only what is installed; deterministic bytes)::

    python -m refinery.classifiers.docs_text --out data/quality/docs_positives.jsonl.gz
"""

from __future__ import annotations

import argparse
import email.parser
import gzip
import io
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

#: SPDX ids (and the usual free-text spellings) whose terms allow redistributing the text
PERMISSIVE = {
    "mit", "mit-0", "bsd", "bsd-2-clause", "bsd-3-clause", "0bsd", "isc", "apache-2.0", "apache", "psf-2.0",
    "python-2.0", "unlicense", "zlib", "cnri-python", "pddl-1.0",
}
_CLASSIFIER_LICENCE = {
    "MIT License": "MIT", "BSD License": "BSD", "Apache Software License": "Apache-2.0",
    "ISC License (ISCL)": "ISC", "Python Software Foundation License": "PSF-2.0", "The Unlicense (Unlicense)": "Unlicense",
    "MIT No Attribution License (MIT-0)": "MIT-0", "zlib/libpng License": "Zlib",
}
#: section headings whose whole section is not documentation prose
_DROP_SECTION = re.compile(
    r"change ?log|changes|history|release notes|what'?s new|news\b|licen[cs]e|copyright|contents\b|"
    r"contributors|authors|maintainers|credits|sponsor|backers|acknowledg|citation|cite\b|badges|"
    r"code of conduct|security polic|support us|funding|what'?s changed|^v?\d+(\.\d+)+\b|^\d{4}-\d\d-\d\d", re.I)
#: headings after which the rest of a README is a changelog (its subsections have ordinary titles)
_CHANGELOG = re.compile(r"change ?log|changes|history|release notes|what'?s (new|changed)|^v?\d+(\.\d+)+\b", re.I)
_MIN_WORDS = 60  # a document with fewer prose words is a stub (a one-line description)


@dataclass(frozen=True)
class DocText:
    key: str  # split key: the package (all its text lands in one split)
    package: str
    version: str
    licence: str
    source: str  # file inside the package the text comes from
    text: str


# ---------------------------------------------------------------- licences


def spdx_ids(expression: str) -> list[str]:
    """The licence ids of an SPDX expression, lowercased (operators and brackets dropped)."""
    tokens = re.split(r"[\s()]+", expression.strip())
    return [t.lower() for t in tokens if t and t.upper() not in ("AND", "OR", "WITH")]


def permissive(expression: str) -> bool:
    """True when every licence the expression names is permissive (``A OR GPL`` counts as not:
    conservative, and rare)."""
    ids = spdx_ids(expression)
    return bool(ids) and all(i in PERMISSIVE for i in ids)


def metadata_licence(msg: email.message.Message) -> str:
    """The package's licence as an SPDX-like string: ``License-Expression``, else the trove
    classifiers, else a short ``License`` field; "" when unknown (such packages are skipped)."""
    if msg.get("License-Expression"):
        return str(msg["License-Expression"]).strip()
    found = []
    for c in msg.get_all("Classifier") or []:
        if c.startswith("License :: OSI Approved :: "):
            name = c.split(" :: ", 2)[2].strip()
            found.append(_CLASSIFIER_LICENCE.get(name, name))
    if found:
        return " AND ".join(sorted(set(found)))
    short = str(msg.get("License") or "").strip()
    if short and "\n" not in short and len(short) < 40:
        return re.sub(r"\s*(license|licence)\s*", "", short, flags=re.I).replace("Apache 2.0", "Apache-2.0") or short
    return ""


# ---------------------------------------------------------------- markup


_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING_MD = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_UNDERLINE = re.compile(r"^\s*([=\-~^*+#\"'`:.])\1{2,}\s*$")
_DROP_LINE = re.compile(
    r"^\s*(\[!\[|!\[|<img|<a |<p\b|</|<div|<br|<picture|<source|<h\d|<!--|-->|\.\. \|[^|]+\|\s*image::|"
    r"\.\. (image|figure|raw|toctree|contents|include|only|meta|_[^:]*:|\[\w*\])|:(target|alt|width|height|align|"
    r"scale|maxdepth|caption|linenos|emphasize-lines|class|name|widths|header-rows|\w+):( |$)|\[[^\]]+\]:\s*\S+|\+[-=+]+\+\s*$|={3,}( +={3,})+\s*$)",
    re.I)
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_DIRECTIVE = re.compile(r"^\s*\.\. [\w:-]+::")
_CODE_DIRECTIVE = re.compile(r"^\s*\.\. (code|code-block|sourcecode|highlight|doctest|testcode)::", re.I)
_BULLET = re.compile(r"^\s*([-*+•]|\d+[.)]|#\.)\s+")
_INLINE = [
    (re.compile(r"!\[[^\]]*\]\([^)]*\)"), ""),  # images
    (re.compile(r"\[([^\]]*)\]\([^)]*\)"), r"\1"),  # [text](url), [](url) (a badge whose image went)
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),  # [text][ref]
    (re.compile(r"`([^`<]+?)\s*<[^>]+>`__?"), r"\1"),  # `text <url>`_
    (re.compile(r":[\w:.-]+:`~?([^`]+)`"), r"\1"),  # :role:`x`
    (re.compile(r"<[^>\n]+>"), ""),  # inline HTML tags
    (re.compile(r"\|[\w -]+\|_?"), ""),  # reST substitutions (badges)
    (re.compile(r"``\s*``"), ""),  # a literal that held only an HTML tag
    (re.compile(r"``([^`]+)``"), r"\1"),
    (re.compile(r"`([^`]+)`_{0,2}"), r"\1"),
    (re.compile(r"(\*\*|__)(\S(?:.*?\S)?)\1"), r"\2"),
    (re.compile(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])"), r"\1"),
    (re.compile(r"\b(\w+)_\b(?=\s|[.,;:)]|$)"), r"\1"),  # word_ reST references
]


def strip_inline(line: str) -> str:
    for pattern, repl in _INLINE:
        line = pattern.sub(repl, line)
    return re.sub(r"[ \t]+", " ", line).strip()


def _sections(lines: list[str]) -> Iterator[tuple[int, str, list[str]]]:
    """(level, heading, body lines) of a markdown or reST text (level: number of ``#``, or the
    order in which reST underline styles first appear); code fences are never headings."""
    heading, body, in_fence, level = "", [], False, 0
    styles: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            in_fence = not in_fence
        if not in_fence:
            md = _HEADING_MD.match(line)
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            overline = _UNDERLINE.match(line) and i + 2 < len(lines) and _UNDERLINE.match(lines[i + 2])
            if md or overline or (line.strip() and _UNDERLINE.match(nxt) and len(nxt.strip()) >= len(line.strip()) - 2):
                yield level, heading, body
                title = md.group(1) if md else lines[i + 1] if overline else line
                if md:
                    level = len(line.strip()) - len(line.strip().lstrip("#"))
                else:
                    style = ("o" if overline else "u") + (line.strip()[0] if overline else nxt.strip()[0])
                    styles += [] if style in styles else [style]
                    level = styles.index(style) + 1
                heading, body = strip_inline(title), []
                i += 3 if overline else 1 if md else 2
                continue
        body.append(line)
        i += 1
    yield level, heading, body


def _blocks(lines: list[str], indented_code: bool = False) -> Iterator[tuple[str, list[str]]]:
    """("prose" | "code", lines) blocks: fenced and reST literal blocks are code (and, with
    ``indented_code``, any block indented >= 3 spaces after a blank line: pydoc's rendering)."""
    i, literal_next = 0, False
    prose: list[str] = []
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            if prose:
                yield "prose", prose
                prose = []
            fence, code = line.strip()[:3], []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                code.append(lines[i])
                i += 1
            yield "code", code
            i += 1
            continue
        indented = line.startswith(("    ", "\t", "   ")) and line.strip()
        after_blank = indented_code and (i == 0 or not lines[i - 1].strip())
        if (literal_next or after_blank or _CODE_DIRECTIVE.match(lines[i - 1] if i else "")) and indented:
            if prose:
                yield "prose", prose
                prose = []
            code = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                code.append(lines[i])
                i += 1
            yield "code", code
            literal_next = False
            continue
        if line.strip():  # a literal block follows "::", but not a directive's (a note's content is prose)
            literal_next = (line.rstrip().endswith("::") and not _DIRECTIVE.match(line)) or bool(_CODE_DIRECTIVE.match(line))
        prose.append(line)
        i += 1
    if prose:
        yield "prose", prose


def _prose_paragraphs(lines: list[str]) -> Iterator[str]:
    """Soft-wrapped lines joined; a bullet starts a new paragraph; markup lines dropped."""
    para: list[str] = []
    for line in lines + [""]:
        if _CODE_DIRECTIVE.match(line) or _DIRECTIVE.match(line) or _DROP_LINE.match(line) or _TABLE_ROW.match(line):
            continue
        if not line.strip() or _UNDERLINE.match(line) or _BULLET.match(line):
            if para:
                yield strip_inline(" ".join(para))
            para = [] if not line.strip() or _UNDERLINE.match(line) else [_BULLET.sub("", line, count=1).strip()]
            continue
        para.append(line.strip().rstrip(":") + (":" if line.rstrip().endswith("::") else ""))
    return


def clean_markup(text: str) -> str:
    """Markdown or reST -> paragraphs of prose (one per line) and code lines; dropped sections
    and markup lines removed. "" when less than :data:`_MIN_WORDS` prose words are left."""
    out: list[str] = []
    words = 0
    skip_below = None  # level of a dropped heading: its subsections go with it
    for level, heading, body in _sections(text.replace("\r\n", "\n").split("\n")):
        if heading and _CHANGELOG.search(heading):
            break
        if skip_below is not None and heading and level > skip_below:
            continue
        skip_below = level if heading and _DROP_SECTION.search(heading) else None
        if skip_below is not None:
            continue
        if heading:
            out.append(heading)
        for kind, lines in _blocks(body):
            if kind == "code":
                code = _dedent([ln.rstrip() for ln in lines if not _DIRECTIVE.match(ln)])
                out.extend(ln for ln in code if ln.strip())
                continue
            for para in _prose_paragraphs(lines):
                if len(para.split()) >= 2 and re.search(r"[A-Za-z]{2}", para):
                    out.append(para)
                    words += len(para.split())
    return "\n".join(out).strip() if words >= _MIN_WORDS else ""


def _dedent(lines: list[str]) -> list[str]:
    margins = [len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()]
    cut = min(margins) if margins else 0
    return [ln[cut:] for ln in lines]


# ---------------------------------------------------------------- sources


def metadata_docs(site_packages: Path) -> Iterator[DocText]:
    """The long descriptions of the permissively licensed wheels installed in ``site_packages``."""
    for meta in sorted(site_packages.glob("*.dist-info/METADATA")):
        msg = email.parser.Parser().parsestr(meta.read_text(encoding="utf-8", errors="replace"))
        name, version = str(msg.get("Name", "")), str(msg.get("Version", ""))
        licence = metadata_licence(msg)
        if not name or not permissive(licence):
            continue
        body = msg.get_payload() if isinstance(msg.get_payload(), str) else ""
        if not body.strip() and msg.get("Description"):  # metadata < 2.1: the description is a header
            body = re.sub(r"\n {8}|\n\|", "\n", str(msg["Description"]))
        text = clean_markup(body)
        if text:
            yield DocText(f"pypi:{name.lower()}", name, version, licence, f"{meta.parent.name}/METADATA", text)


def pydoc_docs() -> Iterator[DocText]:
    """Python's language reference topics (``pydoc_data/topics.py``, PSF-2.0), one document each."""
    from pydoc_data import topics

    version = ".".join(map(str, sys.version_info[:3]))
    for name in sorted(topics.topics):
        text = clean_pydoc(topics.topics[name])
        if text:
            yield DocText(f"pydoc:{name}", "python-docs", version, "PSF-2.0", f"pydoc_data/topics.py:{name}", text)


def clean_pydoc(text: str) -> str:
    """pydoc's rendering (reST already turned into text: underlined titles, indented code)."""
    out: list[str] = []
    words = 0
    for kind, lines in _blocks(text.split("\n"), indented_code=True):
        if kind == "code":
            out.extend(ln for ln in _dedent([ln.rstrip() for ln in lines]) if ln.strip())
            continue
        for para in _prose_paragraphs(lines):
            out.append(para)
            words += len(para.split())
    return "\n".join(out).strip() if words >= _MIN_WORDS else ""


def collect(site_packages: Iterable[Path]) -> list[DocText]:
    docs = [d for sp in site_packages for d in metadata_docs(sp)] + list(pydoc_docs())
    seen, unique = set(), []
    for d in docs:  # one package installed in two places counts once
        if d.key not in seen:
            seen.add(d.key)
            unique.append(d)
    return unique


def write(docs: list[DocText], out: Path) -> None:
    """JSON lines, gzip with no name or time in the header: same input, same bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = "".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in docs).encode()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    out.write_bytes(buf.getvalue())


def load(path: Path) -> list[DocText]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [DocText(**json.loads(line)) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> None:
    import site
    import sysconfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--site-packages", type=Path, action="append",
                    help="where the wheels are [default: this interpreter's purelib]")
    args = ap.parse_args(argv)
    where = args.site_packages or [Path(sysconfig.get_paths()["purelib"])] + [Path(p) for p in site.getsitepackages()]
    docs = collect(dict.fromkeys(where))
    write(docs, args.out)
    print(json.dumps({"documents": len(docs), "packages": len({d.package for d in docs}),
                      "characters": sum(len(d.text) for d in docs), "bytes": args.out.stat().st_size}))


if __name__ == "__main__":
    main()
