"""Third-party loggers kept at WARNING: by the command line in the driver, and by every worker
(local pool or Ray), whose root logger is at the caller's level. Import-light: the command line
imports it before anything else."""

from __future__ import annotations

import logging

#: third-party loggers whose DEBUG/INFO output carries request headers or is noise
NOISY_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "aiobotocore", "s3fs", "fsspec", "filelock",
                 "asyncio", "werkzeug", "ray", "sagemaker")


def quiet_noisy_loggers(level: int = logging.INFO) -> None:
    """:data:`NOISY_LOGGERS` at WARNING, or at ``level`` if higher (a library caller at ERROR). The
    workers did not: each one writing to S3 printed botocore's "Found credentials in environment
    variables" (found by adversarial testing)."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))
