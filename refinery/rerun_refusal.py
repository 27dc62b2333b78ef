"""Would a rerun accept a moved threshold? ``refinery stats RUN --what-if STAGE.PARAM=VALUE``
answers only for values a rerun could be made with: the stage built from run.json's entry with the
value (h173), or a dedup pass's entry validated by its settings model (h177), says why not in one
line. Here, not in ``refinery.stats``: that package reads runs without importing stages or config."""

from __future__ import annotations

import re


def rerun_refusal(manifest: dict, stage: str, param: str, number: float | int | None) -> str | None:
    """Why a rerun of the run (its run.json ``manifest``) with ``stage``'s ``param`` at ``number``
    (None: the config's null, the rule off) would be refused, or None (accepted, or not a setting
    checked here)."""
    return stage_refusal(manifest, stage, param, number) or dedup_pass_refusal(manifest, stage, param, number)


def stage_refusal(manifest: dict, stage: str, param: str, number: float | int | None) -> str | None:
    """What building the stage from run.json's entry with the value says, if it refuses; an entry
    that does not build as recorded (another version's, a plugin not loaded here) is not checked."""
    import copy

    from refinery.config import StageConfig, _params_model
    from refinery.stages.registry import stage_class

    entries = ((manifest.get("config") or {}).get("stages")) or []
    entry = next((e for e in entries if isinstance(e, dict) and (e.get("name") or e.get("type")) == stage), None)
    found = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", param)
    if entry is None or not found:
        return None
    try:
        recorded = StageConfig.model_validate(entry)
        recorded.build()
    except Exception:  # noqa: BLE001 - not buildable here as recorded: nothing to compare with
        return None
    if found.group(1) not in _params_model(stage_class(recorded.type)).model_fields:
        return None  # not a param of the stage: what_if names its thresholds
    changed = copy.deepcopy(entry)
    params = changed.setdefault("params", {})
    key, n = found.group(1), found.group(2)
    if n is None:
        params[key] = number
    else:  # dup_n_grams[10]: a mapping of n to its value (or [[n, value], ...])
        given = params.get(key) or {}
        mapping = {int(k): v for k, v in (given.items() if isinstance(given, dict) else given)}
        params[key] = {**mapping, int(n): number}
    try:
        StageConfig.model_validate(changed).build()
    except Exception as exc:  # noqa: BLE001 - the stage's own refusal, named as a rerun would
        return str(exc)
    return None


def dedup_pass_refusal(manifest: dict, stage: str, param: str, number: float | int | None) -> str | None:
    """What the dedup pass's settings model says of run.json's entry with the value, if it refuses
    (``lines.max_removed_word_frac=1.5`` was answered): a recipe's entry as ``refinery run`` checks
    it (``dedup[2].lines.max_removed_word_frac: must be <= 1.0, got 1.5``), ``refinery dedup``'s as
    that command does, named by the pass. ``SECTION.PARAM`` or ``PARAM`` of the pass's own method's
    section; an entry that does not load as recorded is not checked."""
    from pydantic import ValidationError

    from refinery.config import DedupPassConfig
    from refinery.dedup.config import DedupConfig, pass_name
    from refinery.stats.thresholds import DEDUP_SECTIONS, dedup_entries, own_sections
    from refinery.validation import problems

    entries = dedup_entries(manifest)
    index = next((i for i, e in enumerate(entries) if pass_name(e.get("method"), e.get("name")) == stage), None)
    if index is None:
        return None
    standalone = manifest.get("kind") == "dedup"  # `refinery dedup`'s run: its one pass, its own model
    model, at = (DedupConfig, (stage,)) if standalone else (DedupPassConfig, ("dedup", index))
    entry = own_sections(entries[index])
    section, _, key = param.rpartition(".")
    section = section or str(entry.get("method"))
    try:
        recorded = model.model_validate(entry)
    except ValidationError:  # another version's settings: nothing to compare with
        return None
    if section != entry.get("method") or section not in DEDUP_SECTIONS or key not in type(getattr(recorded, section)).model_fields:
        return None  # not a setting of its method: what_if names its thresholds
    try:
        model.model_validate({**entry, section: {**(entry.get(section) or {}), key: number}})
    except ValidationError as exc:
        return "; ".join(problems(exc, model, at=at))
    return None
