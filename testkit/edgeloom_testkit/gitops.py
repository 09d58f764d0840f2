"""A resource's health as GitOps tools read it, by their own rules, not a re-implementation.

- :func:`kstatus` runs ``kstatus`` (``controlplane/kstatus``, built by ``controlplane/build.sh``
  beside the control-plane binaries): ``status.Compute`` of sigs.k8s.io/cli-utils, what Flux's
  ``wait: true`` and ``healthChecks`` decide for a custom resource.
- :func:`argocd_health` runs an Argo CD health script in real Lua 5.1 (``lupa.lua51``; Argo CD
  runs gopher-lua, a Lua 5.1) with only the libraries Argo CD opens for it (base, table,
  package; no string, math, io or os), so a script that leans on anything else fails here as
  it would there.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lupa.lua51 as lua

KSTATUS_STATUSES = frozenset({"InProgress", "Current", "Failed", "Terminating", "Unknown"})
ARGOCD_STATUSES = frozenset(
    {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
)
"""The health codes Argo CD accepts from a script; anything else it turns into Unknown."""
ARGOCD_CLOSED_LIBRARIES = ("string", "math", "io", "os", "debug", "coroutine", "python")
"""Globals Argo CD's script sandbox does not have (``python`` is lupa's own bridge)."""


class HealthCheckError(RuntimeError):
    """A health tool refused the object, or a script returned what Argo CD would reject."""


def kstatus(obj: Mapping[str, Any], bin_dir: Path, timeout: float = 30.0) -> dict[str, str]:
    """kstatus' verdict on ``obj`` (a resource as ``kubectl get -o json`` prints it).

    Parameters
    ----------
    obj
        One Kubernetes object, status included.
    bin_dir
        The directory ``controlplane/build.sh`` prints (it holds ``kstatus``).
    timeout
        Seconds before the call is killed.

    Returns
    -------
    dict
        ``{"status": ..., "message": ...}``, status one of :data:`KSTATUS_STATUSES`.

    Raises
    ------
    HealthCheckError
        When ``bin_dir`` has no ``kstatus``, or it exits non-zero (its stderr says why).
    """
    binary = bin_dir / "kstatus"
    if not binary.is_file():
        raise HealthCheckError(f"no kstatus in {bin_dir}: run controlplane/build.sh")
    proc = subprocess.run(
        [str(binary)],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise HealthCheckError(f"kstatus exited with {proc.returncode}: {proc.stderr.strip()}")
    result: dict[str, str] = json.loads(proc.stdout)
    return result


def argocd_health(script: str, obj: Mapping[str, Any]) -> dict[str, str]:
    """Run an Argo CD health ``script`` on ``obj`` the way Argo CD does: ``obj`` as a global
    table (JSON arrays as 1-based tables), the script's returned table as the verdict.

    Returns
    -------
    dict
        ``{"status": ..., "message": ...}``.

    Raises
    ------
    lupa.lua51.LuaError
        When the script does not compile as Lua 5.1 or fails while running.
    HealthCheckError
        When it returns no table, or a status Argo CD does not know.
    """
    runtime = lua.LuaRuntime(register_eval=False, register_builtins=False)
    env = runtime.globals()
    for name in ARGOCD_CLOSED_LIBRARIES:
        env[name] = None
    env["obj"] = runtime.table_from(json.loads(json.dumps(obj)), recursive=True)
    returned = runtime.execute(script)
    if lua.lua_type(returned) != "table":
        raise HealthCheckError(f"the script returned {lua.lua_type(returned)}, not a table")
    health = {str(key): value for key, value in returned.items()}
    if health.get("status") not in ARGOCD_STATUSES:
        raise HealthCheckError(f"status {health.get('status')!r} is not an Argo CD health code")
    return {"status": str(health["status"]), "message": str(health.get("message") or "")}
