"""Which lines are *datelines* ("April 11, 2023", "Posted on 11 April 2023", "Updated: 2023-04-11
10:30"): a date, with at most a few other words (a lead such as "Posted on"). Lines dedup folds
digits, so every dateline of a month would be one line on many sites and cut as boilerplate from
every article but one; a dateline says when an article was written, so its date is compared with
its digits instead (:class:`refinery.dedup.lines.LineRule`, ``exact_dates``), and its other numbers
("3 comments", an archive widget's post count) stay folded.

A date is a numeric date (2023-04-11, 11/04/2023) or a month name with a day or year beside it
(only glue such as "de", "of", ordinal endings and ``. , / -`` between them). Weekday names are
part of a dateline but make no date alone ("Mon 9 am", "Sonntag: 10-18 Uhr" are opening hours).
Month and weekday names are CLDR's (babel 2.19) for the languages of a typical crawl's bulk, fixed
here rather than read from the installed babel: the key of a line must be the same in every process
of a run, and babel 2.12 (CLDR 42) had twelve Finnish month abbreviations that 2.19 has not. Names
shorter than three letters are left out ("di", "do" are words too), and so are abbreviations that
are common words (:data:`NOT_MONTHS`: "ago" in "3 hours ago", "out" in "4.5 out of 5").
"""

from __future__ import annotations

import re

#: CLDR locales whose month and weekday names mark a date (the names below are theirs)
LOCALES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da", "nb", "fi", "cs", "ru", "tr", "id", "ro", "hu")
#: words besides the date itself: "Posted on", "Last updated:", "Veröffentlicht am"
MAX_OTHER_WORDS = 3
#: longer lines are not datelines (and are skipped before any regex runs)
MAX_WORDS = 12

