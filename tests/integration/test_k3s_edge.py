"""k3s-edge: the node-labelling script, the k3s config files and the HelmChart's values.

``label-node.sh`` runs on fake hardware roots (proc/device-tree/model, proc/meminfo,
proc/cpuinfo, dev/nvidia0) and its commands are compared exactly; both shell scripts pass
``shellcheck`` and ``sh -n``. Every key of the k3s config files must be a flag of the pinned
k3s (k3s-edge/tests/k3s-*-flags.txt, made from ``k3s --help`` by k3s-flags.sh) with a value of
the flag's kind. The HelmChart's ``valuesContent`` is rendered by the real ``helm`` against
the chart's values schema.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloom_testkit.controlplane import KUBE_VERSION, controlplane_bin_dir

ROOT = Path(__file__).resolve().parents[2]
EDGE = ROOT / "k3s-edge"
LABEL_NODE = EDGE / "label-node.sh"
FLAGS_SCRIPT = EDGE / "tests" / "k3s-flags.sh"
CHART = ROOT / "charts" / "edgeloom"

EDGE_TAINT = "edgeloom.io/tier=edge:NoSchedule"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]


def run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, **kwargs
    )


# -- the scripts ------------------------------------------------------------------------------


@pytest.mark.parametrize("script", [LABEL_NODE, FLAGS_SCRIPT], ids=lambda p: p.name)
def test_script_passes_shellcheck_and_sh_n(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (Debian/Ubuntu package: shellcheck)"
    lint = run(shellcheck, script)
    assert lint.returncode == 0, lint.stdout
    syntax = run("sh", "-n", script)
    assert syntax.returncode == 0, syntax.stderr


def fake_root(
    base: Path, model: str | None, mem_kib: int = 8_000_000, cpus: int = 6, gpu: bool = False
) -> Path:
    """A directory laid out like / for label-node.sh --root: proc/ and, with a GPU, dev/."""
    proc = base / "proc"
    (proc / "device-tree").mkdir(parents=True)
    if model is not None:  # the kernel writes the model NUL-terminated
        (proc / "device-tree" / "model").write_bytes(model.encode() + b"\0")
    (proc / "meminfo").write_text(f"MemTotal:       {mem_kib} kB\nMemFree:        1000 kB\n")
    (proc / "cpuinfo").write_text("".join(f"processor\t: {i}\n\n" for i in range(cpus)))
    if gpu:
        (base / "dev").mkdir()
        (base / "dev" / "nvidia0").touch()
    return base


def label_node(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run(LABEL_NODE, *args, env=env)


def edge_commands(node: str, profile: str) -> list[str]:
    return [
        f"kubectl label node {node} edgeloom.io/tier=edge "
        f"edgeloom.io/device-profile={profile} --overwrite",
        f"kubectl taint node {node} {EDGE_TAINT} --overwrite",
    ]


JETSONS = [
    ("NVIDIA Jetson Nano Developer Kit", "jetson-nano", 4_050_000, 4),
    ("NVIDIA Jetson TX2 Developer Kit", "jetson-tx2", 8_000_000, 6),
    ("NVIDIA Jetson Xavier NX Developer Kit", "jetson-xavier-nx", 8_000_000, 6),
    ("Jetson-AGX", "jetson-agx-xavier", 32_000_000, 8),
    ("NVIDIA Jetson Orin Nano Developer Kit", "jetson-orin-nano", 7_800_000, 6),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "jetson-orin-nx", 16_000_000, 8),
    ("Jetson AGX Orin", "jetson-agx-orin", 64_000_000, 12),
]


@pytest.mark.parametrize(("model", "profile", "mem_kib", "cpus"), JETSONS)
def test_jetson_becomes_a_tainted_edge_node(
    tmp_path: Path, model: str, profile: str, mem_kib: int, cpus: int
) -> None:
    root = fake_root(tmp_path, model, mem_kib, cpus)
    proc = label_node("--root", root, "--node", "jetson-7", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == edge_commands("jetson-7", profile)
    assert f"model='{model}' memory={mem_kib // 1024}MiB cpus={cpus}" in proc.stderr


def test_gpu_server_becomes_a_cloud_node(tmp_path: Path) -> None:
    root = fake_root(tmp_path, None, 512_000_000, 64, gpu=True)
    proc = label_node("--root", root, "--node", "gpu-0", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "kubectl label node gpu-0 edgeloom.io/tier=cloud --overwrite"
    ]
    assert "nvidia-gpu=yes" in proc.stderr


def test_unknown_hardware_is_refused_unless_a_profile_is_given(tmp_path: Path) -> None:
    root = fake_root(tmp_path, None)
    refused = label_node("--root", root, "--node", "nuc-1", "--dry-run")
    assert refused.returncode == 3
    assert refused.stdout == ""
    assert "--profile" in refused.stderr

    forced = label_node("--root", root, "--node", "nuc-1", "--profile", "intel-nuc", "--dry-run")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.splitlines() == edge_commands("nuc-1", "intel-nuc")


def test_profile_overrides_the_detected_one(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "Jetson AGX Orin")
    proc = label_node("--root", root, "--node", "j", "--profile", "jetson-agx", "--dry-run")
    assert proc.stdout.splitlines() == edge_commands("j", "jetson-agx")


def test_node_defaults_to_the_host_name(tmp_path: Path) -> None:
    hostname = run("hostname").stdout.strip().lower()
    proc = label_node(
        "--root", fake_root(tmp_path, "NVIDIA Jetson Nano Developer Kit"), "--dry-run"
    )
    assert proc.stdout.splitlines() == edge_commands(hostname, "jetson-nano")


def test_without_dry_run_kubectl_runs_and_its_failure_is_exit_1(tmp_path: Path) -> None:
    root = fake_root(tmp_path / "root", "NVIDIA Jetson Nano Developer Kit")
    calls = tmp_path / "calls"
    recorder = tmp_path / "kubectl"
    recorder.write_text(f'#!/bin/sh\necho "kubectl $*" >> {calls}\n')
    recorder.chmod(0o755)
    ok = label_node(
        "--root", root, "--node", "n1", env={"PATH": "/usr/bin:/bin", "KUBECTL": str(recorder)}
    )
    assert ok.returncode == 0, ok.stderr
    assert calls.read_text().splitlines() == edge_commands("n1", "jetson-nano")

    failed = label_node(
        "--root", root, "--node", "n1", env={"PATH": "/usr/bin:/bin", "KUBECTL": "false"}
    )
    assert failed.returncode == 1


def test_print_config_is_a_valid_k3s_agent_drop_in(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "NVIDIA Jetson Orin Nano Developer Kit")
    proc = label_node("--root", root, "--print-config")
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    assert config == {
        "node-label": ["edgeloom.io/tier=edge", "edgeloom.io/device-profile=jetson-orin-nano"],
        "node-taint": [EDGE_TAINT],
    }
    check_k3s_config(config, k3s_flags("agent"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--node"], "--node needs a value"),
        (["--frobnicate"], "unknown argument: --frobnicate"),
        (["--dry-run", "--print-config"], "exclude each other"),
        (["--node", "Bad_Name", "--dry-run"], "not a node name"),
        (["--profile", "two words", "--dry-run"], "not a label value"),
        (["--root", "/nonexistent", "--dry-run"], "no proc/ under /nonexistent"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    root = fake_root(tmp_path, "Jetson AGX Orin")
    proc = label_node("--root", root, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


def test_help_exits_0() -> None:
    proc = label_node("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: label-node.sh")


# -- k3s config files -------------------------------------------------------------------------


def k3s_flags(command: str) -> dict[str, str]:
    """Flag name -> kind ("value" or "bool") of ``k3s COMMAND``, from the committed list."""
    lines = (EDGE / "tests" / f"k3s-{command}-flags.txt").read_text().splitlines()
    return dict(line.split() for line in lines if line and not line.startswith("#"))


def check_k3s_config(config: dict[str, Any], flags: dict[str, str]) -> None:
    for key, value in config.items():
        assert key in flags, f"{key!r} is not a k3s flag"
        if flags[key] == "bool":
            assert isinstance(value, bool), f"{key}: a bool flag, got {value!r}"
        else:  # a value, or a list of values for a repeatable flag
            values = value if isinstance(value, list) else [value]
            assert values and all(
                isinstance(v, str | int) and not isinstance(v, bool) for v in values
            ), f"{key}: expected a value or a list of values, got {value!r}"


def test_flag_lists_come_from_k3s_help() -> None:
    help_text = (
        "OPTIONS:\n"
        "   --data-dir value, -d value                 (agent/data) Folder to hold state\n"
        "   --debug                                    (logging) Turn on debug logs\n"
        "   -v value                                   (logging) log level (default: 0)\n"
    )
    proc = run(FLAGS_SCRIPT, "test help", input=help_text)
    assert proc.returncode == 0, proc.stderr
    entries = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert entries == ["d value", "data-dir value", "debug bool", "v value"]
    for command in ("server", "agent"):
        flags = k3s_flags(command)
        assert flags["node-label"] == "value" and flags["with-node-id"] == "bool"
    assert "secrets-encryption" in k3s_flags("server")
    assert "secrets-encryption" not in k3s_flags("agent")


def test_server_config_uses_server_flags_and_labels_the_cloud_tier() -> None:
    config = yaml.safe_load((EDGE / "server" / "config.yaml").read_text())
    check_k3s_config(config, k3s_flags("server"))
    assert config["node-label"] == ["edgeloom.io/tier=cloud"]
    assert config["write-kubeconfig-mode"] == "0600"
    assert config["secrets-encryption"] is True
    assert "node-taint" not in config


def test_agent_config_uses_agent_flags_and_taints_the_edge_tier() -> None:
    config = yaml.safe_load((EDGE / "agent" / "config.yaml").read_text())
    check_k3s_config(config, k3s_flags("agent"))
    assert config["node-label"] == ["edgeloom.io/tier=edge"]
    assert config["node-taint"] == [EDGE_TAINT]
    assert config["default-runtime"] == "nvidia"
    assert config["server"].startswith("https://") and config["token-file"]
    kubelet_flags = {arg.split("=", 1)[0] for arg in config["kubelet-arg"]}
    assert {"eviction-hard", "image-gc-high-threshold", "system-reserved"} <= kubelet_flags


def test_registries_yaml_has_k3s_shape() -> None:
    # Field names of k3s's registries.yaml (github.com/rancher/wharfie pkg/registries).
    registries = yaml.safe_load((EDGE / "registries.yaml").read_text())
    assert set(registries) <= {"mirrors", "configs"}
    assert set(registries["mirrors"]) == {"docker.io", "ghcr.io", "registry.k8s.io"}
    for name, mirror in registries["mirrors"].items():
        assert set(mirror) <= {"endpoint", "rewrite"}, name
        assert mirror["endpoint"] and all(e.startswith("https://") for e in mirror["endpoint"])
    for host, config in registries["configs"].items():
        assert set(config) <= {"auth", "tls"}, host
        assert set(config["tls"]) <= {"ca_file", "cert_file", "key_file", "insecure_skip_verify"}
        assert all(Path(path).is_absolute() for path in config["tls"].values())
    endpoints = {e for m in registries["mirrors"].values() for e in m["endpoint"]}
    assert {e.removeprefix("https://") for e in endpoints} <= set(registries["configs"])


# -- the HelmChart ---------------------------------------------------------------------------


def test_helmchart_values_render_with_the_chart() -> None:
    manifest = yaml.safe_load((EDGE / "manifests" / "edgeloom-helmchart.yaml").read_text())
    spec = manifest["spec"]
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert spec["chart"] == f"https://%{{KUBERNETES_API}}%/static/charts/edgeloom-{version}.tgz"
    assert spec["targetNamespace"] == "edgeloom-system" and spec["createNamespace"] is True

    helm = controlplane_bin_dir() / "helm"
    proc = run(
        helm, "template", "edgeloom", CHART, "--namespace", spec["targetNamespace"],
        "--kube-version", KUBE_VERSION, "--values", "-",
        input=spec["valuesContent"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    pods = {
        (d["kind"], d["metadata"]["name"]): d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in {"Deployment", "StatefulSet"}
    }
    assert pods, "the chart rendered no Deployment or StatefulSet"
    for name, pod in pods.items():
        assert pod["nodeSelector"] == {"edgeloom.io/tier": "cloud"}, name

    misspelt = run(
        helm, "template", "edgeloom", CHART, "--kube-version", KUBE_VERSION, "--values", "-",
        input="operator:\n  nodeSelectr: {}\n",
    )  # fmt: skip
    assert misspelt.returncode != 0 and "nodeSelectr" in misspelt.stderr
