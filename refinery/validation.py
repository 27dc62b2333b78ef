"""The problems of a pydantic ``ValidationError`` as the config readers print them: ``key: problem
(got value)``, one per error, so a message names each wrong key on one line. Shared by the recipe
(``refinery.config``), its stages' params, and ``refinery dedup -c`` (``refinery.dedup.config``)."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

#: what the list under a key holds, for the hint of a key given something else than a list
_LIST_OF = {"stages": "document stages", "dedup": "dedup passes", "benchmarks": "benchmark files"}


def problems(exc: ValidationError) -> list[str]:
    """``["dedup: should be a list of dedup passes, e.g. dedup: [{method: minhash}]", ...]``."""
    found = []
    errors = exc.errors()
    for err in errors:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        given = err.get("input")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _meant(err["loc"], errors)
        elif err["type"] == "value_error":  # our own validators' messages, without pydantic's prefix
            msg = msg.removeprefix("Value error, ")
        elif err["type"] == "list_type":  # pydantic's "Input should be a valid list" said not what to write
            msg = _list_hint(err["loc"], given)
        shown = f" (got {given!r})" if given is not None and not isinstance(given, (dict, list)) else ""
        found.append(f"{where}: {msg}{shown}")
    return found


def _meant(loc: tuple[Any, ...], errors: list[Any]) -> str:
    """``; did you mean 'stages'?`` for an unknown key spelled like a missing one beside it:
    ``stagse:`` said "stages: Field required; stagse: unknown key" (the CLI trials, h133)."""
    import difflib

    missing = [str(e["loc"][-1]) for e in errors
               if e["type"] == "missing" and e["loc"] and tuple(e["loc"][:-1]) == tuple(loc[:-1])]
    guess = difflib.get_close_matches(str(loc[-1]), missing, 1) if loc else []
    return f" (did you mean {guess[0]!r}?)" if guess else ""


def _list_hint(loc: tuple[Any, ...], given: Any) -> str:
    """``should be a list of dedup passes, e.g. dedup: [{method: minhash}]``: the value given, as
    one entry of a list (``dedup: {method: minhash}`` meant one pass; ``cc_subsets: warc`` one subset)."""
    key = str(loc[-1]) if loc and isinstance(loc[-1], str) else "key"
    what = f"a list of {_LIST_OF[key]}" if key in _LIST_OF else "a list"
    if given is None:
        return f"should be {what}, and is empty"
    example = yaml.safe_dump([given], default_flow_style=True, sort_keys=False, width=10**6).strip()
    if len(example) > 80:
        example = "[" + example[1:76].rstrip() + " ...]"
    kind = "a mapping" if isinstance(given, dict) else "one value"
    return f"should be {what}, not {kind}: e.g. {key}: {example}"