#: wide and abbreviated, format and stand-alone month names of :data:`LOCALES` (babel 2.19,
#: casefolded, trailing dots stripped, at least 3 letters)
_CLDR_MONTHS = (
    "abr abril ago agosto agu agustus août apr april aprile aprilie ara aralık aug august augusti augustus "
    "augusztus avr avril ağu ağustos bře březen března cze czerwca czerwiec dec december decembrie des "
    "desember dez dezember dezembro dic dicembre diciembre dub duben dubna déc décembre eki ekim elo elokuu "
    "elokuuta ene enero eyl eylül feb febbraio febr febrero februar februari februarie february február fev "
    "fevereiro févr février gen gennaio giu giugno gru grudnia grudzień haz haziran heinä heinäkuu heinäkuuta "
    "helmi helmikuu helmikuuta huhti huhtikuu huhtikuuta ian ianuarie iul iulie iun iunie jan janeiro januar "
    "januari january január janv janvier joulu joulukuu joulukuuta juil juillet juin jul julho juli julio "
    "july jun june junho juni junio júl július jún június kas kasım kesä kesäkuu kesäkuuta kvě květen května "
    "kwi kwiecień kwietnia led leden ledna lip lipca lipiec lis listopad listopada listopadu loka lokakuu "
    "lokakuuta lug luglio lut lutego luty maalis maaliskuu maaliskuuta maart mag maggio mai maio maj maja mar "
    "marca march maret marras marraskuu marraskuuta mars mart martie marts marzec marzo março may mayo mayıs "
    "mei mrt máj május márc március mär märz nis nisan noiembrie nov november novembre novembro noviembre oca "
    "ocak oct october octobre octombrie octubre okt oktober október ott ottobre out outubro paź październik "
    "października pro prosince prosinec sep sept september septembre septembrie septiembre set setembro "
    "settembre sie sierpień sierpnia srp srpen srpna sty styczeń stycznia syys syyskuu syyskuuta szept "
    "szeptember tammi tammikuu tammikuuta tem temmuz touko toukokuu toukokuuta wrz wrzesień września zář září "
    "ápr április úno únor února červen července červenec června čvc čvn říj říjen října şub şubat авг август "
    "августа апр апрель апреля дек декабрь декабря июл июль июля июн июнь июня май мар март марта мая нояб "
    "ноябрь ноября окт октябрь октября сент сентябрь сентября февр февраль февраля янв январь января"
)
#: the same for weekday names
_CLDR_WEEKDAYS = (
    "cmt csütörtök cum cuma cumartesi czw czwartek dienstag dim dimanche dinsdag dom domenica domingo "
    "donderdag donnerstag dum duminică fre fredag freitag fri friday gio giovedì hétfő jeu jeudi joi jue "
    "jueves jum jumat kam kamis kedd keskiviikko keskiviikkona lauantai lauantaina lun lundi lunedì lunes "
    "luni lör lördag lør lørdag maanantai maanantaina maandag man mandag mar mardi martedì martes marți mer "
    "mercoledì mercredi mie miercuri min minggu mittwoch mié miércoles mon monday montag mån måndag neděle "
    "niedz niedziela ons onsdag paz pazar pazartesi per perjantai perjantaina perşembe piątek pon pondělí "
    "poniedziałek pzt pátek péntek qua quarta-feira qui quinta-feira rab rabu sab sabato sabtu sal salı sam "
    "samedi samstag sat saturday seg segunda-feira sel selasa sen senin sex sexta-feira sob sobota sonntag "
    "středa sun sunday sunnuntai sunnuntaina sze szerda szo szombat sáb sábado sâm sâmbătă sön söndag søn "
    "søndag ter terça-feira thu thursday tiistai tiistaina tir tirs tirsdag tis tisdag tor tors torsdag "
    "torstai torstaina tue tuesday vasárnap ven vendredi venerdì vie viernes vin vineri vrijdag wed wednesday "
    "woensdag wtorek zaterdag zondag çar çarşamba úterý čtvrtek środa воскресенье вторник понедельник пятница "
    "среда суббота четверг"
)
#: month abbreviations that are common words of the crawl ("3 hours ago", "4.5 out of 5", "Set of
#: 4", "Pro Max", "LED 12 V", "Gen 2", "Sie", "des", "Mag 7", Portuguese "tem", "Elo 1500")
NOT_MONTHS = frozenset({"ago", "out", "set", "pro", "led", "gen", "sie", "des", "mag", "tem", "elo"})
MONTHS = frozenset(_CLDR_MONTHS.split()) - NOT_MONTHS
WEEKDAYS = frozenset(_CLDR_WEEKDAYS.split()) - MONTHS - NOT_MONTHS

_TIME = r"\b\d{1,2}[:h]\d{2}(?::\d{2})?(?:\s*[ap]\.?m\.?)?\b"
_NUMERIC_DATE = r"\b(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./](?:\d{4}|\d{2}))\b"
#: a line's tokens: a time, a numeric date, a number, a word
_TOKENS = re.compile(rf"(?P<time>{_TIME})|(?P<date>{_NUMERIC_DATE})|(?P<num>\d+)|(?P<word>[^\W\d_]+)")
#: what may stand between a month name and its day or year besides glue words
_JOIN = re.compile(r"[\s.,/-]*")
_DIGIT = re.compile(r"\d")
#: the quick test before tokenizing: a numeric date, or a word (a month name?)
_DATE_SEARCH = re.compile(_NUMERIC_DATE)
_WORD = re.compile(r"[^\W\d_]+")
#: a date's own words: "3 de octubre de 2011", "the 3rd of May" (ordinal endings), time zones
_GLUE = frozenset({"de", "of", "the", "le", "el", "am", "pm", "at", "um", "st", "nd", "rd", "th", "er", "utc", "gmt",
                   "est", "edt", "pst", "pdt", "cet", "cest", "bst"})


Token = tuple[str, str, int, int]  # (kind, text, start, end)


def _day(token: str) -> bool:
    return len(token) <= 2 and 1 <= int(token) <= 31


def _year(token: str) -> bool:
    return len(token) == 4


