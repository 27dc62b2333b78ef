"""Whole short lines that credit a picture, hold an ad slot or ask to enlarge a picture: a page's
furniture between an article's paragraphs ("Photo: Getty Images" six times in one story,
"(Image credit: Future)", "Story continues below advertisement", "Click to enlarge").

``line_corrections`` drops a lone "Advertisement" as a single word, but not these. A line of at
most :data:`MAX_WORDS` words goes when it is

* a credit that says so (:data:`CREDIT_PATTERNS`: "Photo credit: ...", "(Credit: X / Grist)",
  "Photo by X on Unsplash": the stock site ends the line, "... via photopin cc", "X/Getty Images"),
  an ad slot or an enlarge prompt (:data:`FURNITURE_PATTERNS`), wherever it stands;
* "Credit: " and a name (:data:`BARE_CREDIT_PATTERN`), or a picture's byline ("Featured image by
  Alberto Riva/The Points Guy", :data:`BYLINE_PATTERN`), wherever it stands: not a course's
  "Credits: 3", a price, or a film's "Credits: music by X" (a name starts with a letter, and its
  lower-case words are particles: :func:`_is_name`);
* a bare label and a name ("Photo: Getty Images", "Image: NASA"; :data:`LABEL_PATTERN`) only when
  the document has at least :data:`MIN_LABELS` such lines: once, the label may open a tweet or a
  caption ("Photo: Me and my friends at the beach"), repeated it is the page's credit slot; a
  caption after the label ("Photo: A man walks past a mural") is not a name and stays.

With ``more_languages`` (``line_corrections``' ``credits_in_more_languages``), the same in German,
French, Spanish, Italian, Dutch and Portuguese: a credit that says so ("Titelbild: X", "Bildquelle:
X", "Crédits photos : X", "Crédito de la imagen: X", :data:`OTHER_CREDIT_PATTERNS`) wherever it
stands, and a bare label and a name ("Foto: X", "(Bild: X)", :data:`OTHER_LABEL_PATTERN`) when the
document has at least :data:`MIN_LABELS` of them. "Quelle: dpa" (a news agency, a study) is the
text's source, not a picture's, and stays.

Video labels are left alone ("VIDEO: Breast Cancer Symptoms" is a link to a video, not a credit).
Measured in docs/extraction.md (line corrections).
"""

from __future__ import annotations

import re

#: a credit or furniture line has at most this many words
MAX_WORDS = 10
# a line of 10 words is shorter than this (words of 30 characters): longer lines skip the regexes
_MAX_CHARS = 400
#: bare "Photo: X" lines a document needs before they go
MIN_LABELS = 2

_PICTURE = r"(?:photo(?:graph)?s?|images?|pictures?|pics?|illustrations?|graphics?|artwork|infographic)"
_STOCK = (r"(?:unsplash|pexels|pixabay|flickr|shutterstock|getty\s*images|istock(?:photo)?|adobe\s*stock|"
          r"photopin|wikimedia(?:\s*commons)?|depositphotos|dreamstime|canva)")

CREDIT_PATTERNS: list[str] = [
    # "Photo credit: Josep Emili", "Image credits: NASA", "Photo courtesy of the family", "Photo Source: X",
    # "Photo source from (http://...)"; not "Image sources and formats", "Image source code is on GitHub"
    _PICTURE + r"\s+(?:credits?\b|courtesy(?:\s+of)?\b|source\s*(?:[:：]|from\b))\s*[:：]?\s*\S.*",
    # "Photo by Joshua Humphrey on Unsplash", "Image by X from Pixabay (CC BY 2.0)": the stock site ends
    # the line; not "Photos from Flickr show the flood", "Photo by Unsplash founder Mikael Cho, 2013"
    _PICTURE + r"\s+(?:by|from|via)\s+.*\b" + _STOCK + r"\b(?:\s*[(,/|–—-]?\s*(?:cc[\s-]*by[\w\s.-]*|cc0|cc)\)?)?",
    # "photo credit: X via photopin cc", "© Oli Scarff/Getty Images", "Getty Images"
    r".*\bvia\s+photopin\b.*", r"(?:.*[/|,]\s*)?(?:getty\s+images|afp\s*/\s*getty\s+images)(?:\s+for\s+\S.*)?",
]

