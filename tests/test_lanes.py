"""The set-up's own promises: the fast lane runs no process, server or socket; everything
installs from uv.lock with one pinned uv."""

from __future__ import annotations

import re
import socket
import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import UnmarkedSystemTest, pytest_collection_modifyitems

ROOT = Path(__file__).resolve().parent.parent


def test_outside_the_system_lane_a_process_is_refused_by_name() -> None:
    with pytest.raises(UnmarkedSystemTest, match=r"test_lanes\.py::.* starts a process"):
        subprocess.run(["true"], check=True)


def test_outside_the_system_lane_listening_and_connecting_are_refused() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        with pytest.raises(UnmarkedSystemTest, match="listens on a socket"):
            listener.listen()
    with socket.socket() as client:
        with pytest.raises(UnmarkedSystemTest, match="connects a socket"):
            client.connect(("127.0.0.1", 9))
        with pytest.raises(UnmarkedSystemTest, match="connects a socket"):
            client.connect_ex(("127.0.0.1", 9))


def test_a_socket_pair_is_no_server_and_stays_allowed() -> None:
    left, right = socket.socketpair()  # what an event loop makes for itself
    with left, right:
        left.sendall(b"x")
        assert right.recv(1) == b"x"


@pytest.mark.system
def test_in_the_system_lane_processes_and_servers_run() -> None:
    assert subprocess.run(["true"], check=False).returncode == 0
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname(), timeout=5):
            pass


def test_the_redis_fixtures_put_a_test_in_the_system_lane(request: pytest.FixtureRequest) -> None:
    # This test asks for no Redis fixture and is not marked; the hook marks one that does.
    assert request.node.get_closest_marker("system") is None

    class Item:
        def __init__(self, *fixturenames: str) -> None:
            self.fixturenames = fixturenames
            self.markers: list[str] = []

        def add_marker(self, marker: str) -> None:
            self.markers.append(marker)

    items = [Item("redis_url", "tmp_path"), Item("redis_server"), Item("tmp_path")]
    pytest_collection_modifyitems(items)  # type: ignore[arg-type]
    assert [item.markers for item in items] == [["system"], ["system"], []]


def uv_version() -> str:
    pinned = re.search(r"^UV_VERSION=(\S+)", (ROOT / ".ci" / "uv").read_text(), re.M)
    assert pinned, ".ci/uv pins no uv version"
    return pinned.group(1)


def test_one_uv_version_everywhere() -> None:
    version = uv_version()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["uv"]["required-version"] == f"=={version}"
    for name in ("README.md", "Dockerfile", "CONTRIBUTING.md"):
        found = set(re.findall(r"uv==([0-9][0-9.]*[0-9])", (ROOT / name).read_text()))
        assert found == {version}, f"{name} installs uv {found}, .ci/uv pins {version}"


def test_the_readme_sets_up_from_the_lock_and_tests_with_the_ci_script() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    setup, test = (line.split("#", 1)[0].strip() for line in block.strip().splitlines()[:2])
    assert (
        setup == f"python3 -m pip install uv=={uv_version()} && uv run --locked index-ticker serve"
    )
    assert test == "bash .ci/test"
    script = (ROOT / ".ci" / "test").read_text()
    assert "uv sync --locked" in script and "pip install" not in script


def test_the_image_installs_the_locked_versions() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY .*\buv\.lock\b", dockerfile, re.M)
    syncs = re.findall(r"^RUN uv sync (.*)$", dockerfile, re.M)
    assert syncs and all("--locked" in flags for flags in syncs)
    assert not re.search(r"pip install (?!uv==)", dockerfile), "a pip install beside the lock"


def test_the_lock_holds_every_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {package["name"] for package in lock["package"]}
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {
        re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in declared
    }
    assert names <= locked, names - locked
    # Every locked file is pinned by hash, so an install cannot take other bytes.
    for package in lock["package"]:
        for artifact in [*package.get("wheels", []), *filter(None, [package.get("sdist")])]:
            assert artifact.get("hash", "").startswith("sha256:"), package["name"]
