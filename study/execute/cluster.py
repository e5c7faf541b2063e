"""Connecting to Ray (embedded or a cluster), and checking resources and storage against it."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import socket
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from study import ray_internals
from study.errors import StudyError
from study.execute.sigterm import Terminated, mark_terminated, stop_on_sigterm
from study.ray_internals import EMBEDDED_INIT, stop_autoscaler_monitor
from study.store.faults import lost_experiment_folder, storage_fault
from study.store.fs import Storage

CONNECT_TIMEOUT_S = 3.0
PROBE_TIMEOUT_S = 120.0  # each node must answer the shared-storage probe within this
_PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: study/execute/ is two below
SHIPPED_PACKAGES = ("study", "trainables", "search_spaces")  # what every node must import

# Quiet workers and Tune's own console output; our progress line is the output.
QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
}
# Without --verbose: a trial whose result Tune never fetched (its loop ended at a storage fault
# or an interrupt) would print its traceback as Ray frees it; Tune reports trial errors itself.
DRIVER_QUIET_ENV = {"RAY_IGNORE_UNHANDLED_ERRORS": "1"}
# The embedded Ray binds to 127.0.0.1 only when this is 0; must be set before `import ray`.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` of a cluster's head (from `ray start --head --port=PORT`)."""
    host, sep, port = address.strip().rpartition(":")
    if address.startswith("ray://"):
        raise StudyError(
            f"--address {address}: Ray Client (ray://) is not supported; give the head's "
            "GCS address host:port, as printed by `ray start --head`"
        )
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StudyError(f"--address {address!r}: expected host:port, e.g. 10.0.0.5:6379")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast (seconds, not minutes) when nothing listens at the cluster address."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            speaks_grpc = _answers_http2(conn, timeout)
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise StudyError(
            f"--address {address}: cannot reach a Ray cluster there ({reason} within "
            f"{timeout:.0f} s); start one with `ray start --head --port={port}` or fix the address"
        ) from None
    if not speaks_grpc:
        # Before, `ray.init` retried against such a port for ever (and ignored SIGTERM).
        raise StudyError(
            f"--address {address}: something listens there but it is not a Ray cluster's GCS "
            "(it does not speak gRPC); give the address `ray start --head` printed"
        )


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type SETTINGS


def _answers_http2(conn: socket.socket, timeout: float) -> bool:
    """Whether the server answers an HTTP/2 connection preface with a SETTINGS frame, as
    Ray's GCS (a gRPC server) does before any call or auth; an HTTP/1 server, or a silent
    one, does not. TLS clusters (RAY_USE_TLS) expect a TLS handshake first: not probed."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return True
    conn.settimeout(timeout)
    try:
        conn.sendall(_HTTP2_PREFACE + _EMPTY_SETTINGS)
        header = b""
        while len(header) < 9:
            chunk = conn.recv(9 - len(header))
            if not chunk:
                break
            header += chunk
    except OSError:
        return False
    return len(header) == 9 and header[3] == 0x04


@dataclass
class Connection:
    """A Ray connection; `owned` when this process started it and must shut it down."""

    address: str | None
    owned: bool

    def close(self) -> None:
        import ray

        if self.owned and ray.is_initialized():
            if self.address is None:
                stop_autoscaler_monitor()
            ray.shutdown()


def runtime_env() -> dict[str, Any]:
    """Ship the project's own packages to every node; dependencies must be installed there."""
    return {
        "py_modules": [str(_PROJECT_ROOT / name) for name in SHIPPED_PACKAGES],
        "excludes": ["__pycache__", "*.pyc"],
        "env_vars": dict(QUIET_ENV),
    }


