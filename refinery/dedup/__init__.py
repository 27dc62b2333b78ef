"""Corpus-scale deduplication: MinHash (fuzzy), exact text, URL and exact-substring dedup.

Entry points: :func:`refinery.dedup.driver.run_dedup` (and the ``refinery dedup`` command in
:mod:`refinery.cli_dedup`) runs the passes over a run directory's ``kept/`` shards and writes a new
run directory; the removal stages live in :mod:`refinery.stages.dedup`. Building blocks:

- :mod:`~refinery.dedup.text` -- normalization, vectorized word / shingle hashing;
- :mod:`~refinery.dedup.minhash` -- signatures (rensa or numpy backends) and LSH band keys;
- :mod:`~refinery.dedup.shuffle` -- partitioned Parquet files exchanged between passes;
- :mod:`~refinery.dedup.components` -- connected components (large-star / small-star);
- :mod:`~refinery.dedup.substring` -- EXACTSUBSTR-CUT with a depth-limited suffix array;
- :mod:`~refinery.dedup.passes` / :mod:`~refinery.dedup.driver` -- the task functions and their chaining,
  run on the one executor layer (:mod:`refinery.executors`).

See ``docs/dedup.md`` for the design, parameters and memory model.
"""