FURNITURE_PATTERNS: list[str] = [
    r"(?:story|article|content|text) continues (?:below|after)(?: (?:this|the))?(?: advertisement| ad)?",
    r"advertisement\s*[-–—:]?\s*(?:scroll|continue reading)(?: to continue| below)?(?: with content)?",
    r"(?:click|tap)\s+(?:here\s+)?(?:to|for)\s+(?:enlarge|zoom|expand|(?:an?\s+)?(?:larger|bigger|full[\s-]?size)"
    r"(?:\s+(?:image|view|version|picture|photo))?)(?:\s+(?:image|picture|photo))?",
    r"(?:view\s+|see\s+)?(?:enlarge(?:\s+this)?|larger|full[\s-]?size)\s+(?:image|photo|picture)",
]

#: a picture label and a short name: "Photo: Getty Images", "Image : YONHAP News" (the name is
#: checked by :func:`_is_name`)
LABEL_PATTERN = _PICTURE + r"\s*[:：|/]\s*(?P<name>\S.*?)"
#: "Credit: Clayton Aldern / Grist", "Credits: Titelbild AO PRODUCTION S.R.O." (the name is checked by
#: :func:`_is_name`: not "Credits: 3 (ECTS)", "Credit: $500 per month", "Credits: music by John Williams")
BARE_CREDIT_PATTERN = r"credits?\s*[:：]\s*(?P<name>\S.*?)"
#: a picture's byline and a name: "Featured image by Alberto Riva/The Points Guy", "Photo by
#: Joshua Humphrey" (the name is checked by :func:`_is_name`: not "Photo by the author of his
#: grandmother's house, 1952", "Pictures by Picasso hang in the Louvre")
BYLINE_PATTERN = r"(?:(?:featured|header|cover|top|lead|hero|main)\s+)?" + _PICTURE + r"\s+(?:by|courtesy\s+of)\s+(?P<name>\S.*?)"
#: lower-case words a credited name may hold ("Clayton Aldern for The New York Times", "NASA via Getty")
NAME_WORDS = frozenset({"and", "of", "for", "by", "via", "the", "from", "on", "at", "courtesy", "cc", "de", "del",
                        "da", "di", "do", "dos", "du", "van", "von", "der", "den", "le", "la", "y"})

# German, French, Spanish, Italian, Dutch, Portuguese (credits_in_more_languages): the words for a
# picture, and German compounds naming the article's picture ("Titelbild", "Beitragsbild")
_OTHER_PICTURE = (r"(?:fotos?|bild(?:er)?|fotografie|imagen(?:es)?|fotograf[ií]as?|immagin[ei]|foto's|afbeelding(?:en)?|"
                  r"beeld|imagens?)")
