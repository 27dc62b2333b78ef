"""The problems of a pydantic ``ValidationError`` in the project's words, one per error:
``where: rule, got value`` (``reader.batch_size: must be > 0, got 0``; ``dedup[0].method: must
be 'minhash', 'exact', ... or 'lines', got 'fuzzy'``), never pydantic's ("Input should be greater
than 0", "Field required"). Shared by the recipe (``refinery.config``), its stages' params, and
``refinery dedup -c`` (``refinery.dedup.config``).

The wording rules (docs/reliability.md, session 46): the place as the YAML spells it (keys joined
by ``.``, list entries as ``[i]``), then the rule in plain words (``must be ...``, ``unknown key``,
``is required``), then the value given (``got ...``); a near key or value offered (``did you
mean``); the allowed values listed."""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

#: what the list under a key holds, for the hint of a key given something else than a list
_LIST_OF = {"stages": "document stages", "dedup": "dedup passes", "benchmarks": "benchmark files"}

#: pydantic's error type -> the rule in our words (``{...}``: the error's context)
_RULES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "literal_error": "must be {expected}",
    "enum": "must be {expected}",
    "missing": "is required",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
    "too_short": "must have at least {min_length} entr{ies}",
    "too_long": "must have at most {max_length} entr{ies}",
    "string_too_short": "must be at least {min_length} character(s)",
    "string_too_long": "must be at most {max_length} character(s)",
}


