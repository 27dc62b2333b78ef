"""A fast learned main-text extractor: selectolax (lexbor) DOM -> text blocks -> fastText block
classifier taught by trafilatura (issue 17 item 1; docs/extraction.md, "Fast learned extractor").

Why: trafilatura costs ~20 ms of CPU per real page, about half our filter chain. Resiliparse's own
``main_content`` heuristic is ~4x faster but leaks far more boilerplate. Here one walk over a
lexbor DOM cuts the page into paragraph-level blocks; each block gets cheap features (its tag and
the last ancestor tags, tokens of the class/id attributes around it, link share, word count,
sentence ends, position, its parent's text and link density, its first words) and a small
fastText model, trained on trafilatura's own output (``classifiers/extractor.py``), says whether
trafilatura would keep it. Blocks are kept in page order above a threshold chosen on training data.

    from refinery.extract_fast import FastExtractor
    text = FastExtractor().extract(html, url)      # packaged model; None when nothing is kept
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from selectolax.lexbor import LexborHTMLParser

#: the packaged model (trained by ``python -m classifiers.extractor``)
DEFAULT_MODEL = Path(__file__).resolve().parent / "resources" / "models" / "extractor.ftz"

#: subtrees that never hold main text (form controls included; <form> itself does: ASP.NET pages
#: wrap the whole body in one)
SKIP_TAGS = frozenset({
    "script", "style", "noscript", "template", "svg", "math", "head", "iframe", "object", "embed",
    "canvas", "video", "audio", "select", "option", "button", "input", "textarea", "datalist",
    "map", "picture", "img"})
#: elements that start and end a block (everything else is inline: its text joins the block)
BLOCK_TAGS = frozenset({
    "p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "td", "th", "blockquote", "pre", "dd", "dt",
    "div", "section", "article", "main", "aside", "header", "footer", "nav", "ul", "ol", "dl",
    "table", "tr", "tbody", "thead", "tfoot", "form", "fieldset", "figure", "figcaption",
    "caption", "address", "details", "summary", "center", "body", "html", "hr", "br", "menu",
    "legend", "label", "hgroup", "dialog", "frame", "frameset", "noframes"})
#: cells of a table row are joined into the row's block (trafilatura's txt: "| a | b |")
CELL_TAGS = frozenset({"td", "th"})

_SPLIT = re.compile(r"[^a-z]+")
_CAMEL = re.compile(r"([a-z])([A-Z])")
_WS = re.compile(r"\s+")
_WORD_FEATURE = re.compile(r"[^\w'-]+")
_SENT_END = frozenset(".!?。！？…:;\"”»)")


def attr_tokens(value: str | None, cache: dict[str, tuple[str, ...]] = {}) -> tuple[str, ...]:  # noqa: B006 - a cache on purpose
    """Lower-cased alphabetic tokens (>= 3 letters) of a class/id value: ``"postShare-bar"`` ->
    ``("post", "share", "bar")``. Learned, not hand-listed: every token is a feature."""
    if not value:
        return ()
    got = cache.get(value)
    if got is None:
        toks = _SPLIT.split(_CAMEL.sub(r"\1 \2", value).lower())
        got = tuple(dict.fromkeys(t for t in toks if 3 <= len(t) <= 20))[:8]
        if len(cache) < 100_000:
            cache[value] = got
    return got


@dataclass
class Block:
    """One paragraph-level text block, in page order."""

    text: str
    tag: str  # the block element's tag (``tr`` for a table row)
    ancestors: tuple[str, ...]  # the next 3 element tags above it, innermost first
    classes: tuple[str, ...]  # class/id tokens of the block element and its inline elements
    ancestor_classes: tuple[str, ...]  # class/id tokens of the elements above it (nearest first)
    chars: int
    link_chars: int
    frames: tuple = field(repr=False, default=())  # the open elements' frames, body first
    is_row: bool = False

    @property
    def parent(self) -> list:
        """The frame of the element enclosing the block's element."""
        return self.frames[-2] if len(self.frames) > 1 else self.frames[-1]

    @property
    def words(self) -> list[str]:
        return [w for w in self.text.split() if w != "|"]


