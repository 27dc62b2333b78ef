"""Whole lines of disclosure and consent boilerplate longer than ``line_corrections``' short-line
patterns reach: affiliate and advertising disclosures, cookie-consent notices; and syndication
notes (:func:`is_syndication`: "This article originally appeared on VICE US.", "This post is
republished from the ACM CSCW Medium.", "Originally published: Rebel News by Mike Davis (...)"; a
reading probe, session 33), lines of at most :data:`MAX_SYNDICATION_WORDS` words where the page
speaks of itself ("this article/post/story ..."), so "Figure skating first appeared at the Summer
Olympics in 1908" and "Originally published in 1865, the novel ..." stay.

``line_corrections`` cuts "we use cookies" and "privacy policy" from lines of at most 10 words
(RefinedWeb's rule) and :mod:`refinery.stages.calls_to_action` drops calls to subscribe or follow
of up to 30 words; a reading probe of the recipe's output found statements of 17-57 words kept:
"We recommend the best products through an independent review process, and advertisers do not
influence our picks. We may receive compensation if you visit partners we recommend." (thebalance),
"This post contains references to products from one or more of our advertisers. We may receive
compensation when you click on links to those products." (thepointsguy), "This website uses cookies
and other technology to enhance quality of service. Continuous usage of the website will be
considered as giving consent..." (KBS). A line of at most :data:`MAX_WORDS` words goes whole when
it holds one of :data:`DISCLOSURE_PATTERNS`, each a statement in the publisher's voice ("we may
receive compensation", "this post contains affiliate links", "advertisers do not influence", "this
website uses cookies" where the line starts, "by continuing to use ..., you agree"), so that an
article about cookies or affiliate marketing, or a privacy policy's paragraphs about third parties'
cookies, stay. Their words do not count in ``line_corrections``' 5% when the line is longer than
10 words (as calls to action).
"""

from __future__ import annotations

import re

#: a disclosure drops its line when the line has at most this many words
MAX_WORDS = 80

# the publisher speaking: "we", "I", or, with "may", a capitalised name ("Engadget", "Vox Media")
# bounded tokens starting a token: [\w.'’&-]* was tried at every capital after a '.', each scan
# to the token's end (a 100k-character "Ab.Ab.…" line: 31 s)
_NAME = r"(?-i:(?<![\w.'’&-])[A-Z][\w.'’&-]{0,30}(?: [A-Z][\w.'’&-]{0,30}){0,2})"
# a disclosure opens its clause: not reported speech ("Google said advertisers do not influence")
# nor a quotation ('phrases like "we may earn a commission"')
_CLAUSE = r"(?:^[\W_]{0,3}|(?<=[.!?;:,(])\s{0,2}|(?<=[.!?;:,(]\s)(?:and|but|so) )"
_DOC = r"(?:post|article|page|site|website|blog|story|review|video|content|guide|list)"
# what earns the payment, in the same sentence: the reader's click or purchase, the links
_EARNED_BY = (r"(?=[^.!?]{0,120}\b(?:(?:our|these|the|this|such|affiliate|partner|retail|some|those|my) links?|"
              r"qualifying purchases|affiliate|advertis\w*|"
              r"you (?:buy|purchase|visit|click|shop|sign up|subscribe))\b)")
# a web word beside "we use cookies" (not a baker's "We use cookies in this recipe")
_WEB = (r"(?=[^.!?;]{0,300}\b(?:web ?sites?|site|browser|browsing|experience|analytics|consent\w*|agree\w*|accept\w*|"
        r"privacy|polic(?:y|ies)|settings|preferences|opt[- ]out|personali[sz]\w+|advertis\w*|traffic|"
        r"technolog(?:y|ies))\b)")

DISCLOSURE_PATTERNS: list[str] = [
    # affiliate / advertising disclosures: the payment in the publisher's voice, beside the links,
    # clicks or purchases that earn it ("We may receive compensation when you click on links")
    r"(?:(?:we|i)(?: may| might| could| will| also| do)? (?:receive|earn|get|make)|" + _NAME
    + r" (?:may|might) (?:receive|earn)) (?:an? )?(?:small |tiny )?(?:affiliate )?"
    r"(?:commissions?|compensation|share of (?:the )?(?:sales|revenue))\b" + _EARNED_BY,
    r"(?:may|might|could|will) earn us (?:an? )?(?:small )?(?:affiliate )?commissions?\b",
    r"(?:our |the )?advertisers? (?:do|does) not influence\b",
    r"(?:this|the|our) " + _DOC + r"s? (?:may )?contains? (?:affiliate links|references to products from)",
    r"\bas an amazon associate,? (?:i|we) earn from qualifying purchases",
    # cookie-consent notices: the site's cookie statement opening the line ("This website stores
    # cookies to ..."), or consent by continuing ("By continuing to use Pastebin, you agree to our
    # use of cookies"; "By clicking “Post Your Answer”, you agree to our terms of service, privacy
    # policy and cookie policy")
    r"^(?:cookies?(?: notice| policy)?\s*[:!-]\s*)?(?:this (?:web)?site|our (?:web)?site) (?:uses?|stores?|sets?|"
    r"places?|may use) cookies\b",
    r"^(?:cookies?(?: notice| policy)?\s*[:!-]\s*)?we (?:use|store|set|place|may use) cookies\b" + _WEB,
    r"by (?:continuing|using|browsing|clicking|visiting|staying)\b[^.!?]{0,80}?,? you(?: are)? "
    r"(?:agree(?:ing)? to|consent(?:ing)? to|accept(?:ing)?) (?:our|the|its|their)\b(?=[^.!?]{0,80}\bcookie)",
]
_DISCLOSURE = re.compile(_CLAUSE + r"(?<!\w)(?:" + "|".join(DISCLOSURE_PATTERNS) + r")", re.IGNORECASE)

