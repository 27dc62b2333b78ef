"""Lines that RefinedWeb's line-wise rules would drop but that are content: the exceptions of
``line_corrections`` (``keep_content_lines``).

RefinedWeb drops a line of one word, of numbers only, or mainly uppercase. On real pages that
removed code (``@classmethod``, ``$ pyenv install $PYTHON_VERSION``, ``}``), a joke's punchline
("Spelling!"), recipe quantities split over lines ("1/4" / "cup butter"), list numbers over their
item, and one-word headings over paragraphs ("Installation"), and at 5% of a document's words
whole documents with them (a GitHub README, a recipe). Measured on ``data/gold/lines_gold.jsonl``:
421 lines the rules drop on real pages, each labelled content or debris by a reader with its
neighbouring lines (data/gold/README.md).

Each exception is narrow, and none applies to counters or boilerplate patterns:

* **code** (any of the three rules): a decorator over a definition, a shell or REPL prompt, a ``$VARIABLE``, a call
  ``f(x)``, an assignment or pin ``a = 1`` / ``flask==1.0.3``, ``::``, lone braces, a line ending
  in ``;`` or ``{``, an ini ``[section]``, a list literal, a ``|--`` tree line, a
  ``CONSTANT_NAME`` among other tokens, a path or URL (not a date), a file name with a code
  extension, an indented YAML key; lines over :data:`MAX_CHARS` characters are not looked at;
* **a sentence of one word** ("Spelling!", "“Fine.”"): one word ending in ``.``, ``!`` or ``?``,
  not an ellipsis;
* **a quantity**: a number or fraction over a line starting with a unit ("1/4" / "cup butter"),
  and that unit line under it;
* **a list number** ("3." or "3. 3.") over an item of at least three words;
* **a heading over a paragraph**: one capitalised word (a trailing ":" allowed) that is not a
  word of page chrome (:data:`CHROME_WORDS`: "Home", "Share", "Tags", "Advertisement", "Werbung",
  "Publicidad"...), over a line of at least :data:`HEADING_OVER_WORDS` words (navigation sits over long lines too, so the chrome
  words are needed), or over a list item of at least :data:`HEADING_OVER_ITEM_WORDS` words
  ("Ingredients" / "- 200 gm okra", a Javadoc "Returns" / "• a copy of this set"; session 32).

Exceptions by context (session 33, from the lines cut on the trafilatura evaluation pages):

* **in a run of code**: a run of one-word or numeric lines (with the line itself) whose nearest
  longer lines above and below are both code ("...     pass" / "..." / ">>> class B(A):",
  "array = [...]" / "array.flatten!" / "array.map! { |x| x.downcase }"), or that sits right under
  an interpreter prompt (">>> print A.x, B.x, C.x" / "1 1 1": program output);
* **an item of a list** the uppercase rule would drop: a numbered item whose predecessor is among
  the lines above ("9. The Sports Brat" ... "10. YOU!!!!!!!"), or a bulleted item with a
  lower-case letter and two words or more between two items of the same bullet ("- Windows XP
  (SP0-SP3)").

Session 34: **an acronym beside lower-case words** ("Why AI2?") does not make a line mainly
uppercase: words in capitals of 2-3 letters are set aside before counting (``_acronyms_in_words``).

Session 37 (an audit of the documents the 5% rule removes): a quantity over the **container** it
counts ("1" / "jar (6 oz) ..."), a heading over a quantity, the **value items** of a label / value
list ("- Calories" / "- 390"; ``_is_labelled_value``), and a **match minute** over its commentary
("88'" / "Sortie de ...").

``data/gold/lines_heldout.jsonl`` (243 lines of pages that gave none to the first set, labelled the
same way) measures them on lines they were not written from.
"""

from __future__ import annotations

import functools
import re

from refinery.stages.table_text import TABLE_RULE_RE, is_table_row

