"""The Ray internals tumorbench uses (Ray has no public API for them); nothing else imports ``ray._private``.

- :func:`cluster_address`: the address ``ray.init()`` would join (``RAY_ADDRESS``, else the cluster
  ``ray start`` made on this machine), so that a local Ray is started with tumorbench's own settings
  (``num_cpus``, ``object_store_memory``), which ``ray.init`` refuses when it joins a cluster.
- :func:`serve_deploy_apps`: deploy Serve applications from config dicts, as ``serve run/deploy
  config.yaml`` do: a redeploy that only changes ``user_config`` reconfigures running replicas, where
  the public ``serve.run`` restarts them.
- :func:`serve_ingress_ports`: the ports of an application's ingress replicas under Serve's direct
  ingress (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``), where they answer HTTP without the proxy.
- :func:`serve_assigned`: wait for a handle call to be accepted by a replica, apart from waiting for its
  answer, so that a call no replica takes (all full, or the only one restarting) is refused quickly.

``tests/unit/test_raycompat.py`` pins their signatures and behaviour: it fails when a Ray upgrade moves them.
"""

from __future__ import annotations

from typing import Any


def cluster_address(address: str | None = None, *, temp_dir: str | None = None) -> str | None:
    """``address``, else ``$RAY_ADDRESS``, else the latest ``ray start`` cluster's; None: no cluster to join."""
    from ray._private.services import canonicalize_bootstrap_address

    return canonicalize_bootstrap_address(address, temp_dir)


def serve_deploy_apps(applications: list[dict[str, Any]], *, http_options: dict[str, Any] | None = None) -> None:
    """Start Serve if needed and deploy ``applications`` (Serve config ``applications`` entries); returns at once."""
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    client = serve_start(http_options=http_options)
    client.deploy_apps(ServeDeploySchema(applications=applications))


def serve_ingress_ports(app_name: str) -> list[int]:
    """HTTP ports on which ``app_name``'s ingress replicas answer themselves (Serve's direct ingress).

    Empty when direct ingress is off (then only Serve's proxy answers). Needs Serve running.
    """
    import ray
    from ray.serve.context import _get_global_client

    groups = ray.get(_get_global_client()._controller.get_target_groups.remote(app_name), timeout=30)
    return sorted(
        target.port
        for group in groups
        if str(getattr(group.protocol, "value", group.protocol)) == "HTTP"
        for target in group.targets
        if target.name.startswith("SERVE_REPLICA")  # not a proxy
    )


async def serve_assigned(response: Any) -> None:
    """Until a ``DeploymentResponse`` is accepted by a replica (Serve holds it while every replica is full or gone).

    Raises what the assignment raises (e.g. ``BackPressureError`` when the deployment's queue is full).
    """
    await response._fetch_future_result_async()