_LEAD_PICTURE = r"(?:titel|beitrags|aufmacher|header|teaser|vorschau|artikel|symbol)bild(?:er)?"
OTHER_CREDIT_PATTERNS: list[str] = [
    # "Titelbild: Geyres Christophe/ABACA/picture-alliance", "Beitragsbild: Titelseite der FAZ, Ausriss."
    _LEAD_PICTURE + r"\s*[:：]\s*\S.*",
    # "Bildquelle: SWR", "Bildnachweis: X", "Fotocredit: X", "Fotonachweis: X", "Bildrechte: X"
    r"(?:bild|foto)(?:quellen?|nachweis(?:e)?|rechte|credits?)\s*[:：]\s*\S.*",
    # "Crédits photos : Bestimage", "Crédit photo : KB / Bondy Blog", "Crédit image : X"
    r"cr[ée]dits?\s+(?:photos?|images?|illustrations?)\s*[:：]\s*\S.*",
    # "Crédito de la foto: X", "Créditos da imagem: X", "Crediti fotografici: X", "Credito foto: X"
    r"cr[ée]dit[oi]s?\s+(?:(?:de|da|do|della)\s+(?:la\s+)?)?(?:foto(?:grafi[ac]o?s?)?|imagen|imagem|immagine)\s*[:：]\s*\S.*",
    r"(?:fuente|fonte)\s+(?:de\s+la\s+|da\s+|dell')?(?:foto|imagen|imagem|immagine)\s*[:：]\s*\S.*",
]
#: "Foto: Michael von Lingen", "(Bild: Dieter Stork)", "Fotos: Tobias König und Michael Romstöck" (the
#: name checked by :func:`_is_name` with :data:`OTHER_NAME_WORDS`)
OTHER_LABEL_PATTERN = _OTHER_PICTURE + r"\s*[:：|/]\s*(?P<name>\S.*?)"
#: lower-case words a credited name may hold in those languages ("X und Y", "X et Y", "Foto de X")
OTHER_NAME_WORDS = NAME_WORDS | {"und", "et", "e", "por", "par", "per", "vom", "zu", "des", "het", "em", "com"}
#: a credited name never starts with an article, but a caption does, and in German a caption's
#: nouns are capitalised as names are ("Bild: Der Neubau der Schule", "Imagen: La Casa Blanca")
OTHER_ARTICLES = frozenset({"der", "die", "das", "den", "dem", "ein", "eine", "einer", "le", "la", "les", "l'", "un", "une",
                            "el", "los", "las", "una", "il", "lo", "gli", "uno", "de", "het", "een", "o", "a", "os", "as",
                            "um", "uma"})

_EDGE = r"^[\s(\[—–-]*(?:"
_END = r")[\s.)\]]*$"
_CREDIT_RE = re.compile(_EDGE + "|".join(CREDIT_PATTERNS + FURNITURE_PATTERNS) + _END, re.IGNORECASE)
_LABEL_RE = re.compile(_EDGE + LABEL_PATTERN + _END, re.IGNORECASE)
_BARE_CREDIT_RE = re.compile(_EDGE + "(?:" + BARE_CREDIT_PATTERN + "|" + BYLINE_PATTERN.replace("(?P<name>", "(?P<byline>") + ")" + _END,
                             re.IGNORECASE)
_OTHER_CREDIT_RE = re.compile(_EDGE + "|".join(OTHER_CREDIT_PATTERNS) + _END, re.IGNORECASE)
_OTHER_LABEL_RE = re.compile(_EDGE + OTHER_LABEL_PATTERN + _END, re.IGNORECASE)
_NAME_START = re.compile(r"[^\W\d_]|[@©]")
# every pattern needs one of these (lower-case) literals: most lines hold none, and one search of
# the lower-cased text skips them (with re.IGNORECASE the search cost as much as the whole stage)
_HINT_RE = re.compile(r"photo|image|picture|pic|illustr|graphic|artwork|credit|getty|continues|advertis|enlarge"
                      r"|larger|bigger|full[\s-]?size|zoom")
_OTHER_HINT_RE = re.compile(r"bild|foto|cr[ée]dit|imag|immagin|beeld|afbeelding")


def may_hold(text: str, more_languages: bool = False) -> bool:
    """False when no line of ``text`` can be a credit or furniture line."""
    low = text.lower()
    return _HINT_RE.search(low) is not None or (more_languages and _OTHER_HINT_RE.search(low) is not None)


def _is_name(value: str, particles: frozenset[str] = NAME_WORDS) -> bool:
    """``value`` credits someone: it starts with a letter, "@" or "©" (not "3 (ECTS)", "$500"),
    and each of its words that starts with a lower-case letter is one of :data:`NAME_WORDS` (a
    caption, "A man walks past a mural", or "music by John Williams", is not a name)."""
    if not _NAME_START.match(value):
        return False
    return all(not w[0].islower() or w.strip(",.;()").lower() in particles for w in value.split())