#: the drop rules the exceptions apply to (counters and patterns never)
SINGLE_WORD, NUMERIC, UPPERCASE = "single_word", "numeric", "uppercase"
#: a one-word heading is kept over a line of at least this many words
HEADING_OVER_WORDS = 8

_CODE = re.compile(r"""
   ^\s*(?:(?:\$|%)\s+(?![\d.,]+\s*$)|(?:>>>|>)\s+)\S  # shell / REPL prompt: "$ pip ...", ">>> x", "> 29" (not "$ 19.99")
 | (?<![\w\\])\$[A-Za-z_{(][\w})]*                # $VARIABLE, ${x}, $(cmd)  (not LaTeX "$\begin")
 | [A-Za-z_][\w.]*\([^()]*\)                      # call / signature: f(), obj.m(a, b)
 | [\w\])"']\s*={1,2}\s*[\w"'\[{(.$/-]            # assignment / pin: a = 1, flask==1.0.3
 | \w::(?:\w|\s*$)                                 # C++/Ruby scope, reStructuredText (not "HOME :: NEWS")
 | ^\s*[{}\[\]()]+[;,]?\s*$                       # lone braces: "}", "},", "];"
 | [;{]\s*$                                       # a statement's or block's end
 | ^\s*\[[^\s\[\]]+\]\s*$                         # [section] of an ini file
 | ^\s*\[.*,.*\]\s*$                              # list literal / output: [1, 2, 3]
 | ^\s*[|`]--+\s+[\w.]                            # tree listing: "|-- README.rst" (not a "|---|" rule)
 | ^\s*(?:[a-z][a-z+.-]*://\S+|[.~]?/[^\s/]\S*|[^\s/]*[A-Za-z][^\s/]*/)\s*$   # URL, /abs, ./rel, dir/ (not a date)
 | ^\s*[\w.-]+\.(?:py|js|ts|rs|go|c|h|cpp|java|rb|sh|txt|toml|yaml|yml|json|cfg|ini|md|rst|html|css)\s*$
 | ^\s{2,}[\w.-]+:\s*$                            # indented YAML key
""", re.X)
#: a decorator ("@classmethod") is code over a definition, a handle ("@usacityjournal") is not
_DECORATOR = re.compile(r"^\s*@[A-Za-z_][\w.]*(?:\(.*\))?\s*$")
_DEFINITION = re.compile(r"(?:async\s+)?def\s+\w+\s*\(|class\s+\w+|(?:function|fun|fn)\s*\w*\s*\(|"
                         r"(?:public|private|protected|static|override)\s+[\w<>\[\],.]+\s+\w+\s*[(=;]|@\w")
