"""Run statistics: per-shard counters, score histograms, languages, removed domains and removed
samples (collected by the runner), merged into a run funnel; terminal tables, run comparison and
a self-contained HTML report. See docs/stats.md."""
