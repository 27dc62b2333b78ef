"""Run statistics: per-shard counters merged into a run funnel."""