# a frame on the walk's element stack: [tag, class tokens, chars at open, link chars at open,
#   block count at open, chars at close, link chars at close, block count at close]
def _frame(tag: str, toks: tuple[str, ...], chars: int, links: int, blocks: int) -> list:
    return [tag, toks, chars, links, blocks, -1, -1, -1]


#: what the walk does with an element: skip its subtree, start a block, join a row, a link, inline
_SKIP, _BLOCK, _CELL, _LINK, _INLINE = range(5)
_MAX_FRAMES = 64  # deeper than every training page (max 36): their features are not cut
_KIND = {**{t: _SKIP for t in SKIP_TAGS}, **{t: _BLOCK for t in BLOCK_TAGS}, **{t: _CELL for t in CELL_TAGS}, "a": _LINK}


def blocks_of(html: str) -> list[Block]:
    """Cut a page into text blocks (one DOM walk, by child / next pointers: no recursion limit)."""
    body = LexborHTMLParser(html).body
    if body is None:
        return []
    blocks: list[Block] = []
    battrs = body.attributes
    stack: list[list] = [_frame("body", attr_tokens(battrs.get("class")) + attr_tokens(battrs.get("id")), 0, 0, 0)]
    parts: list[str] = []  # text of the block being built
    inline_toks: list[str] = []
    chars = links = in_link = block_links = 0
    row: list | None = None  # the innermost open table row's frame
    kind_of = _KIND.get

    def flush() -> None:  # only called with parts
        nonlocal block_links
        text = _WS.sub(" ", "".join(parts)).strip()
        parts.clear()
        toks = tuple(inline_toks)
        inline_toks.clear()
        if not text or text == "|":
            return
        is_row = False
        if row is not None:  # text directly in the row's cells: the innermost non-cell frame is the row
            for f in reversed(stack):
                if f[0] not in CELL_TAGS:
                    is_row = f is row
                    break
        if is_row:
            text = text.strip(" |")  # a row cut by a block element inside a cell
            if not text:
                return
            text = "| " + text + " |"
        own = stack[-1]
        acls: list[str] = []
        for f in stack[-2:-_MAX_FRAMES:-1]:
            acls.extend(f[1])
            if len(acls) >= 24:
                break
        # bounded per block (the body + the innermost frames): 10k nested elements stay linear
        frames = tuple(stack) if len(stack) <= _MAX_FRAMES else (stack[0], *stack[1 - _MAX_FRAMES:])
        blocks.append(Block(text, "tr" if is_row else own[0], tuple(f[0] for f in stack[-2:-5:-1]),
                            tuple(dict.fromkeys(own[1] + toks)), tuple(dict.fromkeys(acls)), len(text),
                            block_links, frames, is_row))
        block_links = 0

    def close(entry: tuple) -> None:
        nonlocal in_link, row
        frame = entry[1]
        if frame is None:
            if entry[2]:
                in_link -= 1
            return
        if frame[0] in CELL_TAGS and row is not None and len(stack) > 1 and stack[-2] is row:
            pass  # a cell's text stays in its row's block
        elif parts:
            flush()
        elif inline_toks:
            inline_toks.clear()
        stack.pop()
        frame[5], frame[6], frame[7] = chars, links, len(blocks)
        if frame is row:
            row = None
            for f in reversed(stack):  # a row of an outer table (nested tables)
                if f[0] == "tr":
                    row = f
                    break

    # ``open_`` holds (node, frame or None, is_link) of the elements entered and not yet left
    open_: list[tuple[Any, list | None, bool]] = []
    node = body.child
    while node is not None:
        tag = node.tag
        descend = False
        if tag == "-text":
            t = node.text_content
            if t and not t.isspace():
                parts.append(t)
                n = len(t.strip())
                chars += n
                if in_link:
                    links += n
                    block_links += n
        elif tag and tag[0] != "-":  # an element (not "-comment", "-doctype")
            kind = kind_of(tag, _INLINE)
            if kind != _SKIP:
                descend = True
                if kind == _INLINE or kind == _LINK:
                    attrs = node.attributes
                    if attrs:
                        cls = attrs.get("class")
                        if cls:
                            inline_toks.extend(attr_tokens(cls))
                    if kind == _LINK:
                        in_link += 1
                        open_.append((node, None, True))
                    else:
                        open_.append((node, None, False))
                else:
                    if kind == _CELL and row is not None and stack[-1] is row:
                        if parts:
                            parts.append(" | ")  # the next cell of the row's block
                    elif parts:
                        flush()
                    elif inline_toks:
                        inline_toks.clear()
                    attrs = node.attributes
                    toks = attr_tokens(attrs.get("class")) + attr_tokens(attrs.get("id")) if attrs else ()
                    frame = [tag, toks, chars, links, len(blocks), -1, -1, -1]
                    stack.append(frame)
                    if tag == "tr":
                        row = frame
                    open_.append((node, frame, False))
        if descend:
            child = node.child
            if child is not None:
                node = child
                continue
            close(open_.pop())  # an element without children: left at once
        while True:  # up until a next sibling
            nxt = node.next
            if nxt is not None:
                node = nxt
                break
            if not open_:  # back at the body
                node = None
                break
            entry = open_.pop()
            node = entry[0]
            close(entry)
    if parts:
        flush()
    for f in stack:  # close the frames still open (the body)
        if f[5] < 0:
            f[5], f[6], f[7] = chars, links, len(blocks)
    return blocks


