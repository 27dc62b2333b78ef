"""Child process that trains (and optionally quantizes) one fastText model; see
:func:`refinery.classifiers.common.train_fasttext` for why training runs in its own process.

    python -m refinery.classifiers._fasttext_train '{"input": ..., "params": {...}, "bin": ..., "ftz": ..., "quantize": {...}}'
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    import fasttext

    job = json.loads(argv[0])
    try:
        model = fasttext.train_supervised(job["input"], **job["params"])
        model.save_model(job["bin"])
        if job.get("ftz"):
            model.quantize(input=job["input"], **job["quantize"])
            model.save_model(job["ftz"])
    except RuntimeError as exc:  # "Encountered NaN." and friends: report, don't dump a traceback
        print(f"fastText: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