#: a syndication note drops its line when the line has at most this many words (a longer line
#: goes on into the article: "Originally published on Flexibytes – September 11, 2015. Videos are ...")
MAX_SYNDICATION_WORDS = 25
_PIECE = r"(?:article|story|post|piece|essay|interview|column|report|op-ed|review|blog post|content)"
SYNDICATION_PATTERNS: list[str] = [
    # the page about itself, opening the line: "This article originally appeared on VICE US.", "This
    # post is republished from the ACM CSCW Medium.", "A version of this story was first published
    # in ..." (not "Figure skating first appeared at the Summer Olympics in 1908", nor "The article was
    # republished by dozens of outlets": only "this" is the page speaking of itself)
    r"^(?:an? (?:earlier |shorter |longer |different )?version of )?this " + _PIECE
    + r" (?:was |is |has been |had )?(?:(?:originally|first) (?:appeared|published|posted|ran|written for)|"
    r"appeared (?:originally|first)|(?:re-?published|reprinted|cross-?posted|syndicated))\b"
    # not a piece's history: "This story was first published in 1953 and became a classic." (a
    # review: a year alone names no outlet; the page speaks of a story it discusses)
    r"(?!,?\s+in\s+(?:the\s+)?(?:early\s+|late\s+|mid-?)?\d{4}s?\b)",
    # a bare note with its source or time: "Originally published: Rebel News by Mike Davis (...)",
    # "originally published at 09:15PM on Saturday, May 24, 2008", "Originally posted on X - date";
    # not "Originally published in 1865, the novel ..." ("in" is left out), a forum's quote header
    # "Originally Posted by JohnDoe", a book's or character's facts ("First published: 1954",
    # "First appeared: Action Comics #1 (1938)", "First published by Faber and Faber in 1954, ..."),
    # nor a sentence going on ("Originally published by Marvel Comics in 1963, the series ran ...")
    r"^(?:originally (?:published|appeared|posted)\s*(?::|on\s+(?-i:[A-Z])|at\s+\d)"
    r"|originally published\s+by\s+(?-i:[A-Z])"
    r"|first (?:published|posted)\s*(?::(?!\s*\d{4}\s*$)|on\s+(?-i:[A-Z])|at\s+\d))"
    r"(?!.*(?:,\s+(?:the|a|an|it|its|he|she|they|this|his|her|their)\s|\b(?:was|is|were|are|became|ran|has|had)\b))",
]
_SYNDICATION = re.compile(r"^[\W_]{0,3}(?:" + "|".join(SYNDICATION_PATTERNS).replace("^", "") + r")", re.IGNORECASE)
#: literals (lowercase) one of which every pattern above needs: most documents hold none
HINTS: tuple[str, ...] = ("cookie", "commission", "compensation", "share of", "advertiser", "affiliate",
                          "references to products", "amazon associate", "originally", "first ", "republished",
                          "re-published", "reprinted", "cross-posted", "crossposted", "syndicated")
_HINTS = re.compile("|".join(re.escape(h) for h in HINTS))


def is_disclosure(line: str, n_words: int) -> bool:
    """Whether ``line`` (of ``n_words`` words) is an affiliate/advertising disclosure or a
    cookie-consent notice, and goes whole."""
    if n_words > MAX_WORDS:
        return False
    return _HINTS.search(line.lower()) is not None and _DISCLOSURE.search(line) is not None


def is_syndication(line: str, n_words: int) -> bool:
    """Whether ``line`` (of ``n_words`` words) is a note that the page was first published
    elsewhere ("This article originally appeared on VICE US."), and goes whole."""
    return n_words <= MAX_SYNDICATION_WORDS and _HINTS.search(line.lower()) is not None \
        and _SYNDICATION.match(line) is not None


def may_hold(text: str, low: str | None = None) -> bool:
    """False only when no line of ``text`` (``low``: it lower-cased, if the caller has it) can be a
    disclosure (none of the hints is in it): one search of the document saves one per line in nearly
    every document."""
    low = text.lower() if low is None else low
    return any(hint in low for hint in HINTS)
