"""A warm ClientApp executor for ``flower-supernode --isolation process`` (Flower 1.42).

A SuperNode's SuperExec starts ``flwr-clientapp`` for every message; it imports flwr,
torch and scikit-learn and builds the first optimizer, which imports ``torch._dynamo``
(about 5 s together). Flower 1.42 has no long-lived ClientApp process (its warm executor
pools are for Kubernetes and agent/model/connector tasks only). :func:`run_warm_executor`
is a SuperExec in which a ``multiprocessing`` fork server imports the heavy libraries
once, and each task runs Flower's own ``run_clientapp`` in a fresh child forked from it.
The app's own modules are *not* preloaded, so every message still runs the code of the
run's FAB, exactly as ``flwr-clientapp`` would.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

# Imported once by the warm executor's fork server. Never the app's own packages: each
# task must import them from the run's FAB, as flwr-clientapp does.
WARM_PRELOAD = (
    "numpy",
    "torch",
    "torch._dynamo",
    "torch.optim",
    "yaml",
    "sklearn.datasets",
    "sklearn.model_selection",
    "flwr.app",
    "flwr.clientapp",
    "flwr.supernode.runtime.run_clientapp",
)
OPTIONAL_PRELOAD = ("opacus", "flwr_datasets")  # flwr_datasets: ~3 s (partitioners)


def run_warm_executor(
    runtime_api_address: str,
    *,
    insecure: bool,
    root_certificates_path: str | None,
    parent_pid: int | None,
    poll_interval: float,
) -> None:
    """A SuperExec for ``flower-supernode --isolation process`` with a warm fork server.

    Acquires ClientApp tasks from the SuperNode's Runtime API and runs each with Flower's
    ``run_clientapp`` in a child of a fork server that preloaded :data:`WARM_PRELOAD`.
    Runs until the parent process (the SuperNode) exits or a signal stops it.
    """
    import multiprocessing as mp
    from importlib.util import find_spec

    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.app_utils import start_parent_process_monitor
    from flwr.supercore.constant import TaskType
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    preload = list(WARM_PRELOAD) + [m for m in OPTIONAL_PRELOAD if find_spec(m) is not None]
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(preload)
    if parent_pid is not None:
        start_parent_process_monitor(parent_pid)
    certificates = validate_and_resolve_root_certificates(root_certificates_path, insecure)
    client = _runtime_client(runtime_api_address, insecure, certificates)
    # Start the fork server now (it imports the preloads), not on the first message.
    warmup = ctx.Process(target=time.sleep, args=(0,))
    warmup.start()
    warmup.join()
    logger.info("warm executor ready on %s (preloaded %s)", runtime_api_address, preload)
    children: list[Any] = []
    try:
        while True:
            res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
            if res.HasField("task") and res.token:
                child = ctx.Process(
                    target=run_clientapp,
                    kwargs={
                        "runtime_api_address": runtime_api_address,
                        "token": res.token,
                        "insecure": insecure,
                        "certificates": certificates,
                        "parent_pid": os.getpid(),
                        "runtime_dependency_install": False,
                    },
                    daemon=False,
                )
                child.start()
                children.append(child)
                continue  # another task may be queued: ask again at once
            for child in [c for c in children if not c.is_alive()]:
                child.join()  # reap
                children.remove(child)
            time.sleep(poll_interval)
    finally:
        client.close()
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join(5)


def _runtime_client(address: str, insecure: bool, certificates: Any) -> Any:
    """A client of the SuperNode's Runtime API, as Flower's own SuperExec makes it."""
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=insecure,
        root_certificates=certificates,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )


def warm_executor_main(argv: Sequence[str]) -> int:
    """Command line of the warm executor (started by ``fedkd.deploy.supernode.run_supernode``)."""
    parser = argparse.ArgumentParser(prog="fedkd-warm-executor")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--poll-interval", type=float, default=0.2)
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise

    def _on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    with contextlib.suppress(KeyboardInterrupt):
        run_warm_executor(
            args.runtime_api_address,
            insecure=args.insecure,
            root_certificates_path=args.root_certificates,
            parent_pid=args.parent_pid,
            poll_interval=args.poll_interval,
        )
    return 0
