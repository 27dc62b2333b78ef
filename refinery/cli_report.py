"""CLI command ``refinery report RUN_DIR``: a self-contained HTML report of a run."""

from __future__ import annotations

import errno
from typing import Optional

import typer
from refinery.cli_common import VERBOSE_HELP, check_uris, fail, setup_logging
from refinery.cli_common import out as console


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        run_dir: str = typer.Argument(..., help="a run's output directory (local or s3://)"),
        out: Optional[str] = typer.Option(
            None, "--out", "-o", metavar="URI", help="where to write the HTML (default RUN_DIR/report.html; local or s3://)"
        ),
        samples: int = typer.Option(8, "--samples", min=0, help="removed documents shown per stage and reason"),
        compare: Optional[str] = typer.Option(
            None, "--compare", metavar="RUN_B",
            help="compare with another run: funnels, histograms and config side by side "
                 "(default output RUN_DIR/compare-<RUN_B name>.html)",
        ),
        verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
    ) -> None:
        """Write a self-contained HTML report of a run, or of two runs side by side.

        It shows the funnel, score histograms with thresholds, languages, top removed domains and
        sampled removed documents; with --compare RUN_B, the two runs side by side."""
        from refinery.io.fs import StorageError
        from refinery.io.parquet import ShardReadError
        from refinery.stats.report import write_compare_report, write_report

        if verbose:  # refinery's debug logs (an error's traceback: main)
            setup_logging(True)
        check_uris(RUN_DIR=run_dir, **{"--out": out, "--compare": compare})
        if out and _is_local_dir(out):  # it said "[Errno 21] Is a directory: cannot write run in ." (h133)
            fail(f"--out {out} is a directory: give the report's file name, e.g. {out.rstrip('/')}/report.html")

        try:
            if compare:
                uri = write_compare_report(run_dir, compare, out)
            else:
                uri = write_report(run_dir, out, samples_per_reason=samples)
        except (FileNotFoundError, StorageError, ShardReadError, ValueError) as exc:
            fail(exc)
        except OSError as exc:
            if out is None and exc.errno in _NOT_WRITABLE:  # a run kept on a read-only disk (session 45)
                fail(f"{exc}; give --out FILE to write the report elsewhere")
            raise
        console.print(f"report written to {uri}")


#: a directory the report cannot be written into: read-only, or not ours
_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _is_local_dir(uri: str) -> bool:
    import os

    from refinery.io import fs

    return not fs.is_s3(uri) and os.path.isdir(uri)