def where(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("dedup", 0, "minhash", "bands")`` -> ``dedup[0].minhash.bands`` (as the YAML nests it)."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


#: characters of a value shown in a problem at most (a pasted paragraph made the line a screen long)
_SHOWN_CHARS = 80
#: a number PyYAML reads as text: YAML 1.1 wants a dot in a float (``1e5`` is the string '1e5')
_YAML_TEXT_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def given(value: Any) -> str:
    """``got 'x'``, or what kind of thing was given where it is not one value; a boolean as YAML
    spells it (``got false``, not Python's ``False``), a long text cut (its length said)."""
    if isinstance(value, dict):
        return "got a mapping"
    if isinstance(value, (list, tuple)):
        return "got a list"
    if value is None:
        return "got nothing (null)"
    if isinstance(value, bool):
        return f"got {str(value).lower()}"
    shown = repr(value)
    if len(shown) > _SHOWN_CHARS:
        shown = f"{shown[:_SHOWN_CHARS - 4]}...{shown[-1]} ({len(str(value)):,} characters)"
    return f"got {shown}"


def _yaml_hint(kind: str, value: Any) -> str:
    """What YAML made of what was written, where that is the mistake: ``no`` (Norwegian) in a
    list of languages is the boolean false; ``1e5`` is text."""
    if isinstance(value, bool) and kind == "string_type":
        return " (YAML reads yes, no, on, off, true and false unquoted as a boolean: quote it, e.g. 'no')"
    if isinstance(value, str) and kind in ("int_parsing", "int_from_float") and _YAML_TEXT_NUMBER.match(value):
        return f" (YAML reads {value} as text: write it out, e.g. {float(value):.0f})"
    return ""


def problems(exc: ValidationError, model: type[BaseModel] | None = None, at: tuple[Any, ...] = ()) -> list[str]:
    """``["reader.batch_size: must be > 0, got 0", "colur: unknown key (did you mean 'colour'?)"]``.
    ``model``: the model validated, whose keys an unknown key is matched against. ``at``: where the
    validated data sits in a recipe (``("dedup", 2)``), named first as the recipe's refusal names it."""
    errors = _merge_unions(exc.errors())
    return [_placed(at, err, _problem(err, errors, model)) for err in errors]


def _placed(at: tuple[Any, ...], err: Any, problem: str) -> str:
    """``problem`` named from ``at``: ``lines.min_docs: ...`` -> ``dedup[2].lines.min_docs: ...``."""
    if not at:
        return problem
    place, inner = where(at), where(tuple(err["loc"]))
    if inner and problem.startswith(inner):
        return place + ("" if inner.startswith("[") else ".") + problem
    return f"{place}: {problem}"


def _problem(err: Any, errors: list[Any], model: type[BaseModel] | None) -> str:
    loc, value, kind = tuple(err["loc"]), err.get("input"), err["type"]
    if kind == "invalid_key" or (loc and loc[-1] == "[key]"):
        # a key that is not text (``1:``, ``on:``); pydantic named it as a list index (``executor[1]``)
        # or ``params[1].[key]``
        place = where(loc[:-2] if loc and loc[-1] == "[key]" else loc[:-1])
        key = str(value).lower() if isinstance(value, bool) else repr(value)
        hint = " (YAML reads yes, no, on, off unquoted as a boolean: quote the key)" if isinstance(value, bool) else ""
        return f"{place + ': ' if place else ''}key {key}: keys must be text{hint}"
    if kind == "extra_forbidden":
        return f"{where(loc)}: unknown key{_meant(loc, errors, model)}"
    if kind == "list_type":  # pydantic's "Input should be a valid list" said not what to write
        return f"{where(loc)}: {_list_hint(loc, value)}"
    if kind == "value_error":  # our own validators' words, without pydantic's prefix
        rule = err["msg"].removeprefix("Value error, ")
        return f"{where(loc)}: {rule}" if loc else rule
    if kind == "missing":
        return f"{where(loc)}: is required"
    rule = _rule(kind, err)
    got = given(value) + _yaml_hint(kind, value)
    return f"{where(loc)}: {rule}, {got}" if loc else f"{rule}, {got}"


def _rule(kind: str, err: Any) -> str:
    ctx = dict(err.get("ctx") or {})
    template = _RULES.get(kind)
    if template is None:  # a rule we have no words for: pydantic's, as a rule
        return err["msg"].replace("Input should be", "must be").removeprefix("Value error, ")
    for key in ("min_length", "max_length"):
        if key in ctx:
            ctx["ies"] = "y" if ctx[key] == 1 else "ies"
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return err["msg"].replace("Input should be", "must be")


def _merge_unions(errors: list[Any]) -> list[Any]:
    """One error for a value no member of a union takes (``bos: maybe`` said
    ``tokenize.bos.bool: Input should be a valid boolean ...; tokenize.bos.literal['auto']: ...``):
    ``tokenize.bos: must be true or false or 'auto'``."""
    merged: list[Any] = []
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        if len(loc) >= 2 and _union_tag(loc[-1]) and err["type"] not in ("extra_forbidden", "missing"):
            key = loc[:-1]
            group = groups.get(key)
            rule = _rule(err["type"], err).removeprefix("must be ")
            if group is None:
                group = groups[key] = {"type": "union", "loc": key, "input": err.get("input"), "rules": [rule]}
                merged.append(group)
            elif rule not in group["rules"]:
                group["rules"].append(rule)
            continue
        merged.append(err)
    for group in groups.values():
        group["msg"] = "must be " + " or ".join(group["rules"])
        group["type"] = "union"
    return merged


def _union_tag(part: Any) -> bool:
    """Whether a location part is pydantic's name of a union member (``bool``, ``literal['auto']``,
    ``int``, ``list[str]``), not a key of the config."""
    return isinstance(part, str) and (part in ("bool", "int", "float", "str", "none", "dict", "list")
                                      or part.startswith(("literal[", "list[", "dict[", "function-")))


_RULES["union"] = "{msg}"


def _meant(loc: tuple[Any, ...], errors: list[Any], model: type[BaseModel] | None) -> str:
    """`` (did you mean 'stages'?)`` for an unknown key spelled like a key of the mapping it is in
    (``exectuor:`` beside a default ``executor``), or like a missing one beside it (``stagse:``
    said "stages: Field required; stagse: unknown key": the CLI trials, h133)."""
    known = set(_keys_at(model, loc[:-1])) if model is not None else set()
    known |= {str(e["loc"][-1]) for e in errors
              if e["type"] == "missing" and e["loc"] and tuple(e["loc"][:-1]) == tuple(loc[:-1])}
    guess = difflib.get_close_matches(str(loc[-1]), sorted(known), 1) if loc else []
    if guess:
        return f" (did you mean {guess[0]!r}?)"
    return _section_of(loc, model) if model is not None and loc else ""


def _section_of(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    """`` (a key of reader or tokenize)`` for a key written one level off: ``batch_size:`` at the
    top, ``min_docs:`` beside ``method: lines`` or under ``minhash:``. The sections are those of
    the mapping it is in, then of the mapping around it (never a key of an unrelated section: a
    near spelling there is not offered)."""
    key, parent = loc[-1], loc[:-1]
    homes = [(*parent, name) for name in _sections_at(model, parent) if key in _keys_at(model, (*parent, name))]
    if not homes and parent and isinstance(parent[-1], str):
        homes = [(*parent[:-1], name) for name in _sections_at(model, parent[:-1])
                 if name != parent[-1] and key in _keys_at(model, (*parent[:-1], name))]
    if not homes:
        return ""
    return f" (a key of {' or '.join(where(h) for h in homes)})"


def _sections_at(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The keys of the mapping at ``path`` that hold a mapping of known keys (``reader``, ``lines``)."""
    # (not a list of mappings: ``dedup`` is no home for a key, ``dedup[0]`` would be a guess)
    return [k for k in _keys_at(model, path)
            if _keys_at(model, (*path, k)) and _item_of(_annotation_at(model, (*path, k))) is None]


def _keys_at(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The keys of the mapping at ``path`` in a config validated by ``model`` ([] when not a model's)."""
    found = _model_in(_annotation_at(model, path))
    return list(found.model_fields) if found is not None else []


def _annotation_at(model: type[BaseModel], path: tuple[Any, ...]) -> Any:
    """The type annotation of the value at ``path`` in a config validated by ``model`` (None: unknown)."""
    annotation: Any = model
    for part in path:
        if isinstance(part, int):
            annotation = _item_of(annotation)
            continue
        found = _model_in(annotation)
        if found is None or part not in found.model_fields:
            return None
        annotation = found.model_fields[part].annotation
    return annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation is, or holds as a union member (``TokenizeConfig | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for a in typing.get_args(annotation) if (m := _model_in(a)) is not None), None)


def _item_of(annotation: Any) -> Any:
    """The item type of a list annotation (``list[StageConfig]``), through an optional."""
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0]
    return next((_item_of(a) for a in typing.get_args(annotation) if typing.get_origin(a) is list), None)


def _list_hint(loc: tuple[Any, ...], value: Any) -> str:
    """``should be a list of dedup passes, e.g. dedup: [{method: minhash}]``: the value given, as
    one entry of a list (``dedup: {method: minhash}`` meant one pass; ``cc_subsets: warc`` one subset)."""
    key = str(loc[-1]) if loc and isinstance(loc[-1], str) else "key"
    what = f"a list of {_LIST_OF[key]}" if key in _LIST_OF else "a list"
    if value is None:
        return f"must be {what}, and is empty"
    example = yaml.safe_dump([value], default_flow_style=True, sort_keys=False, width=10**6).strip()
    if len(example) > 80:
        example = "[" + example[1:76].rstrip() + " ...]"
    kind = "a mapping" if isinstance(value, dict) else f"one value ({value!r})"
    return f"must be {what}, not {kind}: e.g. {key}: {example}"


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML syntax error in one line, its place first: ``line 5, column 1: expected ',' or ']',
    but got '<stream end>' (in the flow sequence from line 4, column 23)``. PyYAML's text put the
    context first, quoted the offending lines with a caret and named the file "<unicode string>"."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return " ".join(str(exc).split())
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None and (start.line, start.column) != (mark.line, mark.column):
        text += f" ({context.removeprefix('while ')} from line {start.line + 1}, column {start.column + 1})"
    if "\\t" in problem or "'\\t'" in text:
        text += "; indent with spaces, not tabs"
    return text