def credit_lines(lines: list[str], more_languages: bool = False) -> set[int]:
    """Indexes of the lines of one document that are credits, ad slots or enlarge prompts; with
    ``more_languages``, credits in German, French, Spanish, Italian, Dutch and Portuguese too."""
    found: set[int] = set()
    labels: list[int] = []
    for i, line in enumerate(lines):
        if len(line) > _MAX_CHARS:
            continue
        low = line.lower()
        english = _HINT_RE.search(low) is not None
        other = more_languages and _OTHER_HINT_RE.search(low) is not None
        if not english and not other:
            continue  # cheap tests first: most lines are long or hold no hint
        stripped = line.strip()
        if stripped.startswith("|") or "[[" in stripped or len(stripped.split()) > MAX_WORDS:
            continue  # a table's row ("| Image | Name | Source |") is data; "[[Image:a.jpg|thumb]]" markup
        kind = (_english_credit(stripped) if english else None) or (_other_credit(stripped) if other else None)
        if kind == "credit":
            found.add(i)
        elif kind == "label":
            labels.append(i)
    if len(labels) >= MIN_LABELS:
        found.update(labels)
    return found


def _english_credit(line: str) -> str | None:
    """"credit" (goes wherever it stands), "label" (goes when repeated) or None."""
    if _CREDIT_RE.match(line):
        return "credit"
    if (m := _BARE_CREDIT_RE.match(line)) and _is_name(m.group("name") or m.group("byline")):
        return "credit"
    if (m := _LABEL_RE.match(line)) and _is_name(m.group("name")):
        return "label"
    return None


def _other_credit(line: str) -> str | None:
    """As :func:`_english_credit`, for the other languages' patterns."""
    if _OTHER_CREDIT_RE.match(line):
        return "credit"
    if (m := _OTHER_LABEL_RE.match(line)) and _is_name(m.group("name"), OTHER_NAME_WORDS) and not _captioned(m.group("name")):
        return "label"
    return None


def _captioned(value: str) -> bool:
    """``value`` reads as a caption, not a name: it starts with an article (:data:`OTHER_ARTICLES`)
    or is not written in letters of a Latin script (a caption in Arabic after "Foto:")."""
    first = value.split(maxsplit=1)[0].lower() if value.split() else ""
    if first in OTHER_ARTICLES or (first[:2] == "l'" and len(first) > 2):
        return True
    return not any("a" <= c <= "z" or "\u00c0" <= c <= "\u024f" for c in value.lower())


#: a caption with its credit has at most this many words (a paragraph ending so is prose)
CAPTION_MAX_WORDS = 40
#: and a credited name at most this many
_TAIL_NAME_WORDS = 8
#: a caption's credit at the line's end, after a sentence's end, a bracket or a dash: "... at one
#: of the agency's briefings. Photo: Jonathan Nackstrand/AFP", "... (Photo by Ezequiel BECERRA /
#: AFP)", "... - Photograph: Paul Ellis/AFP/Getty"
_CAPTION_TAIL_RE = re.compile(
    r"(?:[.!?”\"')\]]\s+|\s[|–—-]\s*|\s)\(?\s*(?:" + _PICTURE + r")(?:\s+credits?)?\s*(?:[:：]|\bby\b)\s*"
    r"(?P<name>[^()\s][^()]*?)\s*\)?\s*\.?\s*$", re.IGNORECASE)