#: a CONSTANT_NAME among other tokens (alone on a line it is as often a product code, "WJ-BJB_1")
_CONSTANT = re.compile(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b")
#: longer lines are not looked at: one word of 40,000 characters (base64, minified code) made the
#: patterns above take seconds (found by a review); RefinedWeb's rules apply to it as before
MAX_CHARS = 200
_SENTENCE_WORD = re.compile(r"""^["'“‘(\[¡¿]*[^\W\d_][\w'’\-]*(?:[!?]+|(?<!\.)\.)["'”’)\]]*$""")
_UNITS = (r"(?:cups?|c\.|tbsps?|tablespoons?|tsps?|teaspoons?|g|gm|grams?|kg|mg|ml|l|litres?|liters?|oz|ounces?|"
          r"lbs?|pounds?|pinch(?:es)?|dash(?:es)?|cloves?|cans?|packages?|pkgs?|sticks?|slices?|pieces?|heads?|"
          r"bunch(?:es)?|sprigs?|stalks?|large|medium|small|whole|minutes?|mins?|hours?|hrs?|seconds?|servings?|"
          r"serves|people|inch(?:es)?|in\.|cm|mm|quarts?|pints?|gallons?|drops?|handful|"
          # containers a packaged ingredient is counted in ("1" / "jar (6 oz) maraschino cherries",
          # "1" / "box yellow cake mix"; session 37: a recipe removed whole)
          r"jars?|box(?:es)?|bags?|bottles?|containers?|envelopes?|packets?|pouch(?:es)?|cartons?|tubs?|tubes?|"
          r"sachets?|loa(?:f|ves))")
_QUANTITY = re.compile(r"^\s*(?:\d+(?:[.,]\d+)?(?:\s*[-–]\s*\d+)?|\d+\s+\d+/\d+|\d+/\d+|\d*\s*[½¼¾⅓⅔⅛⅜⅝⅞])\s*$")
_UNIT_START = re.compile(r"^\s*" + _UNITS + r"\b", re.I)
_LIST_NUMBER = re.compile(r"^\s*(\d{1,3})[.)](?:\s+\1[.)])?\s*$")
#: a match minute over a live commentary's entry ("88'" / "Sortie de Pierre-Yves Hamel", "45+2’")
_MINUTE = re.compile(r"^\s*\d{1,3}(?:\s*\+\s*\d{1,2})?\s*['’′]\s*$")
#: a value item of a list of label / value items ("- Calories" / "- 390", "- Total Fat" / "- 16g" / "- 24%")
_VALUE_ITEM = re.compile(r"^\s*([-•*·–])\s+[<>~≈]?\s*\d[\d.,]*\s*%?\s*$")
#: labels of engagement tallies, not of data ("- Followers" / "- 12"): left to the numeric rule
_TALLY_LABEL = re.compile(r"(?:likes?|views?|comments?|shares?|repl(?:y|ies)|followers?|following|reviews?|votes?|"
                          r"points?|answers?|posts?|reactions?|reads?|subscribers?|downloads?|stars?|hits?|"
                          r"members?|ratings?|responses?|tweets?|pins?|friends?|photos?|videos?)\W*$", re.I)
_NUMBERED = re.compile(r"\d+[.)]")
#: a heading: one capitalised word of letters ("und", "t", user names and product codes are not)
_HEADING_WORD = re.compile(r"[^\W\d_a-z][^\W\d_]*(?:[-'’&][^\W\d_]+)*:?")
#: a one-word heading is kept over a list item of at least this many words ("- 200 gm okra")
HEADING_OVER_ITEM_WORDS = 3
_LIST_MARKER = re.compile(r"\s*(?:[-•*·–]|\d{1,3}[.)])\s+")
#: one-word page chrome that sits over long lines too (menus, share bars, Q&A sites' counters)
CHROME_WORDS = frozenset("""home menu share tweet pin email print like likes follow subscribe search login logout
register advertisement advertisements ads sponsored loading comments comment reply replies tags tag categories
category archives archive contact about next previous prev back top more close skip navigation nav sitemap rss feed
views votes answers answer reputation badges gold silver bronze rarest news popular trending related recent latest
actions edit delete report flag permalink filed copyright cookies privacy terms facebook twitter instagram pinterest
linkedin youtube whatsapp reddit google telegram webcams videos photos podcasts blogs forums shop cart checkout
wishlist account profile settings help faq x download downloads accept ok
werbung anzeige hauptinhalt inhalt inhaltsverzeichnis menü startseite teilen kommentare suche impressum datenschutz
kontakt anmelden weiterlesen akzeptieren publicité accueil partager commentaires recherche connexion accepter
publicidad inicio compartir comentarios buscar contacto acepto aceptar pubblicità condividi commenti cerca accetta
reklama udostępnij komentarze szukaj kontakt akceptuję reclame delen zoeken реклама поделиться комментарии поиск""".split())


def is_content(lines: list[str], i: int, rule: str) -> bool:
    """Whether ``lines[i]``, which ``rule`` (:data:`SINGLE_WORD`, :data:`NUMERIC` or
    :data:`UPPERCASE`) would drop, is content by one of the exceptions above."""
    line = lines[i]
    if len(line) > MAX_CHARS:
        return False
    if _CODE.search(line) or (_CONSTANT.search(line) and len(line.split()) > 1):
        return True
    if _DECORATOR.match(line) and _DEFINITION.match(_next_line(lines, i)):
        return True
    if _in_code_run(lines, i) or (rule == NUMERIC and _is_stated_output(lines, i)):
        return True
    if rule == UPPERCASE:
        return (_is_list_member(lines, i) or _is_dockerfile_line(lines, i) or _acronyms_in_words(line)
                or _is_table_heading(lines, i))
    if rule == SINGLE_WORD and _is_yaml_parent(lines, i):
        return True
    stripped = line.strip()
    if rule == SINGLE_WORD and _SENTENCE_WORD.match(stripped):
        return True
    after = _next_line(lines, i)
    if _QUANTITY.match(stripped) and after and _UNIT_START.match(after):
        return True
    if _UNIT_START.match(stripped) and _QUANTITY.match(_previous_line(lines, i)):
        return True
    if ((_LIST_NUMBER.match(stripped) or (rule == NUMERIC and _MINUTE.match(stripped)))
            and after and len(after.split()) >= 3 and not _NUMBERED.match(after)):
        return True
    if rule == NUMERIC and _is_labelled_value(lines, i):
        return True
    if rule == NUMERIC and _is_step_number(lines, i):
        return True
    if rule == SINGLE_WORD and _is_table_heading(lines, i):
        return True
    return (rule == SINGLE_WORD and stripped[:1].isupper() and _HEADING_WORD.fullmatch(stripped) is not None
            and stripped.rstrip(":").lower() not in CHROME_WORDS
            and (len(after.split()) >= HEADING_OVER_WORDS
                 or (_is_list_item(after, HEADING_OVER_ITEM_WORDS) and not _list_chrome(stripped))
                 # "Ingredients" / "1/4" / "cup butter": over a quantity that is content
                 or (_QUANTITY.match(after) is not None and _UNIT_START.match(_next_line(lines, _next_index(lines, i)))
                     is not None)))


#: how far under its label a value item may sit ("- Total Fat" / "- 16g" / "- 24%")
VALUE_ITEM_REACH = 2


def _is_labelled_value(lines: list[str], i: int) -> bool:
    """A number item ("- 390") of a list of label / value items: within :data:`VALUE_ITEM_REACH`
    items under its label, an item of the same bullet starting with a letter, of at most three
    words, that is no tally ("- Calories" / "- 390"; not "- Followers" / "- 12", nor pagination
    "- 1" / "- 2"), and beside another label / value pair of the list (the label before its own,
    or after its values): a menu's one number under a word ("• Seite" / "• 1" / "• 2", "• E-Edition"
    / "• 2023", "• JF" / "• 9", "• November" / "• 8") is not such a list (found by adversarial
    testing on whole-page text of the evaluation pages: 70 such lines of 31 pages were kept)."""
    if _VALUE_ITEM.match(lines[i]) is None:
        return False
    label = _label_above(lines, i)
    if label < 0:
        return False
    bullet = lines[i].lstrip()[0]
    before = _previous_index(lines, label)
    if before >= 0 and _is_value_like(lines[before], bullet) and _label_above(lines, before) >= 0:
        return True
    after = _next_index(lines, i)
    while after < len(lines) and _is_value_like(lines[after], bullet):
        after = _next_index(lines, after)
    following = _next_index(lines, after)
    return (after < len(lines) and _is_label(lines[after], bullet) and following < len(lines)
            and _is_value_like(lines[following], bullet))


#: an item that is a value: a number, with a percent sign or a short unit ("- 390", "- 24%", "- 16g")
_VALUE_LIKE = re.compile(r"^\s*([-•*·–])\s+[<>~≈]?\s*\d[\d.,]*\s*(?:%|[^\W\d_]{1,4})?\s*$")


def _is_value_like(line: str, bullet: str) -> bool:
    m = _VALUE_LIKE.match(line)
    return m is not None and m.group(1) == bullet


def _is_label(line: str, bullet: str) -> bool:
    """An item of ``bullet`` that labels values: it starts with a letter, has at most three words,
    and is no tally nor chrome ("- Total Fat"; not "- 2(current)", "- Followers")."""
    if not line.lstrip().startswith(bullet + " "):
        return False
    label = line.strip()[1:].strip()
    return (label[:1].isalpha() and len(label.split()) <= 3 and not _TALLY_LABEL.search(label)
            and label.rstrip(":").lower() not in CHROME_WORDS)


def _label_above(lines: list[str], i: int) -> int:
    """Index of the label of value item ``i`` (:func:`_is_label`), over at most
    :data:`VALUE_ITEM_REACH` - 1 other values; -1 if none."""
    bullet = lines[i].lstrip()[0]
    j = i
    for _ in range(VALUE_ITEM_REACH):
        j = _previous_index(lines, j)
        if j < 0:
            return -1
        if _is_label(lines[j], bullet):
            return j
        if not _is_value_like(lines[j], bullet):
            return -1
    return -1


def _acronyms_in_words(line: str) -> bool:
    """A line with a lower-case letter that is not mainly capitals once its acronyms (words in
    capitals of 2 to :data:`ACRONYM_LETTERS` letters: "AI2", "US", "NBA") are set aside: "Why
    AI2?" (3 of its 5 letters capitals: the sentence's first and the acronym's). A shout keeps its
    longer words ("By AUTHOR", "Photo : YONHAP News", "ABOUT US"), and a single capital is no
    acronym: "Jump to: 0-9 A B C ... Z", "View: S M L" stay capitals."""
    if not any(c.islower() for c in line):
        return False
    upper = lower = 0
    for token in line.split():
        letters = _LETTER.findall(token)
        if not letters or (2 <= len(letters) <= ACRONYM_LETTERS and all(c.isupper() for c in letters)):
            continue
        up = sum(1 for c in letters if c.isupper())
        upper += up
        lower += len(letters) - up
    return upper <= lower


#: the longest word in capitals taken for an acronym
ACRONYM_LETTERS = 3
_LETTER = re.compile(r"[^\W\d_]")


#: one-word headings of menus, footers, tag lists and consent banners, over list items
LIST_CHROME_WORDS = frozenset("""keywords keyword topics topic labels label tagged sharing legal links quicklinks
resources company support services products sections explore connect social newsletter indicadores consent
schlagwörter schlagworte stichwörter stichworte themen rechtliches palabras etiquetas temas""".split())


def _list_chrome(word: str) -> bool:
    w = word.rstrip(":").lower()
    return w in LIST_CHROME_WORDS or w.startswith(("cookie", "datenschutz"))


def _is_list_item(line: str, min_words: int) -> bool:
    """A list item ("- 200 gm okra", "• a copy of this set", "2. Mix") of at least ``min_words``
    words after its marker."""
    m = _LIST_MARKER.match(line)
    return m is not None and len(line[m.end():].split()) >= min_words


#: a line of code that is none of :data:`_CODE`'s: a REPL continuation ("...     pass"), a call
#: with a block ("array.map! { |x| x.downcase }")
_CODE_MORE = re.compile(r"^\s*\.\.\.\s+\S|\w[!?]?\s*\{.*\}\s*$")
#: an interpreter's prompt with a command: the lines under it are its output ("$ 19.99", "$ 29.99 USD",
#: "$ 5 off your order" are prices: no command starts with a digit; a review)
_PROMPT = re.compile(r"^\s*(?:>>>|In \[\d+\]:|[$%](?!\s*[\d.,]))\s+\S")
#: a line of numbers: with a line of one word, what a run of output is made of (walked over to the code around)
_NUMBERS = re.compile(r"[\d\s.,:;%+\-–/()]+$")
#: how many short lines a run of output may hold
MAX_RUN = 12
_ITEM = re.compile(r"\s*(?:([-•*·–])|(\d{1,3})[.)])\s+\S")



def _in_code_run(lines: list[str], i: int) -> bool:
    """Whether ``lines[i]`` is in a run of short lines (one word, numbers) between two lines of
    code, or right under an interpreter prompt (program output)."""
    above = _beyond_run(lines, i, -1)
    if above is None:
        return False
    if _PROMPT.match(above):
        return True
    if not _is_code(above):
        return False
    below = _beyond_run(lines, i, 1)
    return below is not None and _is_code(below)


#: a line of code around a run has at most this many words: a call in prose or maths, "the
#: interpretation of $\\int c(u,b) db$ even means? ...", is no code (a review of the gold's debris)
CODE_MAX_WORDS = 12


#: an HTML entity left in the text ("&#128129;"): its ";" ends no statement (tweets)
_ENTITY = re.compile(r"&#?\w+;")


def _is_code(line: str) -> bool:
    # a line over MAX_CHARS is not looked at, as in is_content: one word of 40,000 characters above a
    # one-word line took _CODE 4 s, and the cache would hold such lines (a review)
    return len(line) <= MAX_CHARS and _is_short_code(line)


@functools.lru_cache(maxsize=4096)  # a run's lines share the line above: one search per line
def _is_short_code(line: str) -> bool:
    if len(line.split()) > CODE_MAX_WORDS:
        return False
    line = _ENTITY.sub(" ", line) if "&" in line else line
    return bool(_CODE.search(line) or _CODE_MORE.search(line))


#: a prose line announcing a program's output: "You might expect the following output:", "But you actually get:"
_OUTPUT_LEAD = re.compile(r"\b(?:output|outputs|prints?|printed|returns?|returned|gives?|gave|get|got|result|"
                          r"displays?|shows?)\b[^.!?]*:\s*$", re.I)
#: leads of page chrome and tallies, not of a program: "Search results:", "Poll results:", "The
#: final score shows:", "Share this post to get:", "Here's what you get:" over prices (a review)
_NOT_OUTPUT_LEAD = re.compile(r"\b(?:results|search|poll|polls|votes?|voting|scores?|share|shares|price|prices|"
                              r"pricing|deal|deals|offer|offers|save|discount)\b", re.I)
#: a line of program output: bare numbers ("8", "0 2 4 6 8", "3.14"), not "$19.99", "45%", "1,234", "3-2"
_BARE_NUMBERS = re.compile(r"\s*-?\d+(?:\.\d+)?(?:\s+-?\d+(?:\.\d+)?)*\s*$")
#: a quoted date or range ("> 10/12", "> 2019-2020") is not an expression
_DATE_PROMPT = re.compile(r"^\s*>{1,3}\s+\d{1,4}(?:\s*[-/.]\s*\d{1,4}){1,2}\s*$")
#: a REPL line whose result follows: an arithmetic expression ("> 25+4", ">>> 2 ** 10")
_EXPRESSION_PROMPT = re.compile(r"^\s*>{1,3}\s+[\w.()]+(?:\s*(?:[-+*/%]|\*\*)\s*[\w.()]+)+\s*$")
#: a REPL continuation with code ("...     print multiplier(2)"): the lines under it are output
_CONTINUATION = re.compile(r"^\s*\.\.\.\s+\S")


def _is_stated_output(lines: list[str], i: int) -> bool:
    """Whether ``lines[i]`` (numbers) is in a run of number lines right under a line that
    announces output, evaluates an expression at a prompt, or continues a REPL statement."""
    j = i - 1
    if not _BARE_NUMBERS.match(lines[i]):
        return False
    while j >= 0 and (not lines[j].strip() or _BARE_NUMBERS.match(lines[j]) or lines[j].strip() == "..."):
        j -= 1
        if i - j > MAX_RUN:
            return False
    if j < 0 or len(lines[j]) > MAX_CHARS:
        return False
    above = lines[j]
    # a lead of one word ("Output:") is itself dropped: the numbers would be left under other text
    return bool((_OUTPUT_LEAD.search(above) and len(above.split()) > 1 and not _NOT_OUTPUT_LEAD.search(above))
                or (_EXPRESSION_PROMPT.match(above) and not _DATE_PROMPT.match(above))
                or (_CONTINUATION.match(above) and _is_code(above)))


#: a Dockerfile instruction with arguments ("WORKDIR /opt/app", "FROM python:3.7")
_DOCKERFILE = re.compile(r"^\s*(?:FROM|RUN|CMD|LABEL|EXPOSE|ENV|ADD|COPY|ENTRYPOINT|VOLUME|USER|WORKDIR|ARG|"
                         r"ONBUILD|STOPSIGNAL|HEALTHCHECK|SHELL)\s+"
                         # arguments that are code: a lower-case letter, a path, "KEY=value", "[...]",
                         # a port ("EXPOSE 8000"); not a shout ("FROM THE EDITOR", "RUN DMC", "USER
                         # REVIEWS" / "ADD A REVIEW", "FROM 9AM TO 5PM") nor a price ("FROM $19.99")
                         r"(?![$£€]\s*\d)(?=\S)(?:.*[a-z/.=\[\]\"$~]|\d+(?:/(?:tcp|udp))?(?:\s+\d+(?:/(?:tcp|udp))?)*\s*$)")


def _is_dockerfile_line(lines: list[str], i: int) -> bool:
    """A Dockerfile instruction next to another one ("FROM python:3.7" / "WORKDIR /opt/app"):
    alone, "FROM THE EDITOR" or "RUN DMC" is a shout."""
    return bool(_DOCKERFILE.match(lines[i]) and (_DOCKERFILE.match(_previous_line(lines, i))
                                                  or _DOCKERFILE.match(_next_line(lines, i))))


_YAML_PARENT = re.compile(r"^[a-z_][\w-]*:$")
#: an indented key with a block or a short value ("  python-app:", "    image: redis:alpine"), not
#: indented prose under a word ("menu:" / "   Note: the menu changes daily.")
_YAML_CHILD = re.compile(r"^\s{2,}(?:-\s+)?[a-z_][\w.-]*:(?:\s+\S+(?:\s+\S+){0,2})?\s*$")


def _is_yaml_parent(lines: list[str], i: int) -> bool:
    """A YAML key with a block under it ("services:" / "  python-app:")."""
    if not _YAML_PARENT.match(lines[i]):
        return False
    j = i + 1
    while j < len(lines) and not lines[j].strip():
        j += 1
    return j < len(lines) and _YAML_CHILD.match(lines[j]) is not None


def _beyond_run(lines: list[str], i: int, step: int) -> str | None:
    """The first non-blank line from ``i`` in direction ``step`` that is not short (None: the
    run is longer than :data:`MAX_RUN` or reaches the document's edge)."""
    j, seen = i + step, 0
    while 0 <= j < len(lines):
        line = lines[j]
        if line.strip():
            if len(line) > MAX_CHARS or (len(line.split(None, 1)) > 1 and not _NUMBERS.match(line)):
                return line
            seen += 1
            if seen > MAX_RUN:
                return None
        j += step
    return None


def _is_list_member(lines: list[str], i: int) -> bool:
    """A list item in a list: numbered N with N-1 among the 10 lines above, or bulleted, with
    a lower-case letter, between two items of the same bullet."""
    m = _ITEM.match(lines[i])
    if m is None:
        return False
    if m.group(2):
        n = int(m.group(2))
        prefixes = (f"{n - 1}.", f"{n - 1})")
        return n > 1 and any(lines[j].lstrip().startswith(prefixes) for j in range(max(0, i - 10), i))
    if not any(c.islower() for c in lines[i]) or len(lines[i][m.end() - 1:].split()) < 2:
        return False  # a menu's "- HOME", an identifier "• -zUDP5vMPUs"
    bullet = m.group(1) + " "
    return _previous_line(lines, i).startswith(bullet) and _next_line(lines, i).startswith(bullet)


def _next_index(lines: list[str], i: int) -> int:
    """Index of the first non-blank line after ``i`` (``len(lines)`` if none)."""
    for j in range(i + 1, len(lines)):
        if lines[j].strip():
            return j
    return len(lines)


def _previous_index(lines: list[str], i: int) -> int:
    """Index of the last non-blank line before ``i`` (-1 if none)."""
    for j in range(i - 1, -1, -1):
        if lines[j].strip():
            return j
    return -1


def _next_line(lines: list[str], i: int) -> str:
    # by index: a slice per call made a page of 80,000 one-word lines take 6 s (a review)
    for j in range(i + 1, len(lines)):
        if lines[j].strip():
            return lines[j].strip()
    return ""


def _previous_line(lines: list[str], i: int) -> str:
    for j in range(i - 1, -1, -1):
        if lines[j].strip():
            return lines[j].strip()
    return ""


#: a bare step number ("3" on its own line over "Add minced lamb and cook ..."): at most two digits
_BARE_NUMBER = re.compile(r"^\s*(\d{1,2})\s*$")
#: how many non-blank lines above or below a step number its neighbour in the sequence may sit
STEP_REACH = 8


def _is_step_number(lines: list[str], i: int) -> bool:
    """A bare number over a step, in a sequence of them: the number before it (N-1) over its own
    step among the :data:`STEP_REACH` lines above, or the one after it (N+1) among those below
    ("1" / "Roast the chicken ..." / "2" / "Meanwhile, heat oil ..."; session 45: a recipe's steps,
    a how-to's, a discography). A step is a line of at least three words that is not numbered. A
    vote count over a question's title has no such neighbour, pagination ("1" / "2" / "3") no step
    between its numbers."""
    m = _BARE_NUMBER.match(lines[i])
    if m is None or not _over_a_step(lines, i):
        return False
    n = int(m.group(1))
    return (n > 1 and str(n - 1) in _numbered_steps(lines, i, -1)) or str(n + 1) in _numbered_steps(lines, i, 1)


def _over_a_step(lines: list[str], i: int) -> bool:
    after = _next_line(lines, i)
    return len(after.split()) >= 3 and not _NUMBERED.match(after) and not _BARE_NUMBER.match(after)


def _numbered_steps(lines: list[str], i: int, step: int) -> set[str]:
    """The bare numbers over a step among the :data:`STEP_REACH` non-blank lines above (``step``
    -1) or below (1) line ``i``."""
    found: set[str] = set()
    seen = 0
    j = i + step
    while 0 <= j < len(lines) and seen < STEP_REACH:
        if lines[j].strip():
            seen += 1
            m = _BARE_NUMBER.match(lines[j])
            if m and _over_a_step(lines, j):
                found.add(m.group(1))
        j += step
    return found


#: a heading over a table: at most this many words ("CAMERA", "USER GAMEPLAY CUSTOMISATION")
TABLE_HEADING_WORDS = 6


def _is_table_heading(lines: list[str], i: int) -> bool:
    """A short heading right over a table's header row (a row with the ``|---|`` rule under it):
    "CAMERA" / "| Option | Value |" / "|---|---|", "Quotes" over a wiki's table (session 45: settings
    tables' and wiki tables' headings were cut as single words or uppercase). Letters first, not a
    word of page chrome, no more than :data:`TABLE_HEADING_WORDS` words."""
    stripped = lines[i].strip()
    if (len(stripped.split()) > TABLE_HEADING_WORDS or not stripped[:1].isalpha()
            or stripped.rstrip(":").lower() in CHROME_WORDS or stripped.startswith("|")):
        return False
    j = _next_index(lines, i)
    if j >= len(lines) or not is_table_row(lines[j].strip()):
        return False
    rule = _next_line(lines, j)
    return rule[:2] in ("|-", "|:") and TABLE_RULE_RE.fullmatch(rule) is not None
