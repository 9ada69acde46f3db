"""Real deployment over 127.0.0.1: SuperLink with TLS and SuperNode authentication,
three ``fedkd supernode`` processes on their own data, runs submitted with ``flwr run``.

One SuperLink serves the whole module (its start and the key registrations cost ~15 s
on two cores); each test starts its own SuperNodes with the registered keys and stops
them. Every process is stopped in a ``finally`` and checked gone.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fedkd.server.app import STACKS
from fedkd.simulations.runner import simulate

from fedkd.clientdata import client_data
from fedkd.clientstate import ClientState
from fedkd.config import from_dict, load_config
from fedkd.privacy.accounting import epsilon
from fedkd.privacy.client import steps_per_round
from fedkd.privacy.dpsgd import DPSGDState, epsilon_of
from fedkd.privacy.ledger import Release

from .cluster import LocalDeployment, Proc, wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "simulations" / "configs" / "quickstart.yaml"
NODES = ("node0", "node1", "node2")
FAST = "rounds=2;clients.num_clients=3;distill.epochs=5;runtime.round_timeout=60"


def _gone(proc: Proc) -> bool:
    """True when no process of ``proc``'s process group is left."""
    return proc.wait_group_gone(10.0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    """A SuperLink (TLS, node auth) with ``NODES`` registered; no SuperNode yet."""
    root = tmp_path_factory.mktemp("deploy")
    dep = LocalDeployment(root=root, app_dir=REPO, heartbeat_interval=10.0)
    dep.env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = "0.2"  # the ServerApp starts sooner
    try:
        dep.make_keys([*NODES, "stranger"])
        dep.start_superlink()
        for name in NODES:
            dep.register(name)
        yield dep
    finally:
        dep.close()
        leftovers = [p.name for p in dep.procs if not _gone(p)]
        assert not leftovers, f"processes left running: {leftovers}"


@pytest.fixture
def nodes(cluster: LocalDeployment) -> Iterator[dict[str, Proc]]:
    """SuperNodes started by a test; stopped (and checked gone) after it."""
    started: dict[str, Proc] = {}
    yield started
    for proc in started.values():
        proc.stop()
    assert all(_gone(p) for p in started.values())


def _device_files(root: Path) -> list[Path]:
    """Each partition of the 3-client quickstart as a device's own npz file."""
    cfg = load_config(QUICKSTART, ["clients.num_clients=3"])
    paths = []
    for i in range(3):
        d = client_data(cfg.data, cfg.seed, 3, i)
        path = root / f"device{i}.npz"
        np.savez(path, x_train=d.x_private, y_train=d.y_private)
        paths.append(path)
    return paths


def _rows(run: Path) -> list[float]:
    return [r["student_accuracy"] for r in json.loads((run / "metrics.json").read_text())["rounds"]]


def _wait_done(dep: LocalDeployment, out: Path, timeout: float, nodes: dict[str, Proc]) -> dict:
    def done() -> bool:
        return (out / "DONE").exists()

    try:
        wait_for(done, timeout, what=f"{out}/DONE")
    except TimeoutError as err:
        logs = "\n".join(
            f"--- {p.name}\n{p.text()[-1500:]}" for p in [dep.procs[0], *nodes.values()]
        )
        if dep.run_ids:
            server = dep.flwr("log", str(dep.run_ids[-1]), dep.connection, "--show", timeout=30)
            logs += f"\n--- ServerApp\n{(server.stdout + server.stderr)[-3000:]}"
        # Ask every ServerApp process for its Python stacks (server/app.py registers SIGUSR1).
        subprocess.run(["pkill", "-USR1", "-f", "flwr-serverapp"], check=False)
        time.sleep(1.0)
        stacks = out / STACKS
        if stacks.exists():
            logs += f"\n--- ServerApp stacks\n{stacks.read_text()[-6000:]}"
        raise AssertionError(f"{err}\n{logs}") from None
    return json.loads((out / "metrics.json").read_text())


def test_three_nodes_tls_auth_two_rounds(cluster: LocalDeployment, nodes, tmp_path: Path) -> None:
    files = _device_files(tmp_path)
    for i, name in enumerate(NODES):
        nodes[name] = cluster.start_supernode(
            name, f"client-id={i} data-path='{files[i]}' state-dir='{tmp_path / name}'"
        )
    out = tmp_path / "run"
    cluster.run(f"out-dir='{out}' overrides='{FAST}'")
    metrics = _wait_done(cluster, out, 120, nodes)
    rows = metrics["rounds"]
    assert [r["round"] for r in rows] == [1, 2]
    assert all(r["clients"] == 3 and r["dropped"] == 0 for r in rows)
    # Same data, ids and seeds as the in-process simulation: the same student.
    sim = simulate(
        load_config(QUICKSTART, [*FAST.split(";"), "runtime.backend=inprocess"]), tmp_path / "sim"
    )
    assert [r["student_accuracy"] for r in rows] == [
        pytest.approx(r, abs=1e-9) for r in _rows(tmp_path / "sim")
    ]
    assert sim["rounds_completed"] == 2
    assert all(r["bytes_up"] > 0 for r in rows)
    for i, name in enumerate(NODES):  # durable client state on each device
        assert sorted(p.name for p in (tmp_path / name / f"client-{i}").iterdir()) == [
            "round-000001.pt",
            "round-000002.pt",
        ]
    assert "Uvicorn running on https://" in cluster.procs[0].text()  # TLS


def test_unregistered_key_is_refused(cluster: LocalDeployment, nodes, tmp_path: Path) -> None:
    nodes["stranger"] = proc = cluster.start_supernode("stranger", "partition-id=0")
    wait_for(lambda: not proc.alive(), 60, what="refused SuperNode exit")
    assert proc.popen.returncode != 0
    log = proc.text()
    assert "Exit Code: 305" in log and "Failed to activate SuperNode" in log
    assert "Attempted to register SuperNode with public key" in cluster.procs[0].text()


def test_bad_data_path_gives_an_error_reply_and_the_run_completes(
    cluster: LocalDeployment, nodes, tmp_path: Path
) -> None:
    files = _device_files(tmp_path)
    missing = tmp_path / "no-such-dir"
    for i, name in enumerate(NODES):
        path = files[i] if i < 2 else missing
        nodes[name] = cluster.start_supernode(name, f"client-id={i} data-path='{path}'")
    out = tmp_path / "run"
    cluster.run(f"out-dir='{out}' overrides='{FAST}'")
    rows = _wait_done(cluster, out, 120, nodes)["rounds"]
    assert [r["round"] for r in rows] == [1, 2]
    assert all(r["clients"] == 2 for r in rows)  # the run went on with the other nodes
    assert f"node 2: {missing}: data-path not found" in nodes["node2"].text()


def test_a_device_floor_refuses_a_weaker_request_over_a_real_superlink(
    cluster: LocalDeployment, nodes, tmp_path: Path
) -> None:
    # Prepare: device 2 requires DP-SGD with σ >= 1; the server asks for none at all.
    files = _device_files(tmp_path)
    floor = "require-mechanisms='dpsgd' min-noise-multiplier=1.0"
    for i, name in enumerate(NODES):
        extra = floor if i == 2 else ""
        nodes[name] = cluster.start_supernode(
            name, f"client-id={i} data-path='{files[i]}' state-dir='{tmp_path / name}' {extra}"
        )
    out = tmp_path / "run"
    # Execute
    cluster.run(f"out-dir='{out}' overrides='{FAST}'")
    rows = _wait_done(cluster, out, 120, nodes)["rounds"]
    # Assert: device 2 was refused every round, trained nothing and saved no state.
    assert [r["round"] for r in rows] == [1, 2]
    assert all(r["clients"] == 2 and r["dropped"] == 1 for r in rows)
    log = nodes["node2"].text()
    assert "refused by the device's privacy floor: privacy.mechanisms = []" in log
    assert "require_mechanisms = ['dpsgd']" in log
    assert not (tmp_path / "node2" / "client-2").exists()


def test_supernode_killed_and_restarted_keeps_its_epsilon(
    cluster: LocalDeployment, nodes, tmp_path: Path
) -> None:
    overrides = (
        "rounds=6;clients.num_clients=3;distill.epochs=10;clients.local_epochs=1;"
        "runtime.round_timeout=20;privacy.mechanisms=[dpsgd];"
        "privacy.dpsgd.noise_multiplier=1.0"
    )
    cfg = from_dict({}, [s for s in overrides.split(";")])

    def config(i: int) -> str:
        return f"partition-id={i} state-dir='{tmp_path / NODES[i]}'"

    for i, name in enumerate(NODES):
        nodes[name] = cluster.start_supernode(name, config(i))
    out = tmp_path / "run"
    cluster.run(f"out-dir='{out}' overrides='{overrides}'")
    state_dir = tmp_path / "node1" / "client-1"

    def saved() -> tuple[int, DPSGDState, float]:
        newest = sorted(state_dir.glob("round-*.pt"))[-1]
        state = ClientState.from_bytes(newest.read_bytes())
        dp = DPSGDState.from_dict(state.dpsgd)
        return state.round, dp, epsilon_of(dp, cfg.privacy.delta)

    wait_for(lambda: len(list(state_dir.glob("round-*.pt"))) >= 1, 120, nodes["node1"], "round 1")
    nodes["node1"].kill()  # a crash: SIGKILL to the SuperNode and all its processes
    _, dp_before, eps_before = saved()
    assert eps_before > 0
    nodes["node1"] = cluster.rejoin("node1", config(1))
    rows = _wait_done(cluster, out, 150, nodes)["rounds"]

    assert [r["round"] for r in rows] == [1, 2, 3, 4, 5, 6]
    # Until the SuperLink sees the crash (<= 2 heartbeats) and the node rejoins, its
    # rounds get error replies and go on without it. After it rejoined, every reply is
    # accepted, although the server drops any reply whose dpsgd-epsilon is below what
    # that client reported before.
    back = min(r["round"] for r in rows if r["round"] > 1 and r["clients"] == 3)
    assert all(r["dropped"] == 0 and r["clients"] == 3 for r in rows if r["round"] >= back)
    round_after, dp_after, eps_after = saved()
    assert round_after == 6 and eps_after > eps_before
    # Resumed, not reset: the device continued its saved accountant and trained every
    # round it answered after rejoining.
    ledger = json.loads((out / "ledger.json").read_text())["releases"]
    mine = [r for r in ledger if r["subject"] == "client-1"]
    per_round = steps_per_round(cfg, mine[0]["population"])
    answered_after = sum(1 for r in rows if r["round"] >= back)
    assert dp_after.steps >= dp_before.steps + per_round * answered_after
    # The server charges at send and never lowers a charge: whatever the crash's timing
    # (rounds charged to a dead node, a reply lost after training), the ledger can only
    # over-count the device's own steps, and so its ε is at least the device's.
    assert sum(r["steps"] for r in mine) >= dp_after.steps
    assert all(r["relation"] == "replace_one" for r in mine)
    releases = [Release.from_dict(r) for r in mine]
    assert epsilon(releases, cfg.privacy.delta) >= eps_after - 1e-12
    eps = [r["epsilon_example"] for r in rows]
    assert eps == sorted(eps)