def credited_caption_lines(lines: list[str]) -> set[int]:
    """Indexes of the lines that are a picture's caption ending with its credit ("Anders Tegnell at
    one of the agency's briefings. Photo: Jonathan Nackstrand/AFP"): 4 to :data:`CAPTION_MAX_WORDS`
    words whose end is a picture label or byline and a name (:func:`_is_name`, at most 8 words).
    A credit line alone is :func:`credit_lines`' job; a caption without a credit stays."""
    found: set[int] = set()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped[0] == "|" or len(stripped) > _MAX_CHARS:
            continue
        n = len(stripped.split())
        if not 4 <= n <= CAPTION_MAX_WORDS or _HINT_RE.search(stripped.lower()) is None:
            continue
        m = _CAPTION_TAIL_RE.search(stripped)
        if m is None or m.start() == 0:
            continue
        name = m.group("name")
        if len(name.split()) <= _TAIL_NAME_WORDS and _is_name(name) and len(stripped[: m.start()].split()) >= 3:
            found.add(i)
    return found


#: an article's lead picture named at a line's start, with its caption or credit after the label:
#: "Header Image: People have lived in Ecuador's Amazon forests ...", "featured image: Tetbir Salim
#: via Unsplash", "Cover photo: X"; the label says what the line is, whatever follows
_LEAD_LABEL_RE = re.compile(r"^[\s(\[]*(?:featured|header|cover|top|lead|hero|main|title|teaser)\s+" + _PICTURE
                            + r"\s*[:：]\s*\S", re.IGNORECASE)
#: a caption's bare credit after its text: "... in Napo province. Credit: Tomas Munita/CIFOR (CC
#: BY-NC-ND 2.0)", "... the summit (Credit: NASA)"; the name checked by :func:`_is_name`
_CREDIT_TAIL_RE = re.compile(r"(?:[.!?”\"')\]]\s+|\s[|–—-]\s*|\s\()\(?\s*credits?\s*[:：]\s*(?P<name>[^()\s][^()]*?)"
                             r"(?:\s*\((?:cc|public domain)[^()]*\))?\s*\)?\s*\.?\s*$", re.IGNORECASE)


def caption_credit_lines(lines: list[str]) -> set[int]:
    """:func:`credited_caption_lines` and two more forms of a picture's caption with its credit
    (``line_corrections``' ``drop_caption_credits``, session 50): a line naming the article's lead
    picture ("Header Image: ...", "featured image: X via Unsplash") and a caption ending with a
    bare "Credit: X" after its text; lines of at most :data:`CAPTION_MAX_WORDS` words."""
    found = credited_caption_lines(lines)
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped[0] == "|" or len(stripped) > _MAX_CHARS or i in found:
            continue
        if len(stripped.split()) > CAPTION_MAX_WORDS or _HINT_RE.search(stripped.lower()) is None:
            continue
        if _LEAD_LABEL_RE.match(stripped):
            found.add(i)
            continue
        m = _CREDIT_TAIL_RE.search(stripped)
        if (m is not None and len(stripped[: m.start()].split()) >= 3 and len(m.group("name").split()) <= _TAIL_NAME_WORDS
                and _is_name(m.group("name"))):
            found.add(i)
    return found


#: lower-case words a name after "©" may hold besides :data:`OTHER_NAME_WORDS`: news and picture
#: agencies written in lower case ("© dpa | Kay Nietfeld", "© epd-bild/Jens Schulze")
AGENCY_WORDS = frozenset({"dpa", "afp", "epd", "kna", "apa", "ddp", "sid", "ap", "dapd", "imago", "epa", "ansa", "efe",
                          "dts", "ots", "bild"})
#: a copyright-marked credit has at most this many words after "©"
_COPYRIGHT_NAME_WORDS = 8
# "©", "(c)" / "(C)": the mark, at a line's start (after at most one label: "Foto: © GEPA",
# "Rubriklistenbild: © KCNA/dpa") or after a caption's end ("... aus der Schweiz. © AFP / MARCO
# BERTORELLO", "Logo des Awards | © Springer"); a year may follow the mark
_MARK = r"(?:©|\(c\))"
_YEAR = r"(?:(?:19|20)\d\d(?:\s*[-–]\s*(?:19|20)?\d\d)?\s*,?\s+)?"
_COPYRIGHT_LINE_RE = re.compile(r"^[\s(\[]*(?:[^\W\d_][\w-]*\s*[:：]\s*)?" + _MARK + r"\s*" + _YEAR
                                + r"(?P<name>\S.*?)[\s.)\]]*$", re.IGNORECASE)
