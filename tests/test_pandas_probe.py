"""refinery's own processes (the console script, the local pool's workers) convert values with
pyarrow without importing pandas, which pyarrow's first ``pa.array`` call imports to probe them
(~0.16 s of CPU per process); pyarrow's pandas APIs still work there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from refinery.executors.local import LocalExecutor

ROOT = Path(__file__).resolve().parents[1]
WARC = sorted((ROOT / "data/sample/warc").glob("*.warc*"))[0]


def read_a_warc(path: str) -> dict:
    from refinery.io.warc import WarcReader

    with open(path, "rb") as f:
        rows = sum(b.num_rows for b in WarcReader().read(f, source=path))
    return {"rows": rows, "pandas": "pandas" in sys.modules}


_SCRIPT = f"""
import sys
sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / "tests")!r})
from test_pandas_probe import read_a_warc
if sys.argv[1] == "console":
    from refinery.cli import main
    try:
        main(["--version"], exiting=True)
    except SystemExit:
        pass
print(read_a_warc({str(WARC)!r}))
import pyarrow as pa
print(pa.table({{"x": [1.5, None]}}).to_pandas()["x"].isna().tolist())
"""


def _run(kind: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, kind], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.splitlines()[-2:]


def test_the_console_script_reads_a_warc_without_pandas_and_keeps_to_pandas():
    read, to_pandas = _run("console")
    assert "'pandas': False" in read and "'rows': 0" not in read
    assert to_pandas == "[False, True]"  # pyarrow's own pandas API imports it when asked


def test_a_program_calling_refinery_keeps_pyarrows_pandas_probe():
    read, to_pandas = _run("library")
    assert "'pandas': True" in read and to_pandas == "[False, True]"


def test_pool_workers_read_a_warc_without_pandas():
    with LocalExecutor(2, progress=False) as ex:
        outcomes = ex.map(read_a_warc, [{"path": str(WARC)}], label="read")
    assert [o.status for o in outcomes] == ["done"]
    assert outcomes[0].result["rows"] > 0 and outcomes[0].result["pandas"] is False
