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
#: an ECR registry of any partition and endpoint kind (FIPS, dual-stack); account and region named
_ECR = re.compile(r"^(?P<account>\d{12})\.dkr[.-]ecr(-fips)?\.(?P<region>[a-z0-9-]+)\.(amazonaws\.com(\.cn)?|on\.aws|"
                  r"c2s\.ic\.gov|sc2s\.sgov\.gov)/")


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


def is_ecr(image: str) -> bool:
    """Whether ``image`` names a repository in Amazon ECR (with a name after the registry)."""
    m = _ECR.match(image)
    return bool(m) and bool(image[m.end():].strip("/"))


def image_region(image: str) -> str | None:
    """The region of the ECR registry ``image`` is in (None: not an ECR image)."""
    m = _ECR.match(image)
    return m["region"] if m else None


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


BASE_IMAGE_FILE = "jobs/base-image.txt"
LOCK_FILE = "jobs/requirements.lock"


def image_library_versions(root: Path = ROOT) -> dict[str, str] | None:
    """The library versions the job image holds (the pins of ``jobs/requirements.lock``, from
    which it is built), or None without a lock file. A launch plans with these, as the instances
    will: the launching machine's own versions would fingerprint another run."""
    path = root / LOCK_FILE
    if not path.is_file():
        return None
    from refinery.plan import read_lock_versions

    return read_lock_versions(path.read_text())


class ImageError(ValueError):
    """The image cannot be built or pushed as asked (the message says why and what to do)."""


def base_image(root: Path = ROOT) -> str:
    """The base image, pinned by digest (``jobs/base-image.txt``): a floating tag such as
    ``python:3.11-slim`` would give two builds of the same SHA different systems."""
    path = root / BASE_IMAGE_FILE
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1 or not re.search(r"@sha256:[0-9a-f]{64}$", lines[0]):
        raise ImageError(f"{path}: expected one base image pinned by digest (NAME@sha256:<64 hex>), got {lines}")
    return lines[0]


def build_commands(image: str, version: CodeVersion, root: Path = ROOT) -> list[list[str]]:
    """``docker build`` of jobs/Dockerfile (base image by digest, dependencies from the lock file,
    code at this SHA baked in as a wheel) and ``docker push``."""
    return [
        ["docker", "build", "-f", str(root / DOCKERFILE), "--build-arg", f"BASE_IMAGE={base_image(root)}",
         "--build-arg", f"GIT_SHA={version.describe()}", "-t", image, str(root)],
        ["docker", "push", image],
    ]


def existing_image(image: str, ecr: object | None = None) -> tuple[bool, bool] | None:
    """For an ECR image: ``(tag exists, repository is immutable)``; None for other registries or
    when ECR cannot be asked."""
    m = _ECR.match(image)
    last = image.rsplit("/", 1)[-1]
    if not m or ":" not in last or "@" in last:
        return None
    repository = image[m.end():].rsplit(":", 1)[0]
    tag = image.rsplit(":", 1)[1]
    from botocore.exceptions import BotoCoreError, ClientError

    if ecr is None:
        import boto3

        ecr = boto3.client("ecr", region_name=m["region"])
    try:
        repo = ecr.describe_repositories(repositoryNames=[repository])["repositories"][0]
        immutable = repo.get("imageTagMutability", "MUTABLE").startswith("IMMUTABLE")
        try:
            ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
            return True, immutable
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ImageNotFoundException":
                return False, immutable
            raise
    except (ClientError, BotoCoreError) as exc:
        log.debug("cannot ask ECR about %s: %s", image, exc)
        return None


def check_tag(image: str, version: CodeVersion, ecr: object | None = None) -> bool:
    """Whether to build and push ``image``: False when an immutable ECR repository already holds
    this tag for clean code (same SHA, same image: reuse it); an error when the tag cannot be
    overwritten but the code differs from its SHA (uncommitted changes)."""
    state = existing_image(image, ecr)
    if state is None or not state[0]:
        return True
    _exists, immutable = state
    if not immutable:
        return True
    if version.dirty or version.sha == "unknown":
        raise ImageError(f"{image} already exists in an immutable ECR repository and cannot be overwritten, but "
                         "this checkout has uncommitted changes: commit them (a new SHA gives a new tag) or "
                         "pass another --image tag")
    log.info("%s already exists in an immutable ECR repository: reusing it (same code SHA)", image)
    return False


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
    # the image's own registry: a dual-stack or FIPS image pushes there, not to the proxy endpoint
    subprocess.run(["docker", "login", "--username", user, "--password-stdin", image.split("/", 1)[0]],
                   input=password.encode(), check=True, capture_output=True)


def build_and_push(image: str, version: CodeVersion, run: bool) -> list[str]:
    """Build and push the image when ``run`` (Docker must answer); return the commands as shell
    lines either way, for the user to see or to run elsewhere."""
    commands = build_commands(image, version)
    lines = [c for c in [ecr_login_command(image)] if c] + [shlex.join(c) for c in commands]
    if run and check_tag(image, version):
        _ecr_login(image)
        for cmd in commands:
            log.info("$ %s", shlex.join(cmd))
            done = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
            if done.returncode:
                if "already exists" in (done.stderr or "") and "immutable" in (done.stderr or "").lower():
                    raise ImageError(f"{image}: the tag already exists in an immutable repository; commit your "
                                     "changes for a new SHA tag or pass another --image tag")
                raise ImageError(f"{shlex.join(cmd[:2])} failed ({done.returncode}): "
                                 f"{(done.stderr or '').strip().splitlines()[-1:] or ''}")
    return lines
