"""Session fixtures for the classifier tests: each real model is trained once per test session
(a few seconds each) from /work/shared/data, into a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

needs_data = pytest.mark.skipif(not (SHARED_DATA / "toxicity").is_dir(), reason=f"{SHARED_DATA} is absent")


@pytest.fixture(scope="session")
def toxicity_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(model directory, report) of the toxicity recipe with its default hyperparameters."""
    from refinery.classifiers import toxicity

    if not (SHARED_DATA / "toxicity").is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    out = tmp_path_factory.mktemp("models-toxicity")
    return out, toxicity.train(SHARED_DATA, out, quantize=False)


@pytest.fixture(scope="session")
def quality_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from refinery.classifiers import quality

    if not (SHARED_DATA / "quality").is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    out = tmp_path_factory.mktemp("models-quality")
    return out, quality.train(SHARED_DATA, out, quantize=False)
