"""No Docker engine runs here, so these check that the Dockerfile, docker-compose.yml and the
CLI agree with each other: every command they run parses with `ldam`'s own parser."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from ldam.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_compose_command_parses_with_the_cli(compose: dict) -> None:
    command = compose["services"]["ldam"]["command"]
    assert command[0] == "ldam"
    args = build_parser().parse_args(command[1:])
    assert args.command == "serve"
    assert args.host == "0.0.0.0"
    assert args.port == 8000
    assert args.device == "cuda"


def test_compose_publishes_on_loopback_only(compose: dict) -> None:
    ports = compose["services"]["ldam"]["ports"]
    assert ports == ["127.0.0.1:8000:8000"]
    # The container port is the one the command listens on.
    command = compose["services"]["ldam"]["command"]
    assert command[command.index("--port") + 1] == ports[0].rsplit(":", 1)[1]


def test_compose_reserves_a_gpu_and_shared_memory(compose: dict) -> None:
    service = compose["services"]["ldam"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert re.fullmatch(r"\d+[gm]b", service["shm_size"])
    assert service["build"]["args"]["DEVICE"] == "cuda"
    # A non-loopback bind needs a token: compose refuses to start without one.
    assert "LDAM_TOKEN:?" in service["environment"]["LDAM_TOKEN"]


def test_dockerfile_cmd_parses_and_matches_exposed_port(dockerfile: str) -> None:
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd is not None
    argv = yaml.safe_load(cmd.group(1))  # a JSON array is valid YAML
    assert argv[0] == "ldam"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve"
    exposed = re.search(r"^EXPOSE (\d+)$", dockerfile, re.M)
    assert exposed is not None and int(exposed.group(1)) == args.port


def test_dockerfile_is_cpu_by_default_with_a_cuda_build_argument(dockerfile: str) -> None:
    assert re.search(r"^ARG DEVICE=cpu$", dockerfile, re.M)
    stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.M)
    assert {"base-cpu", "base-cuda", "frontend"} <= set(stages)
    assert re.search(r"^FROM base-\$\{DEVICE\}$", dockerfile, re.M)


def test_dockerfile_copies_every_package_the_project_declares(dockerfile: str) -> None:
    sources: set[str] = set()
    for line in re.findall(r"^COPY (?!--from)(.*)$", dockerfile, re.M):
        sources.update(shlex.split(line)[:-1])
    assert {"server", "models", "frontend", "pyproject.toml", "setup.py", "README.md"} <= sources
    # The frontend's libraries come from npm with the lock file, never copied by hand.
    assert "npm ci" in dockerfile
    assert (ROOT / "frontend" / "package-lock.json").exists()