def _bucket(x: float, edges: tuple[float, ...]) -> int:
    """Index of the first edge >= x (len(edges) past the last)."""
    return bisect_left(edges, x)


_WC_EDGES = (0, 1, 2, 3, 5, 8, 12, 20, 35, 60, 120)
_RATIO_EDGES = (0.0, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95)


#: ancestors whose presence anywhere above a block is a feature (not only the nearest three)
_SEMANTIC = frozenset({"nav", "footer", "aside", "header", "form", "article", "main", "table", "li", "blockquote",
                       "menu", "figure", "section", "dl"})


def _own_text(f: list) -> int:
    """Text characters outside links under a closed frame."""
    return (f[5] - f[2]) - (f[6] - f[3]) if f[5] >= 0 else 0


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n + 1)]


_WC_N, _LD_N, _PV_WC, _PV_LD = _names("wc_", 11), _names("ld_", 8), _names("pv_wc_", 11), _names("pv_ld_", 8)
_NX_WC, _NX_LD, _RATIO = _names("nx_wc_", 11), _names("nx_ld_", 8), (0.0, 0.05, 0.1, 0.2, 0.4)
_SE_N, _POS_N = _names("se_", 5), _names("pos_", 9)
_END_P = frozenset(".!?。！？")


_DIST_EDGES = (0, 1, 2, 3, 5, 10, 20)
_DIST_N = _names("dp_", 7)


def _distance_to(marks: list[int], n: int) -> list[int]:
    """For each index < n, the distance (in blocks) to the nearest index in ``marks`` (sorted)."""
    far = 10**6
    out = [far] * n
    for m in marks:
        out[m] = 0
    for i in range(1, n):
        out[i] = min(out[i], out[i - 1] + 1)
    for i in range(n - 2, -1, -1):
        out[i] = min(out[i], out[i + 1] + 1)
    return out


def _end_token(last: str) -> str:
    if last in _END_P:
        return "end_p"
    if last == ":":
        return "end_c"
    if last.isdigit():
        return "end_d"
    return "end_o" if last.isalpha() else "end_x"


