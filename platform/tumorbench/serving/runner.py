"""Running the tumorbench Serve application: a config deploy (as ``serve deploy``) or a blocking local server."""

from __future__ import annotations

import os
import time
from typing import Any

from ray import serve

from tumorbench.raycompat import serve_deploy_apps, serve_ingress_ports
from tumorbench.serving.packages import resolve_packages
from tumorbench.serving.protocol import is_loopback
from tumorbench.serving.settings import AppArgs

APP_IMPORT_PATH = "tumorbench.serving.app:build_app"
# Ray Serve's high-throughput mode: the ingress replica answers HTTP on its own port (direct ingress, one
# process hop less than Serve's proxy, which keeps answering on http_options.port), gRPC between deployments,
# user code on each replica's main event loop. Serve reads these when its processes start: they must be in
# the environment of whatever starts Ray (`serve_forever` sets them; `serve run` users export
# serve/throughput.env, which holds the same). On top of Ray's mode: a 2 s drain of a stopped ingress (Ray:
# 30 s, for external load balancers) keeps a stop or a redeploy quick; logs written as they happen (Ray's
# mode buffers 1,000 records); gRPC requests up to 2 GiB (Ray's 4 MiB refuses 3D volumes).
THROUGHPUT_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(2**31 - 1),
}


def use_throughput_mode() -> None:
    """Put :data:`THROUGHPUT_ENV` in this process's environment (settings already there win); before ``ray.init``."""
    for key, value in THROUGHPUT_ENV.items():
        os.environ.setdefault(key, value)


def ingress_urls(host: str = "127.0.0.1", name: str = "tumorbench") -> list[str]:
    """URLs at which the application's ingress replicas answer directly (empty unless direct ingress is on)."""
    return [f"http://{host}:{port}" for port in serve_ingress_ports(name)]


def deploy(
    args: dict[str, Any],
    *,
    deployments: list[dict[str, Any]] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str = "tumorbench",
    timeout_s: float = 300.0,
    http_options: dict[str, Any] | None = None,
) -> None:
    """Deploy ``tumorbench.serving.app:build_app`` from a config, as ``serve run/deploy serve/config.yaml`` do.

    Unlike ``serve.run`` (a new code version every call, so every replica restarts), a config
    deploy that only changes ``deployments[].user_config`` calls ``reconfigure`` on the running
    replicas. Needs Ray initialized.

    Args:
        args: :class:`AppArgs` fields.
        deployments: Per-deployment overrides, e.g. ``[{"name": "model_x", "user_config": {...}}]``.
        timeout_s: How long to wait for the application to run.
        http_options: Serve's HTTP options (replace ``host`` and ``port``).
    """
    app = {
        "name": name,
        "route_prefix": "/",
        "import_path": APP_IMPORT_PATH,
        "args": args,
        "deployments": deployments or [],
    }
    serve_deploy_apps([app], http_options=http_options or {"host": host, "port": port})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(name)
        if (
            status is not None
            and status.status == "RUNNING"
            and all(d.status == "HEALTHY" for d in status.deployments.values())
        ):
            return
        if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"application {name} failed: {status.message}")
        time.sleep(0.5)
    raise TimeoutError(f"application {name} not running after {timeout_s:.0f} s")


class _Stop(Exception):
    """Raised by the SIGINT / SIGTERM handler of :func:`serve_forever`."""


def serve_forever(
    args: dict[str, Any],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    request_timeout_s: float = 60.0,
    deployments: list[dict[str, Any]] | None = None,
    throughput_mode: bool = True,
) -> None:
    """Start Ray (or join ``address``), run the application and block until SIGINT / SIGTERM (then exit 0).

    ``deployments``: per-deployment overrides of a Serve config (then the app is deployed from a config,
    as ``serve run serve/config.yaml`` does). ``throughput_mode``: start a local Ray with
    :data:`THROUGHPUT_ENV` (a joined cluster keeps the settings it was started with).
    """
    import signal

    import ray

    from tumorbench.serving.app import build_app

    if not is_loopback(host) and "allowed_hosts" not in args:
        args = {**args, "allowed_hosts": ["*"]}  # listening beyond loopback: answer any name (API key required)
    settings = AppArgs(**args)
    # Every package is found and its manifest validated before Ray starts (a bad one fails here, by name).
    packages = resolve_packages(settings.models)
    settings = settings.model_copy(update={"models": [f"{name}={path}" for name, path in packages.items()]})

    def stop(signum: int, _frame: Any) -> None:
        raise _Stop(signal.Signals(signum).name)

    def install() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)

    install()  # before Ray starts, so a stop during start-up still cleans up
    try:
        if not ray.is_initialized():
            if throughput_mode and address is None:
                use_throughput_mode()
            ray.init(address=address, log_to_driver=False)
            install()  # Ray's core worker replaces the SIGTERM handler with a crash dump that skips clean-up
        http = {"host": host, "port": port, "request_timeout_s": request_timeout_s}
        if deployments:  # a config deploy starts Serve itself
            deploy(settings.model_dump(), deployments=deployments, http_options=http)
        else:
            serve.start(http_options=http)
            serve.run(build_app(settings), name="tumorbench", route_prefix="/")
        print(f"tumorbench serving on http://{host}:{port} (OpenAPI: /docs); Ctrl-C or SIGTERM stops it", flush=True)
        for url in ingress_urls(host):
            print(f"  the same app without Serve's proxy hop (faster): {url}", flush=True)
        while True:
            time.sleep(3600)
    except (_Stop, KeyboardInterrupt) as exc:
        print(f"{exc or 'interrupted'}: shutting down", flush=True)
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