_COPYRIGHT_TAIL_RE = re.compile(r"(?:[.!?”\"')\]]\s+|\s[|/–—-]\s*|\s\(\s*|[.!?]\s*)(?:[^\W\d_][\w-]*\s*[:：]\s*)?" + _MARK
                                + r"\s*" + _YEAR + r"(?P<name>[^()\s][^()]*?)\s*\)?\s*\.?\s*$", re.IGNORECASE)
_DOMAIN_RE = re.compile(r"[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}[,;]?")
# the items beside a "(c)" that is an enumerator, not a copyright mark
_ENUMERATOR_RE = re.compile(r"\([abdABD]\)")


def _is_copyright_name(value: str) -> bool:
    """``value`` after "©" names a holder: at most 8 words, starting with a letter, whose lower-case
    words are name particles in the credited languages, agencies ("dpa"), stock sites or domains
    ("stock.adobe.com"); not a sentence ("© this is how we work")."""
    words = value.split()
    if not words or len(words) > _COPYRIGHT_NAME_WORDS or not _NAME_START.match(value):
        return False
    for w in words:
        core = w.strip(",.;:()[]")
        if not core or not core[0].islower():
            continue
        if (core.lower() in OTHER_NAME_WORDS or core.lower() in AGENCY_WORDS or _DOMAIN_RE.fullmatch(core)
                or re.fullmatch(_STOCK, core, re.IGNORECASE)):
            continue
        # "epd-bild/Jens", "KCNA/dpa": every part of a joined word is checked
        parts = [p for p in re.split(r"[/|-]", core) if p]
        if len(parts) > 1 and all(not p[0].islower() or p.lower() in AGENCY_WORDS or p.lower() in OTHER_NAME_WORDS
                                  for p in parts):
            continue
        return False
    return True


def may_hold_copyright(text: str) -> bool:
    """False when no line of ``text`` holds a copyright mark (nearly every document)."""
    return "©" in text or "(c)" in text or "(C)" in text


def copyright_credit_lines(lines: list[str]) -> set[int]:
    """Indexes of the lines that credit a picture's holder with a copyright mark: the mark and a
    name alone ("© Shutterstock", "© dpa | Kay Nietfeld", "(c) Wiley-VCH", "Foto: © GEPA"), or a
    caption of at most :data:`CAPTION_MAX_WORDS` words ending with one ("Marco Odermatt, Ski-Star aus
    der Schweiz. © AFP / MARCO BERTORELLO"). Any language: the mark says what the line is. Not a
    footer's "© 2021 Shop GmbH | Impressum | AGB" (lower-case words) nor a sentence naming ©. In a
    text that also enumerates with "(a)", "(b)" or "(d)", "(c)" is the third item ("(C) Paris" of a
    quiz's options, "(c) Termination" of a contract's clauses), not a mark: only "©" counts there."""
    found: set[int] = set()
    enumerates = _ENUMERATOR_RE.search("\n".join(lines)) is not None
    for i, line in enumerate(lines):
        if "©" not in line and (enumerates or ("(c)" not in line and "(C)" not in line)):
            continue
        stripped = line.strip()
        if not stripped or stripped[0] == "|" or "[[" in stripped or len(stripped) > _MAX_CHARS:
            continue
        if len(stripped.split()) > CAPTION_MAX_WORDS:
            continue
        m = _COPYRIGHT_LINE_RE.match(stripped) or _COPYRIGHT_TAIL_RE.search(stripped)
        if m is not None and _is_copyright_name(m.group("name")):
            found.add(i)
    return found