def _structure(b: Block, page_text: int, main_frame: list) -> str:
    """The features of a block that depend only on its place in the tree (shared by the blocks
    of one element, so computed once per element)."""
    fr = b.frames
    anc = b.ancestors
    feats = [f"t_{b.tag}", *(f"a{k}_{t}" for k, t in enumerate(anc, 1)), f"ta_{b.tag}_{anc[0] if anc else '-'}",
             *(f"ac_{t}" for t in b.ancestor_classes)]
    p = b.parent
    p_chars = max(p[5] - p[2], 0) if p[5] >= 0 else 0
    p_links = max(p[6] - p[3], 0) if p[6] >= 0 else 0
    p_blocks = max(p[7] - p[4], 1) if p[7] >= 0 else 1
    feats += [f"pw_{_bucket(p_chars / p_blocks / 6.0, _WC_EDGES)}",  # the parent's words per block
              f"pl_{_bucket(p_links / p_chars if p_chars else 0.0, _RATIO_EDGES)}",
              f"pn_{_bucket(p_blocks, (1, 2, 4, 8, 16, 32))}"]
    if len(fr) > 1:
        feats.append(f"ps_{_bucket(_own_text(fr[-2]) / page_text, _RATIO_EDGES)}")
    if len(fr) > 2:
        feats.append(f"gs_{_bucket(_own_text(fr[-3]) / page_text, _RATIO_EDGES)}")
    feats.append("in_main" if any(f is main_frame for f in fr) else "out_main")
    feats.extend(dict.fromkeys(f"at_{f[0]}" for f in fr[:-1] if f[0] in _SEMANTIC))
    return " ".join(feats)


