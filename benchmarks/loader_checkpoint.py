"""The cost of a checkpoint's loader state after iterating in DataLoader workers, in a large heap.

    python benchmarks/loader_checkpoint.py [--objects 5000000] [--calls 20]

Tokenizes the bundled real Common Crawl documents (GPT-2) once, iterates
``DataLoader(torch_dataset(TokenLoader(...)), batch_size=None, num_workers=2)`` for 5 batches
(the DataLoader and its iterator stay alive, as in a training loop), then, with ``--objects`` live
Python containers on the heap (a training process holds millions: model code, configs, datasets),
times ``ds.state_dict(batches=5)``, the call a training loop makes at every checkpoint. That call
refuses a state an ``in_order=False`` DataLoader made inexact; it used to find such a DataLoader by
scanning the heap (``gc.get_referrers``), whose cost grows with the heap. Prints CPU seconds per
call (median and max of ``--calls``; this thread's CPU time, robust to other load on the machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tokens import ROOT, build_run  # benchmarks/tokens.py: the same corpus

sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=5_000_000, help="live Python containers on the heap")
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()

    from torch.utils.data import DataLoader

    import refinery
    from refinery.loader import TokenLoader, torch_dataset
    from refinery.tokens.writer import tokenize_run

    with tempfile.TemporaryDirectory() as tmp:
        build_run(Path(tmp) / "run", 1)
        tokenize_run(str(Path(tmp) / "run"), str(Path(tmp) / "tokens"), "gpt2", progress=False)
        ds = torch_dataset(TokenLoader(str(Path(tmp) / "tokens"), seq_len=127, batch_size=8, seed=0))
        dl = DataLoader(ds, batch_size=None, num_workers=2)
        it = iter(dl)
        for _ in range(5):
            next(it)
        heap = [[i] for i in range(args.objects)]  # gc-tracked containers, as a large program's
        times = []
        for _ in range(args.calls):
            start = time.thread_time()  # this thread's CPU time (ns clock), the loader's threads aside
            ds.state_dict(batches=5)
            times.append(time.thread_time() - start)
        del it, dl, heap
    print(f"refinery from {Path(refinery.__file__).parent}")
    print(f"ds.state_dict(batches=5) with {args.objects:,} live containers: CPU "
          f"{statistics.median(times) * 1e3:.3f} ms median, {max(times) * 1e3:.3f} ms max over {args.calls} calls")


if __name__ == "__main__":
    t0 = time.monotonic()
    main()
    print(f"({time.monotonic() - t0:.0f} s)")
