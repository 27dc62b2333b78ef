"""Whole lines of page chrome longer than ``line_corrections``' short-line patterns reach: calls to
subscribe, sign up, follow or write in, paywall notices, app and video-consent prompts, share bars.

``line_corrections`` applies its boilerplate patterns to lines of at most 10 words (RefinedWeb's
rule, so that prose is safe); these lines run to 11-30 words ("Get The Times of Israel's Daily
Edition by email and never miss our top stories Free Sign Up", "Follow us: Google News | NewsBreak
| Reddit | Instagram | Facebook | Twitter") and were kept in 24 of 198 kept English documents
(found by reading a run's kept documents). Each pattern is a specific phrase in the publisher's
voice ("our newsletter", "follow us on"); a third-person phrase ("subscribe to the newsletter")
counts only where a sentence starts, as an imperative. Measured on the kept text of 198 real
English pages and 256 CC documents: 33 of the 48 such lines removed, no content line; no line of
10,033 Wikipedia leads matches (tests/test_line_corrections.py checks the leads). Their words do
not count in ``line_corrections``' 5%: counted, a 27-word "Follow us" footer removed a whole news
story and a login prompt a recipe.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

#: a call to action drops its line when the line has at most this many words
MAX_WORDS = 30
#: a share bar has at most this many words, and at least two network names
SHARE_BAR_MAX_WORDS = 15

_SOCIAL = (r"(?:twitter|facebook|instagram|linkedin|youtube|tiktok|pinterest|threads|mastodon|bluesky|github|"
           r"google news|telegram|whatsapp|snapchat|flipboard)")
#: where a sentence starts: the line's start or after a sentence's end
_SENTENCE_START = r"(?:^|(?<=[.!?]\s)|(?<=[.!?]))"

#: a paywall's calls: to pay for the rest of the story, or to log in when one has
PAYWALL_PATTERNS: list[str] = [
    _SENTENCE_START + r"subscribe\b[^.!?]{0,60}\b(?:for|to (?:view|read|see|access|continue reading)) (?:the|this) "
    r"(?:full|entire|rest of (?:the|this)) (?:story|article)",
    r"to (?:view|read|see|access) the full (?:story|article),? (?:please )?(?:subscribe|sign in|log ?in)",
    r"you(?:'re|’re| are) already a (?:subscriber|member)\b[^.!?]{0,60}\b(?:log|sign)[\s-]?in",
]
#: calls to subscribe, sign up or pay: a sign-up or paywall box opens or closes with one
SUBSCRIPTION_PATTERNS: list[str] = [
    *PAYWALL_PATTERNS,
    r"never miss (?:our|the) (?:top |latest |breaking |best |new |single )?(?:stories|story|news|"
    r"updates?|posts?|issues?|episodes?|recipes?|articles?|deals?|headlines?)",
    r"sign(?:ing)?[\s-]?up (?:to|for) (?:our|my) (?:[\w'’&-]+ ){0,3}(?:e-?mail )?(?:newsletters?|mailing list|"
    r"daily edition|e-?edition)",
    _SENTENCE_START + r"sign[\s-]?up (?:to|for) the (?:[\w'’&-]+ ){0,3}(?:newsletters?|mailing list|daily edition|"
    r"e-?edition)",
    r"subscribe (?:now |today )?to (?:our|my) (?:[\w'’&-]+ ){0,3}(?:e-?)?(?:newsletters?|mailing list|e-?edition|"
    r"youtube channel|podcast)",
    _SENTENCE_START + r"subscribe (?:now |today )?to (?:the )?(?:[\w'’&-]+ ){0,3}(?:e-?)?(?:newsletters?|mailing list|"
    r"e-?edition)",
    r"start your [\w'’ ]{0,30}subscription (?:today|now)", r"subscribe to [\w'’ ]{0,30}premium to",
    _SENTENCE_START + r"(?:free )?sign[\s-]?up(?: here| now| today)?[.!]?$",
    r"(?<=[.!?]\s)sign[\s-]?up(?: here| now| today)[.!]?$", r"\bfree sign[\s-]?up$",
    r"^subscribe (?:to our )?(?:weekly |daily |monthly )?(?:update|newsletter)s?:?$",
    r"sign[\s-]?up (?:now |today )?to (?:get|receive) (?:the|our) (?:best|latest|top)",
]
#: a video's consent box: "Please accept YouTube cookies to play this video."
_VIDEO_CONSENT = r"accept (?:[\w-]+ )?cookies to (?:play|view|watch|see|load|display)"

CALL_TO_ACTION_PATTERNS: list[str] = [
    *SUBSCRIPTION_PATTERNS,
    r"to reach the (?:reporter|editor) behind this story",
    # follow us: "us" anywhere; a name or pronoun only as an imperative
    r"follow us (?:on|at|via) " + _SOCIAL,
    _SENTENCE_START + r"follow (?:me|him|her|them|(?-i:(?:[Tt]he )?[A-Z][\w'’.&-]*(?: [A-Z][\w'’.&-]*){0,3})) "
    r"(?:on|at|via) " + _SOCIAL,
    r"^follow us\s*:?\s*(?:on\s*:?\s*)?" + _SOCIAL,
    r"(?:contact|find|join) (?:us|(?-i:[A-Z][\w'’.&-]*(?: [A-Z][\w'’.&-]*){0,3})) on " + _SOCIAL
    + r"(?:,| or| and) " + _SOCIAL,
    # letters and feedback
    r"submit your letter to the editor", _SENTENCE_START + r"submit a letter to the editor",
    r"we want to hear what you think about this (?:article|story)",
    r"(?:feel free to )?send us your (?:comments|feedback|letters|news tips)",
    # video consent, apps, logins
    _VIDEO_CONSENT,
    r"for the latest [^.!?]{0,60}download (?:the|our) [\w&'’ -]{0,30}apps?", r"download our (?:free )?(?:news |mobile )?apps?",
    r"click here to (?:watch|listen|sign up|subscribe|download the app|read (?:more|the full))",
    r"(?:log ?in|login|sign ?in) or (?:register|sign ?up|create an account) to (?:save|comment|continue|view|read|"
    r"access|post|reply)",
    # wire copyright
    r"this material may not be published,? broadcast,? rewritten,? or redistributed",
]
_CALL_TO_ACTION = re.compile(r"(?<!\w)(?:" + "|".join(CALL_TO_ACTION_PATTERNS) + r")(?!\w)", re.IGNORECASE)
#: literals (lowercase) one of which every pattern above needs: most lines hold none
_HINTS = re.compile(r"miss|sign|subscri|follow|editor|hear what|send us|cookies|download|click here|log|material may|"
                    r"reach the|contact|find|join")

#: the networks a share bar names (two of them, besides X, make one)
_SHARE_NETWORKS = ("facebook", "twitter", "x", "whatsapp", "telegram", "linkedin", "pinterest", "reddit", "messenger",
                   "tumblr", "flipboard", "instagram", "youtube", "tiktok", "threads", "mastodon", "bluesky",
                   "google news", "newsbreak", "vk", "viber")
_SHARE_NAME = re.compile(r"(?<!\w)(?:" + "|".join(_SHARE_NETWORKS) + r")(?!\w)", re.IGNORECASE)
#: a line of nothing but share words, network names and separators
_SHARE_BAR = re.compile(r"(?:(?:share|share this|share on|tweet|pin|follow us|follow|email|e-mail|print|copy link|"
                        r"pocket|sms|gmail|" + "|".join(_SHARE_NETWORKS) + r")(?!\w)|[\s|·•,:;/>»\-–—])+",
                        re.IGNORECASE)


def is_call_to_action(line: str, n_words: int) -> bool:
    """Whether ``line`` (of ``n_words`` words) is a call to subscribe, follow, write in... or a
    share bar ("Share Facebook Twitter WhatsApp Email"), and goes whole."""
    if n_words > MAX_WORDS:
        return False
    low = line.lower()
    if _HINTS.search(low) is not None and _CALL_TO_ACTION.search(line) is not None:
        return True
    # two networks at least, told apart and besides X: "x  x  x" is a table's marks, "Twitter / X"
    # a name (a review)
    return (n_words <= SHARE_BAR_MAX_WORDS and _SHARE_BAR.fullmatch(line) is not None
            and len({name.lower() for name in _SHARE_NAME.findall(line)} - {"x"}) >= 2)


#: a box's lines between two of its calls to action, one a paywall's: at most this many lines and
#: words (a paywall's pitch; an article between two calls is longer)
BOX_MAX_LINES = 10
BOX_MAX_WORDS = 200
#: a line under a box's opening call goes on with the box while it pitches to the reader (at most
#: this many words): "Simply pop your email into the box ...", "You can unsubscribe ..."
BOX_LINE_MAX_WORDS = 60
#: a run of more pitching lines than this under a call is no box but an article that talks to its
#: reader about e-mail or subscriptions (a how-to on unsubscribing): none of it goes
BOX_RUN_MAX_LINES = 4
_BOX_OPENER = re.compile(r"(?<!\w)(?:" + "|".join([*SUBSCRIPTION_PATTERNS, _VIDEO_CONSENT]) + r")(?!\w)",
                         re.IGNORECASE)
_PAYWALL = re.compile(r"(?<!\w)(?:" + "|".join(PAYWALL_PATTERNS) + r")(?!\w)", re.IGNORECASE)
#: "accept" pitches only a notice, cookies or terms: as a plain verb it is prose ("ovens accept a
#: 9-inch dish", "the city would accept the offer")
_PITCH = re.compile(r"(?<!\w)(?:newsletters?|inbox|e-?mails?|unsubscribe|subscri(?:be|bers?|ptions?)|"
                    r"sign(?:ing)?[\s-]?up|membership|cookies|consent|"
                    r"accept(?:ing)? (?:(?:this|the|these|our|all) )?(?:notice|cookies|consent|terms))(?!\w)",
                    re.IGNORECASE)
#: a box talks to its reader; an article about newsletters, cookie law or a club's membership
#: talks about others (Wikipedia: "In 2023, the Post had 130,000 print subscribers ...")
_READER = re.compile(r"(?<!\w)(?:you|your|yours|you['’](?:ll|re|ve|d))(?!\w)", re.IGNORECASE)


def _pitches(line: str) -> bool:
    return _PITCH.search(line) is not None and _READER.search(line) is not None


#: literals (lowercase) one of which a box opener holds: plain substring searches of the lower-cased
#: document, then of its lines (a regex of hints, or looser ones such as "sign" or "log", made
#: line_corrections 17-40% slower); "sign up" with another space between is no opener
_BOX_HINTS = ("never miss", "subscri", "sign up", "sign-up", "signup", "signing up", "full story", "full article",
              "already a", "cookies to")


def box_openers(text: str, low: str | None = None) -> list[int]:
    """Indexes of the lines of ``text`` (``low``: it lower-cased, if the caller has it) that open a
    box: calls to subscribe, sign up, or accept a video's cookies. Only lines holding a hint are
    matched (most documents hold none)."""
    low = text.lower() if low is None else low
    at = {j for hint in _BOX_HINTS for j in _finds(low, hint)}
    if not at:
        return []
    lines = text.split("\n")
    # lower-casing keeps the line breaks: a hint's line is the breaks before it
    candidates = sorted({low.count("\n", 0, j) for j in at})
    return [i for i in candidates if len(lines[i].split()) <= MAX_WORDS and _BOX_OPENER.search(lines[i]) is not None]


def _finds(text: str, literal: str) -> Iterator[int]:
    j = text.find(literal)
    while j != -1:
        yield j
        j = text.find(literal, j + 1)


def box_lines(lines: list[str], openers: list[int]) -> set[int]:
    """Indexes of the lines of sign-up, paywall and video-consent boxes that their calls to action
    (``openers``, :func:`box_openers`) leave: the lines between a paywall's two calls (at most
    :data:`BOX_MAX_LINES` lines, :data:`BOX_MAX_WORDS` words, with a pitch word and the reader among them:
    haitiantimes' membership pitch between "To view the full story, please subscribe" and "already
    a subscriber, you can log in"), and the lines right under a call that each pitch to the reader
    (corkbeo's "Simply pop your email into the box ...", "You can unsubscribe from this service at
    any time."; at most :data:`BOX_RUN_MAX_LINES`). Only calls to subscribe or to accept a video's
    cookies open a box: "Follow us" and share bars open none (a short story sits between two)."""
    found: set[int] = set()
    for a, b in zip(openers, openers[1:]):
        found.update(_between(lines, a, b))
    for a in openers:
        found.update(_under(lines, a))
    return found - set(openers)


def _between(lines: list[str], a: int, b: int) -> list[int]:
    # only a paywall's pair: a short story can sit between two newsletter sign-ups
    if _PAYWALL.search(lines[a]) is None and _PAYWALL.search(lines[b]) is None:
        return []
    between = [i for i in range(a + 1, b) if lines[i].strip()]
    if (len(between) <= BOX_MAX_LINES and sum(len(lines[i].split()) for i in between) <= BOX_MAX_WORDS
            and any(_PITCH.search(lines[i]) for i in between) and any(_READER.search(lines[i]) for i in between)):
        return between
    return []


def _under(lines: list[str], a: int) -> list[int]:
    run: list[int] = []
    for i in range(a + 1, len(lines)):
        line = lines[i]
        if not line.strip():
            continue
        if len(line.split()) > BOX_LINE_MAX_WORDS or not _pitches(line):
            break
        run.append(i)
    return run if len(run) <= BOX_RUN_MAX_LINES else []
