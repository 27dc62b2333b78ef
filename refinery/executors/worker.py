"""What runs inside a worker (process-pool process or Ray task): build the stages once per
process from the pipeline spec, then run shard tasks."""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any

from refinery.executors import ShardOutcome
from refinery.runner import ReaderOptions, ShardRunner, ShardTask

_RUNNERS: dict[str, ShardRunner] = {}


def runner_for(spec: dict[str, Any]) -> ShardRunner:
    """The :class:`ShardRunner` for a pipeline spec (a config dict), built once per process so
    models and blocklists load once."""
    key = json.dumps(spec, sort_keys=True, default=str)
    runner = _RUNNERS.get(key)
    if runner is None:
        from refinery.config import parse_config

        config = parse_config(spec)
        from refinery.stats.collector import StatsOptions

        runner = ShardRunner(
            config.build_stages(),
            ReaderOptions(**config.reader.model_dump()),
            stats_options=StatsOptions(**config.stats.model_dump()),
        )
        _RUNNERS[key] = runner
    return runner


def run_task(spec: dict[str, Any], task: ShardTask, force: bool = False) -> ShardOutcome:
    """Run one shard; a failure is reported as an outcome (with the shard named), never raised,
    so one bad shard cannot take the whole job down."""
    try:
        result = runner_for(spec).run(task, force=force)
        return ShardOutcome(task.shard, "skipped" if result.skipped else "done", result.stats)
    except Exception as exc:  # noqa: BLE001 - reported per shard with its traceback
        logging.getLogger("refinery.worker").error("[shard %s] failed: %s", task.shard, exc)
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return ShardOutcome(task.shard, "failed", error=f"{detail}\n{traceback.format_exc(limit=5)}")


def init_worker_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s pid=%(process)d %(name)s: %(message)s",
    )