def dateline_key(norm: str) -> str | None:
    """``norm`` (a normalized line: NFKC, casefolded, digits unfolded) with every digit but its
    date's (and times') folded to ``0``, if it is a dateline: a date with at most
    :data:`MAX_OTHER_WORDS` other words. None for other lines, chrome with digits included ("3
    comments", "© 2023 Acme. All rights reserved.", "Page 2 of 9", "Updated 3 hours ago")."""
    if not _DIGIT.search(norm) or len(norm.split()) > MAX_WORDS:
        return None
    if not _DATE_SEARCH.search(norm) and MONTHS.isdisjoint(_WORD.findall(norm)):
        return None  # most lines with digits: no date at all
    tokens = [(m.lastgroup, m.group(), m.start(), m.end()) for m in _TOKENS.finditer(norm)]
    keep: list[tuple[int, int]] = []  # spans whose digits stay
    dated = False
    other = 0
    for i, (kind, text, start, end) in enumerate(tokens):
        if kind == "time":
            keep.append((start, end))
        elif kind == "date":
            keep.append((start, end))
            dated = True
        elif kind == "num":
            if len(text) > 4:
                return None
        elif text in MONTHS:
            numbers = _beside(norm, tokens, i)
            keep.extend(numbers)
            dated = dated or bool(numbers)
        elif text not in WEEKDAYS and text not in _GLUE:
            other += 1
            if other > MAX_OTHER_WORDS:
                return None
    if not dated:
        return None
    out, last = [], 0
    for start, end in sorted(keep):
        if start < last:
            continue
        out.append(_DIGIT.sub("0", norm[last:start]))
        out.append(norm[start:end])
        last = end
    out.append(_DIGIT.sub("0", norm[last:]))
    return "".join(out)


def is_dateline(norm: str) -> bool:
    """``norm`` (a normalized line) is a date with at most :data:`MAX_OTHER_WORDS` other words."""
    return dateline_key(norm) is not None


def _beside(norm: str, tokens: list[Token], i: int) -> list[tuple[int, int]]:
    """The spans of the day and year beside the month name ``tokens[i]``: before it a day or a year
    ("11 April", "2023. április 11."), after it a day then a year, a day, or a year ("April 11,
    2023", "April 2023"; after a day also a two-digit year: "04 Dec 19"); only glue words and
    ``. , / -`` between them."""
    found: list[tuple[int, int]] = []
    day_before = False
    k = _next_number(norm, tokens, i, -1)
    if k is not None and (_day(tokens[k][1]) or _year(tokens[k][1])):
        found.append((tokens[k][2], tokens[k][3]))
        day_before = _day(tokens[k][1])
    k = _next_number(norm, tokens, i, +1)
    if k is None:
        return found
    text = tokens[k][1]
    if _day(text) and not day_before:  # "April 11", then perhaps its year
        found.append((tokens[k][2], tokens[k][3]))
        k = _next_number(norm, tokens, k, +1)
        if k is not None and _year(tokens[k][1]):
            found.append((tokens[k][2], tokens[k][3]))
    elif _year(text) or (day_before and len(text) == 2):  # "April 2023", "11 April 2023", "04 Dec 19"
        found.append((tokens[k][2], tokens[k][3]))
    return found


def _next_number(norm: str, tokens: list[Token], i: int, step: int) -> int | None:
    """The index of the number nearest ``tokens[i]`` in direction ``step``, with only glue words
    and ``. , / -`` between them; None if anything else comes first."""
    j = i + step
    while 0 <= j < len(tokens):
        left, right = (tokens[j], tokens[j - step]) if step < 0 else (tokens[j - step], tokens[j])
        if not _JOIN.fullmatch(norm, left[3], right[2]):
            return None
        kind, text = tokens[j][0], tokens[j][1]
        if kind == "num":
            return j
        if kind != "word" or text not in _GLUE:
            return None
        j += step
    return None
