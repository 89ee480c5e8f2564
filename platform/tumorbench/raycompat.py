"""The two Ray internals tumorbench uses (Ray has no public API for them); nothing else imports ``ray._private``.

- :func:`cluster_address`: the address ``ray.init()`` would join (``RAY_ADDRESS``, else the cluster
  ``ray start`` made on this machine), so that a local Ray is started with tumorbench's own settings
  (``num_cpus``, ``object_store_memory``), which ``ray.init`` refuses when it joins a cluster.
- :func:`serve_deploy_apps`: deploy Serve applications from config dicts, as ``serve run/deploy
  config.yaml`` do: a redeploy that only changes ``user_config`` reconfigures running replicas, where
  the public ``serve.run`` restarts them.

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
