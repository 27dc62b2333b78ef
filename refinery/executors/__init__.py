"""One executor layer for every pass: ``local`` (process pool, the default) and ``ray``.

See :mod:`refinery.executors.base` for the contract (task functions over small task dicts, one
retry policy, one progress display) and :func:`make_executor` to build one from a config.
"""

from refinery.executors.base import Executor, TaskError, TaskOutcome, make_executor

#: the outcome of one shard task (kept name: a shard outcome is a task outcome)
ShardOutcome = TaskOutcome

__all__ = ["Executor", "ShardOutcome", "TaskError", "TaskOutcome", "make_executor"]