def block_features(blocks: list[Block], first_words: int = 8) -> list[str]:
    """One fastText input line per block: feature tokens, then the block's first words.

    Per block: its tag, the next three ancestor tags, class/id tokens of the block (``c_``) and of
    its ancestors (``ac_``), link share, word count, share of words ending a sentence, how it ends,
    its position in the page, its parent's words per block, link share and block count.
    Page-level context (why: trafilatura keeps the main container, not good-looking blocks):
    the share of the page's non-link text held by the block's parent and grandparent, and
    whether the block sits in the "main" frame: the deepest element still holding >= half of
    the page's non-link text; the semantic elements above it (``at_nav``, ``at_article``...).
    Neighbour context: the word count and link share of the blocks before and after."""
    n = len(blocks)
    if not n:
        return []
    root = blocks[0].frames[0]
    page_text = max(_own_text(root), 1)
    main_frame = root
    for b in blocks:  # the deepest frame with >= half of the page's non-link text
        at = len_frames_upto(b.frames, main_frame)
        if not at:
            continue
        for f in b.frames[at:]:
            if _own_text(f) * 2 >= page_text:
                main_frame = f
            else:
                break
    words = [b.words for b in blocks]
    wc_b = [bisect_left(_WC_EDGES, len(w)) for w in words]
    ld_b = [bisect_left(_RATIO_EDGES, b.link_chars / b.chars if b.chars else 0.0) for b in blocks]
    # where the prose is: trafilatura's text runs from the first to the last article paragraph;
    # teasers, "read more" and related links sit before or after it
    prose = [i for i, b in enumerate(blocks) if len(words[i]) >= 15 and ld_b[i] <= 2]
    nearest = _distance_to(prose, n)
    first_p, last_p = (prose[0], prose[-1]) if prose else (n, -1)
    cache: dict[tuple[int, str, bool], str] = {}
    lines = []
    for i, b in enumerate(blocks):
        # everything in _structure depends on the frames above the block's own element, its tag,
        # and whether that element is the main frame: blocks of siblings share it
        key = (id(b.parent), b.tag, b.frames[-1] is main_frame)
        struct = cache.get(key)
        if struct is None:
            struct = cache[key] = _structure(b, page_text, main_frame)
        ws = words[i]
        wc = len(ws)
        ends = sum(1 for w in ws if w[-1] in _SENT_END)
        feats = [struct, _LD_N[ld_b[i]], _WC_N[wc_b[i]], _SE_N[bisect_left(_RATIO, ends / wc if wc else 0.0)],
                 _end_token(b.text[-1]), _POS_N[min(10 * i // n, 9)],
                 _PV_WC[wc_b[i - 1]] + " " + _PV_LD[ld_b[i - 1]] if i else "pv_none",
                 _NX_WC[wc_b[i + 1]] + " " + _NX_LD[ld_b[i + 1]] if i + 1 < n else "nx_none"]
        feats.append("rp_before" if i < first_p else "rp_after" if i > last_p else "rp_inside")
        feats.append(_DIST_N[bisect_left(_DIST_EDGES, nearest[i])])
        if b.classes:
            feats.append(" ".join("c_" + t for t in b.classes))
        if b.text[:1].isupper():
            feats.append("cap")
        first = _WORD_FEATURE.sub(" ", " ".join(ws[:first_words]).lower()).strip()
        if first:
            feats.append(first)
        lines.append(" ".join(feats))
    return lines


def len_frames_upto(frames: tuple, frame: list) -> int:
    """Index just after ``frame`` in ``frames`` (0 when it is not there)."""
    for k in range(len(frames) - 1, -1, -1):
        if frames[k] is frame:
            return k + 1
    return 0


def _load_fasttext(path: str | Path) -> Any:
    import fasttext

    try:
        fasttext.FastText.eprint = lambda *a, **k: None  # its load-time warning goes to stderr
    except AttributeError:  # pragma: no cover
        pass
    return fasttext.load_model(str(path))


class FastExtractor:
    """Main text of a page with the learned block classifier (see the module docstring)."""

    def __init__(self, model_path: str | Path | None = None, threshold: float | None = None,
                 smooth: bool | None = None) -> None:
        path = Path(model_path) if model_path else DEFAULT_MODEL
        if not path.is_file():
            raise FileNotFoundError(f"extractor model not found: {path} (train it: python -m classifiers.extractor)")
        self.model = _load_fasttext(path)
        meta: dict[str, Any] = {}
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            meta = json.loads(sidecar.read_text())
        self.threshold = float(threshold if threshold is not None else meta.get("threshold", 0.5))
        self.smooth = bool(smooth if smooth is not None else meta.get("smooth", True))
        #: weight of a block's own score against its neighbours' and siblings' (see mix_scores)
        self.mix = float(meta.get("mix", 1.0))
        #: when a page goes to trafilatura in a cascade (see :meth:`is_unsure`; chosen in training)
        self.cascade: dict[str, float] = {"short_chars": 200, "band": 0.2, "share": 0.2, **meta.get("cascade", {})}

    def scores(self, blocks: list[Block]) -> list[float]:
        """P(content) per block."""
        if not blocks:
            return []
        labels, probs = self.model.predict(block_features(blocks), k=1)
        return [float(p[0]) if lab[0] == "__label__1" else 1.0 - float(p[0]) for lab, p in zip(labels, probs)]

    def decide(self, blocks: list[Block], scores: list[float]) -> list[bool]:
        if self.mix < 1.0:
            scores = mix_scores(blocks, scores, self.mix)
        keep = [s >= self.threshold for s in scores]
        if scores and not any(keep):  # nothing sure: the blocks above half the threshold (fewer pages emptied)
            keep = [s >= self.threshold / 2 for s in scores]
        if self.smooth:
            keep = smooth_decisions(blocks, scores, keep, self.threshold)
        return keep

    def predict(self, html: str) -> FastResult:
        """Text, and whether the model is unsure of the page (a cascade gives those to trafilatura)."""
        blocks = blocks_of(html)
        scores = self.scores(blocks)
        keep = self.decide(blocks, scores)
        text = "\n".join(b.text for b, k in zip(blocks, keep) if k)
        return FastResult(text or None, self.is_unsure(blocks, scores, text))

    def is_unsure(self, blocks: list[Block], scores: list[float], text: str) -> bool:
        """The page's kept text is shorter than ``cascade["short_chars"]``, or more than
        ``cascade["share"]`` of its text (characters) is in blocks scored within
        ``cascade["band"]`` of the threshold."""
        c = self.cascade
        if len(text) < c["short_chars"]:
            return True
        total = sum(b.chars for b in blocks) or 1
        near = sum(b.chars for b, s in zip(blocks, scores) if abs(s - self.threshold) < c["band"])
        return near / total > c["share"]

    def extract(self, html: str, url: str | None = None) -> str | None:
        """The page's main text (blocks joined by new lines), or None when no block is kept.
        ``url`` is accepted for the extract stage's interface; the model does not use it."""
        return self.predict(html).text

    def extract_cascade(self, html: str, url: str | None, fallback: Callable[[str, str | None], str | None]) -> tuple[str | None, bool]:
        """``(text, used_fallback)``: this model's text, or ``fallback(html, url)`` (trafilatura)
        on a page it is unsure of."""
        r = self.predict(html)
        if r.unsure:
            return fallback(html, url), True
        return r.text, False


@dataclass
class FastResult:
    text: str | None
    unsure: bool


def mix_scores(blocks: list[Block], scores: list[float], own: float, window: int = 2) -> list[float]:
    """``own`` x the block's score + the rest split between the mean score of the blocks in the
    same parent element and of the ``window`` blocks on each side (why: trafilatura keeps or
    drops whole containers; one block's features are noisy)."""
    sums: dict[int, list[float]] = {}
    for b, s in zip(blocks, scores):
        acc = sums.setdefault(id(b.parent), [0.0, 0])
        acc[0] += s
        acc[1] += 1
    n = len(scores)
    rest = (1.0 - own) / 2
    out = []
    for i, (b, s) in enumerate(zip(blocks, scores)):
        acc = sums[id(b.parent)]
        lo, hi = max(0, i - window), min(n, i + window + 1)
        k = hi - lo - 1
        near = (sum(scores[lo:hi]) - s) / k if k else s
        out.append(own * s + rest * acc[0] / acc[1] + rest * near)
    return out


def smooth_decisions(blocks: list[Block], scores: list[float], keep: list[bool], threshold: float) -> list[bool]:
    """Neighbour smoothing: keep a short heading right before a kept block when it is itself
    fairly likely (its score is at least half the threshold)."""
    out = list(keep)
    for i in range(len(blocks) - 1):
        if not out[i] and out[i + 1] and blocks[i].tag in ("h1", "h2", "h3", "h4", "h5", "h6") \
                and scores[i] >= threshold / 2:
            out[i] = True
    return out


_TOKEN = re.compile(r"\w+")


def teacher_labels(blocks: list[Block], teacher_text: str | None) -> list[int]:
    """1 for blocks whose text is in trafilatura's output (``teacher_text``), else 0, compared
    as lower-cased word sequences (trafilatura normalizes spaces, soft hyphens, inline breaks):
    a block of >= 4 words is content when >= half of its word trigrams are in the output; a
    shorter one must be a whole output line, so a menu item "Home" is not content just because
    the word occurs in an article."""
    if not teacher_text:
        return [0] * len(blocks)
    lines = [" ".join(_TOKEN.findall(ln.lower())) for ln in teacher_text.split("\n")]
    line_set = set(lines)
    toks = _TOKEN.findall(teacher_text.lower())
    grams = set(zip(toks, toks[1:], toks[2:]))
    out = []
    for b in blocks:
        tk = _TOKEN.findall(b.text.lower())
        if len(tk) < 4:
            out.append(int(bool(tk) and " ".join(tk) in line_set))
        else:
            g = list(zip(tk, tk[1:], tk[2:]))
            out.append(int(2 * sum(x in grams for x in g) >= len(g)))
    return out
