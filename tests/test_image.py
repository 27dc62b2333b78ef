"""The job image is reproducible: base image by digest, dependencies by version and hash from a
lock file, the code installed as a wheel and checked as installed; an immutable ECR tag is
reused for the same clean code and refused (one line) for changed code. ECR is moto's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import pytest

from refinery.launch import package

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/refinery"


def test_dockerfile_builds_from_pinned_base_and_lock_file():
    base = package.base_image()
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", base)
    build = package.build_commands(f"{IMAGE}:abc", package.CodeVersion("a" * 40, False))[0]
    assert f"BASE_IMAGE={base}" in build and f"GIT_SHA={'a' * 40}" in build
    dockerfile = (ROOT / "jobs" / "Dockerfile").read_text()
    froms = [ln for ln in dockerfile.splitlines() if ln.startswith("FROM")]
    assert froms == ["FROM ${BASE_IMAGE}"]  # no floating tag anywhere
    assert "--require-hashes -r /tmp/requirements.lock" in dockerfile and "pip check" in dockerfile
    assert "'site-packages' in refinery.__file__" in dockerfile  # the installed wheel, not the source tree
    lock = (ROOT / package.LOCK_FILE).read_text()
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", lock, re.MULTILINE)
    names = {n.lower().replace("_", "-") for n, _ in pins}
    assert {"ray", "boto3", "pyarrow", "trafilatura", "datatrove"} <= names
    # every pinned requirement carries at least one hash
    entries = [e for e in re.split(r"\n(?=[A-Za-z0-9])", lock) if re.match(r"[A-Za-z0-9]", e)]
    assert entries and all("--hash=sha256:" in e for e in entries)


def test_bad_base_image_file_is_refused(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "base-image.txt").write_text("python:3.11-slim\n")
    with pytest.raises(package.ImageError, match="pinned by digest"):
        package.base_image(tmp_path)


@pytest.fixture()
def ecr(monkeypatch):
    from moto import mock_aws

    for k in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREFINERYTESTKEY05")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "refinery-test-secret-ecr")
    with mock_aws():
        yield boto3.client("ecr", region_name="us-east-1")


def _push(ecr, repo: str, tag: str) -> None:
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1,
                           "digest": "sha256:" + "1" * 64}, "layers": []}
    ecr.put_image(repositoryName=repo, imageManifest=json.dumps(manifest), imageTag=tag)


def test_immutable_ecr_tags_are_reused_or_refused(ecr):
    ecr.create_repository(repositoryName="refinery", imageTagMutability="IMMUTABLE")
    clean, dirty = package.CodeVersion("b" * 40, False), package.CodeVersion("b" * 40, True)
    tag = f"{IMAGE}:{clean.short}"
    assert package.check_tag(tag, clean, ecr) is True  # not there yet: build and push
    _push(ecr, "refinery", clean.short)
    assert package.existing_image(tag, ecr) == (True, True)
    assert package.check_tag(tag, clean, ecr) is False  # same clean code: reuse the image
    with pytest.raises(package.ImageError, match="immutable ECR repository and cannot be overwritten.*commit"):
        package.check_tag(tag, dirty, ecr)
    ecr.create_repository(repositoryName="mutable")
    _push(ecr, "mutable", "x")
    assert package.check_tag(IMAGE.replace("refinery", "mutable") + ":x", dirty, ecr) is True
    assert package.existing_image("docker.io/library/python:3.11", ecr) is None  # not ECR
