"""The code version that goes into a job: git SHA (tags, environment, image tag) and the container
image build from ``jobs/Dockerfile`` -- run where a Docker engine answers, printed otherwise."""

from __future__ import annotations

import base64
import logging
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("refinery.launch")

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = "jobs/Dockerfile"
_ECR = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/")


@dataclass(frozen=True)
class CodeVersion:
    sha: str  # full SHA, or "unknown" outside a git checkout
    dirty: bool  # uncommitted changes: the image may not match the SHA

    @property
    def short(self) -> str:
        return self.sha[:12]

    def describe(self) -> str:
        return self.sha + ("-dirty" if self.dirty else "")


def code_version(root: Path = ROOT) -> CodeVersion:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return CodeVersion("unknown", True)
    return CodeVersion(sha, dirty)


def image_uri(image: str, version: CodeVersion) -> str:
    """``image`` as given when it has a tag or digest; else tagged with the code's short SHA."""
    last = image.rsplit("/", 1)[-1]
    if "@" in last or ":" in last:
        return image
    tag = version.short if version.sha != "unknown" else "latest"
    return f"{image}:{tag}{'-dirty' if version.dirty and version.sha != 'unknown' else ''}"


def docker_available() -> bool:
    """True when a Docker client *and* engine answer (a client alone cannot build)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def build_commands(image: str, version: CodeVersion, root: Path = ROOT) -> list[list[str]]:
    """``docker build`` of jobs/Dockerfile (code at this SHA baked in) and ``docker push``."""
    return [
        ["docker", "build", "-f", str(root / DOCKERFILE), "--build-arg", f"GIT_SHA={version.describe()}",
         "-t", image, str(root)],
        ["docker", "push", image],
    ]


def ecr_login_command(image: str) -> str | None:
    """The shell command that logs Docker in to the image's ECR registry (None if not ECR)."""
    m = _ECR.match(image)
    if not m:
        return None
    registry = image.split("/", 1)[0]
    return (f"aws ecr get-login-password --region {m['region']} | "
            f"docker login --username AWS --password-stdin {registry}")


def _ecr_login(image: str) -> None:
    m = _ECR.match(image)
    if not m:
        return
    import boto3

    auth = boto3.client("ecr", region_name=m["region"]).get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)
    subprocess.run(["docker", "login", "--username", user, "--password-stdin", auth["proxyEndpoint"]],
                   input=password.encode(), check=True, capture_output=True)


def build_and_push(image: str, version: CodeVersion, run: bool) -> list[str]:
    """Build and push the image when ``run`` (Docker must answer); return the commands as shell
    lines either way, for the user to see or to run elsewhere."""
    commands = build_commands(image, version)
    lines = [c for c in [ecr_login_command(image)] if c] + [shlex.join(c) for c in commands]
    if run:
        _ecr_login(image)
        for cmd in commands:
            log.info("$ %s", shlex.join(cmd))
            subprocess.run(cmd, check=True)
    return lines
