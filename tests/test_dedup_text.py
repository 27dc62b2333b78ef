"""Normalization and shingle hashing: the vectorized path equals the readable definition on real text."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from refinery.dedup import text as T
from tests._dedup_fixtures import load_cc_docs


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return [d["text"] for d in load_cc_docs()]


def test_fast_words_equal_reference_words_on_all_real_documents(docs):
    # 717 Common Crawl documents in 53 languages: every word of the numpy path must be the word
    # the pure-Python definition (unicodedata, str.lower) gives
    tokens = T.tokenize(docs)
    fast = T.words(tokens)
    assert len(fast) == len(docs)
    mismatched = [i for i, (d, w) in enumerate(zip(docs, fast)) if T.reference_words(d) != w]
    assert mismatched == []
    assert sum(len(w) for w in fast) > 300_000


@pytest.mark.parametrize(
    "a, b",
    [
        ("Café au lait!", "cafe AU LAIT"),  # case, accents (precomposed), punctuation
        ("cafe\u0301 au lait", "café au lait"),  # decomposed accent == precomposed
        ("Über  \t\n straße", "uber strasse".replace("ss", "ß")),  # whitespace runs; ß stays ß
        ("soft\u00adhyphen and zero\u200bwidth", "softhyphen and zerowidth"),  # Cf dropped inside words
        ("a—b–c…d «e» (f) [g] {h} ¿i? ¡j!", "a b c d e f g h i j"),  # Unicode punctuation
        ("x\u00a0y\u2003z", "x y z"),  # non-breaking / em spaces
        ("nul\x00inside", "nul inside"),  # a NUL inside a text is a space, not a document break
        ("ÉCOLE Ελληνικά ΣΟΦΙΑ", "ecole ελληνικα σοφια"),  # Greek accents and case
        ("price: $5.00 + 10%", "price 5 00 10"),  # symbols (S*) are punctuation too
        # compatibility forms (NFKC per character): fullwidth Latin and digits as CJK pages write
        # them, half-width kana (a fullwidth copy shared no shingle: adversarial testing)
        ("ＴＯＫＹＯ ２０２４ ﾃｽﾄ", "tokyo 2024 テスト"),
    ],
)
def test_normalization_rules(a, b):
    assert T.normalize_text(a) == T.normalize_text(b)
    assert T.words(T.tokenize([a, b])) == [T.reference_words(a), T.reference_words(b)]


@pytest.mark.parametrize("a, b", [("ราคาข่าว", "ราคาข้าว"), ("ขาว", "ข่าว"), ("कल", "कुल")])
def test_marks_that_are_letters_are_kept(a, b):
    """Found by adversarial testing: every combining mark was dropped as if an accent, so Thai
    tone marks and vowels and Indic vowel signs went, different words became
    one, and exact dedup removed "ราคาข่าว" (news price) as a copy of "ราคาข้าว" (rice price)."""
    assert T.normalize_text(a) != T.normalize_text(b)
    assert T.words(T.tokenize([a, b])) == [T.reference_words(a), T.reference_words(b)]
    assert T.words(T.tokenize([a]))[0] != T.words(T.tokenize([b]))[0]


def test_kana_written_decomposed_matches_its_precomposed_copy():
    """Found by adversarial testing: with the voicing marks kept, "デ" written decomposed (テ + U+3099,
    as macOS writes it) no longer matched "デ", and exact dedup missed the copy."""
    import unicodedata

    text = "データベースの設計とプログラミング"
    nfd = unicodedata.normalize("NFD", text)
    assert nfd != text and T.normalize_text(nfd) == T.normalize_text(text)
    assert T.words(T.tokenize([nfd]))[0] == T.words(T.tokenize([text]))[0]


def test_optional_vowel_points_are_dropped_like_accents():
    assert T.normalize_text("كَتَبَ") == T.normalize_text("كتب")  # Arabic harakat
    assert T.normalize_text("שָׁלוֹם") == T.normalize_text("שלום")  # Hebrew niqqud


def test_documents_stay_separate_and_empty_documents_have_no_words():
    tokens = T.tokenize(["one two", "", None, "   ...  ", "three"])
    assert T.words(tokens) == [["one", "two"], [], [], [], ["three"]]
    assert tokens.words_per_doc.tolist() == [2, 0, 0, 0, 1]


def test_shingle_hashes_count_distinct_reference_shingles(docs):
    sample = docs[:200]
    hashes, offsets = T.shingle_hashes(T.tokenize(sample), ngram=5)
    assert offsets[-1] == len(hashes)
    for d, text in enumerate(sample):
        mine = hashes[offsets[d] : offsets[d + 1]]
        ref = T.reference_shingles(text, 5)
        # one hash per shingle position, no collisions between distinct shingles
        assert len(np.unique(mine)) == len(ref), d


def test_shingles_of_equal_normalized_texts_are_equal_and_short_documents_get_one():
    a, b, c = "The Quick, brown fox jumps over it.", "the quick brown fox jumps over it", "The quick brown fox"
    hashes, offsets = T.shingle_hashes(T.tokenize([a, b, c, "fox"]), ngram=5)
    sets = [set(hashes[offsets[i] : offsets[i + 1]].tolist()) for i in range(4)]
    assert sets[0] == sets[1] and len(sets[0]) == 3
    assert len(sets[2]) == 1 and len(sets[3]) == 1  # shorter than 5 words: one shingle of all words
    assert sets[2].isdisjoint(sets[0]) and sets[3] != sets[2]


def test_seed_changes_hashes_but_not_structure():
    t0, t1 = T.tokenize(["alpha beta gamma"], seed=0), T.tokenize(["alpha beta gamma"], seed=1)
    assert t0.doc_offsets.tolist() == t1.doc_offsets.tolist()
    assert set(t0.word_hash.tolist()).isdisjoint(t1.word_hash.tolist())


def test_document_hashes_follow_normalized_text():
    h, has = T.document_hashes(T.tokenize(["Hello,  World!", "hello world", "hello world again", ""]))
    assert has.tolist() == [True, True, True, False]
    assert h[0] == h[1] and h[1] != h[2]


def test_raw_tokens_locate_the_original_text(docs):
    sample = docs[:50] + ["  lead\tand trail  ", "x"]
    raw = T.raw_tokenize(sample)
    for d, text in enumerate(sample):
        lo, hi = raw.doc_offsets[d], raw.doc_offsets[d + 1]
        pieces = [text[s:e] for s, e in zip(raw.starts[lo:hi], raw.ends[lo:hi])]
        assert pieces == text.split()


def test_raw_tokens_make_every_cjk_character_a_token():
    """Found by adversarial testing: substring dedup's tokens were whitespace runs, a Chinese
    paragraph one token, so a passage published on three Chinese or Japanese pages was never cut."""
    text = "你好世界 hello 日本語のテキスト。 x"
    raw = T.raw_tokenize([text, "plain words"])
    pieces = [text[s:e] for s, e in zip(raw.starts[:raw.doc_offsets[1]], raw.ends[:raw.doc_offsets[1]])]
    assert pieces == ["你", "好", "世", "界", "hello", "日", "本", "語", "の", "テ", "キ", "ス", "ト", "。", "x"]
    assert raw.doc_offsets.tolist() == [0, 15, 17]


def test_substring_dedup_cuts_a_chinese_passage_published_three_times(tmp_path, monkeypatch, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refinery.dedup.config import DedupConfig
    from refinery.dedup.driver import run_dedup
    from refinery.executors.local import LocalExecutor

    clauses = ["今天天气很好", "我们去公园散步", "孩子们在草地上玩耍", "老人在树下下棋", "小狗追着蝴蝶跑",
               "湖面上有几只小船", "远处传来音乐声", "卖冰淇淋的小车停在路边", "大家都很开心", "傍晚我们才回家"]
    shared = "，".join(clauses) + "。"
    own = ["图书馆里很安静，学生们在认真读书，老师在讲台上写字，窗外的树叶在风中摇动，下课铃声响了。" * 2,
           "同学们走出教室，食堂里飘来饭菜的香味，操场上有人在跑步，天空中飞过一群鸟，晚霞染红了西边的天空。" * 2,
           "火车站里人来人往，广播里播放着列车信息，旅客们拖着行李箱匆匆赶路，候车室里坐满了人。" * 2]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": [o + "\n" + shared for o in own]}), tmp_path / "in" / "s.parquet")
    monkeypatch.setenv("REFINERY_SHARD_LOG_EVERY_S", "0")  # the partition's own progress lines, every step
    with caplog.at_level(logging.INFO, logger="refinery.dedup"):
        run_dedup(str(tmp_path / "in"), str(tmp_path / "out"), DedupConfig(method="substring"), LocalExecutor(1))
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "kept").to_pylist()}
    assert sorted(rows) == ["a", "b", "c"]
    # session 46 (h161): a partition's suffix array ran for minutes without a line; it now says
    # which partition, which step, how far, how fast and the ETA
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[dedup substring] partition s..s: ")]
    assert any(": tokenizing: 0/3 docs, starting" in m for m in steps), steps
    sorts = [m for m in steps if "sorting token windows: " in m and "ETA" in m]
    assert sorts and re.search(r"sorting token windows: 7/7 sorts, [\d.]+ sorts/s, ETA 0s$", sorts[-1]), steps
    assert shared in rows["a"]["text"] and shared not in rows["b"]["text"] and shared not in rows["c"]["text"]
    assert rows["b"]["substring_cut_chars"] >= len(shared) - 2


def test_every_cjk_character_is_a_word():
    """Chinese and Japanese have no spaces: whitespace "words" were whole clauses, and pages
    sharing a few clauses became near-duplicates (found by adversarial testing)."""
    texts = ["你好世界 hello 世界和平。", "ab日本語のテキストcd", "plain english text", "한국어 문장"]
    assert T.words(T.tokenize(texts)) == [["你", "好", "世", "界", "hello", "世", "界", "和", "平"],
                                          ["ab", "日", "本", "語", "の", "テ", "キ", "ス", "ト", "cd"],
                                          ["plain", "english", "text"], ["한국어", "문장"]]
    assert [T.reference_words(t) for t in texts] == T.words(T.tokenize(texts))
    # two pages sharing 3 of their 10 clauses: whole-clause 5-grams could hardly tell them apart
    # on a short page; character 5-grams measure the text they really share
    shared = ["今天天气很好", "我们去公园散步", "孩子们在草地上玩耍"]
    a = "，".join(shared + ["老人在树下下棋", "小狗追着蝴蝶跑", "湖面上有几只小船", "远处传来音乐声",
                            "卖冰淇淋的小车停在路边", "大家都很开心", "傍晚我们才回家"])
    b = "，".join(shared + ["图书馆里很安静", "学生们在认真读书", "老师在讲台上写字", "窗外的树叶在风中摇动",
                            "下课铃声响了", "同学们走出教室", "食堂里飘来饭菜的香味"])
    sa, sb = (set(T.shingle_hashes(T.tokenize([x]), 5)[0].tolist()) for x in (a, b))
    assert len(sa & sb) / len(sa | sb) < 0.25 and len(sa) > 40


def test_fold_table_follows_the_rules_on_every_kind_of_codepoint():
    """The table's build skips the unassigned, private-use and surrogate codepoints (they map to
    themselves): 20,000 seeded codepoints of every category, and every non-identity class, match
    the per-character rules the build applies."""
    import unicodedata

    def rule(cp: int) -> int:
        ch = chr(cp)
        kind = T.char_class(T.compat_char(ch))
        if cp == 0:
            return int(T.SEP)
        if kind != "word":
            return int(T.DROP if kind == "drop" else T.SPACE)
        return ord(T.fold_char(ch)) if cp >= 0x80 or 0x41 <= cp <= 0x5A else cp

    table = T.fold_table()
    rng = np.random.default_rng(0)
    cps = sorted(set(rng.integers(0, T.NUM_CODEPOINTS, 20_000).tolist()) | set(range(0x3000))
                 | {0xE000, 0xF8FF, 0xD800, 0xDFFF, 0xFFFE, 0x10FFFF, 0xFF21, 0xFF9E, 0x2FA1D})
    assert {unicodedata.category(chr(c)) for c in cps} >= {"Cn", "Co", "Cs", "Lo", "Lu", "Mn", "Zs", "Cf"}
    wrong = [hex(c) for c in cps if int(table[c]) != rule(c)]
    assert not wrong, wrong[:10]