def connect(address: str | None, verbose: bool = False) -> Connection:
    """Attach to `address`, reuse an initialised Ray (tests), or start an embedded one."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return Connection(address=address, owned=False)
    common: dict[str, Any] = {
        "log_to_driver": verbose,
        # ERROR still shows trial failures; --verbose shows Ray's warnings and info too.
        "logging_level": logging.INFO if verbose else logging.ERROR,
    }
    if not verbose:
        for key, value in DRIVER_QUIET_ENV.items():
            os.environ.setdefault(key, value)
    try:
        if address:
            ray.init(address=address, runtime_env=runtime_env(), **common)
        else:
            preload = _import_in_background("study.execute.tuner")
            try:
                # address="local": never attach to a cluster a stale `ray_current_cluster` file
                # names (one left by a dead cluster would make a plain ray.init() try to).
                ray.init(address="local", include_dashboard=False, **EMBEDDED_INIT, **common)
            finally:
                preload.join()
    except SystemExit as exc:  # Ray's own SIGTERM handler, during ray.init
        # (the driver's exits 15; an embedded head's, once Ray's processes are killed, 1)
        if (
            exc.code not in (signal.SIGTERM, 1)
            or threading.current_thread() is not threading.main_thread()
        ):
            raise
        mark_terminated()
        raise Terminated from None
    # ray.init replaced the SIGTERM handler (the driver's sys.exit, the embedded head's
    # kill-everything-then-exit): SIGTERM must stop the study as Ctrl+C does.
    stop_on_sigterm()
    if not verbose:
        _hide_logged_storage_faults()
    return Connection(address=address, owned=True)


class _StorageFaultRecords(logging.Filter):
    """Drops Ray's and Tune's log records whose traceback is a storage fault: the service
    reports the fault as one line (a trial's own fault, which Tune logs before it retries the
    trial, is raised in the driver by study.execute.storage_guard)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return storage_fault(exc) is None and not lost_experiment_folder(exc)


def _hide_logged_storage_faults() -> None:
    for handler in logging.getLogger("ray").handlers:
        if not any(isinstance(f, _StorageFaultRecords) for f in handler.filters):
            handler.addFilter(_StorageFaultRecords())


def _import_in_background(module: str) -> threading.Thread:
    """Import `module` in a thread. Starting an embedded Ray leaves a core idle while
    `ray.init` waits on Ray's daemons without the GIL; Tune's import, which the study needs
    next and which is shorter than that wait, fits there. An error is left for the study's
    own import to raise."""

    def target() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module(module)

    thread = threading.Thread(target=target, name=f"import {module}", daemon=True)
    thread.start()
    return thread


def check_ray_version() -> None:
    """StudyError unless the installed Ray is in the tested range (study.ray_internals)."""
    problem = ray_internals.ray_version_problem()
    if problem:
        raise StudyError(problem)


def cluster_cpus() -> float:
    """The connected cluster's CPUs."""
    import ray

    return ray.cluster_resources().get("CPU", 1.0)


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def check_resources(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """Refuse resources no node can give (Tune would otherwise wait for ever)."""
    nodes = alive_nodes()
    best_cpu = max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0)
    best_gpu = max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0)
    fits = [
        n
        for n in nodes
        if n["Resources"].get("CPU", 0.0) >= cpus_per_trial
        and n["Resources"].get("GPU", 0.0) >= gpus_per_trial
    ]
    if not fits:
        raise StudyError(
            f"no node can run a trial with --cpus-per-trial {cpus_per_trial:g} "
            f"--gpus-per-trial {gpus_per_trial:g}: the largest node has {best_cpu:g} CPUs "
            f"and {best_gpu:g} GPUs (allowed: up to those)"
        )


def check_shared_storage(storage: Storage) -> None:
    """On several nodes, every node must see the same local storage; URIs are shared."""
    nodes = alive_nodes()
    if len(nodes) < 2 or not storage.is_local:
        return
    if not os.path.isdir(storage.root):
        raise StudyError(
            f"--storage {storage.root} does not exist; on a multi-node cluster it must be a "
            "shared directory mounted at the same path on every node, or a URI (s3://, gs://)"
        )
    probe = str(PurePosixPath(storage.root, f".ilstudy-probe-{uuid.uuid4().hex[:12]}"))
    try:
        Path(probe).touch()
        blind = _nodes_not_seeing(probe, nodes)
    finally:
        Path(probe).unlink(missing_ok=True)
    if blind:
        raise StudyError(
            f"--storage {storage.root} is not shared: node(s) {', '.join(blind)} cannot see it; "
            "on a multi-node cluster use a shared filesystem mounted at the same path on "
            "every node, or a URI such as s3://bucket/studies"
        )


def _nodes_not_seeing(path: str, nodes: list[dict[str, Any]]) -> list[str]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def sees(p: str) -> bool:
        return os.path.exists(p)

    refs = {
        n["NodeManagerAddress"] + "/" + n["NodeID"][:8]: sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(path)
        for n in nodes
    }
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
    silent = [node for node, ref in refs.items() if ref not in ready]
    if silent:  # before, ray.get raised GetTimeoutError: a traceback instead of a message
        raise StudyError(
            f"node(s) {', '.join(silent)} did not answer the shared-storage check within "
            f"{PROBE_TIMEOUT_S:.0f} s; check that they are healthy and not overloaded, then retry"
        )
    return [node for node, ref in refs.items() if not ray.get(ref)]
