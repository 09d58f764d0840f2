"""Fixtures of the e2e tier: a real control plane, six fake Nodes and the node agent.

The control-plane binaries are resolved once, right after collection and only when a selected
test uses ``control_plane``: on a clean machine ``controlplane/build.sh`` builds them then (tens
of minutes), outside any test's timeout.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeloom_testkit.controlplane import (
    DEFAULT_NODES,
    ControlPlane,
    controlplane_bin_dir,
    register_nodes,
    start_control_plane,
    wait_for,
)
from edgeloom_testkit.node_agent import NodeAgent

HERE = Path(__file__).parent
BIN_DIR = pytest.StashKey[Path | BaseException]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or not any(
        "control_plane" in getattr(i, "fixturenames", ()) for i in session.items
    ):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("e2e: resolving control-plane binaries (controlplane/build.sh)")
    try:
        session.config.stash[BIN_DIR] = controlplane_bin_dir()
    except Exception as err:  # raised by the fixture, so only the e2e tests error
        session.config.stash[BIN_DIR] = err


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler, with six fake Nodes.

    Stopping it raises if any of its processes is still alive.
    """
    bin_dir = request.config.stash.get(BIN_DIR, None)
    if isinstance(bin_dir, BaseException):
        raise bin_dir
    plane = start_control_plane(tmp_path_factory.mktemp("controlplane"), bin_dir)
    try:
        register_nodes(plane, DEFAULT_NODES)
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def node_agent(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeAgent]:
    """The fake kubelet for all six Nodes: pods scheduled there run as local processes."""
    nodes = [n.name for n in DEFAULT_NODES]
    with NodeAgent(control_plane, nodes, tmp_path_factory.mktemp("nodes")) as agent:
        yield agent


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` with admin rights (for watches and typed reads)."""
    with control_plane.api_client() as api:
        yield api


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace, ready for pods (its default ServiceAccount exists); deleted after."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    wait_for(
        lambda: (
            control_plane.kubectl(
                "get", "serviceaccount", "default", "-n", name, check=False
            ).returncode
            == 0
        ),
        30,
        f"the default ServiceAccount of {name}",
    )
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
