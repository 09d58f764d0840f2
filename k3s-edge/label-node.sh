#!/bin/sh
# Label (and taint) a node for edgeloom from the hardware it runs on.
#
# Jetson boards become edge nodes: edgeloom.io/tier=edge, edgeloom.io/device-profile=<profile>
# and the taint edgeloom.io/tier=edge:NoSchedule. A machine with an NVIDIA GPU that is not a
# Jetson becomes a cloud node: edgeloom.io/tier=cloud. Model -> profile map: docs/k3s-edge.md.
set -eu

usage() {
    cat <<'EOF'
usage: label-node.sh [--node NAME] [--profile NAME] [--root DIR] [--dry-run | --print-config]

Detect this machine's hardware and label the Kubernetes node NAME for edgeloom.

  --node NAME      node to label (default: this host's name)
  --profile NAME   edge device profile to use instead of the detected one; also labels a
                   board the script does not know as an edge node
  --root DIR       read proc/ and dev/ under DIR instead of / (for tests)
  --dry-run        print the kubectl commands instead of running them
  --print-config   print k3s agent config lines (node-label, node-taint) for
                   /etc/rancher/k3s/config.yaml.d/ so the labels are set when the node joins
  -h, --help       show this help

kubectl is $KUBECTL (default: kubectl) and uses the usual KUBECONFIG.
Exit codes: 0 done, 1 kubectl failed, 2 usage error, 3 hardware not recognised.
EOF
}

die_usage() {
    echo "label-node.sh: $1" >&2
    echo "run 'label-node.sh --help' for usage" >&2
    exit 2
}

# The device profile of a Jetson from its device-tree model string; empty if not a Jetson.
# Orin and Xavier boards are matched before the older ones whose names they contain.
jetson_profile() {
    case "$1" in
        *"AGX Orin"*) echo jetson-agx-orin ;;
        *"Orin NX"*) echo jetson-orin-nx ;;
        *"Orin Nano"*) echo jetson-orin-nano ;;
        *"AGX Xavier"* | *"Jetson-AGX"*) echo jetson-agx-xavier ;;
        *"Xavier NX"*) echo jetson-xavier-nx ;;
        *"Jetson TX2"*) echo jetson-tx2 ;;
        *"Jetson Nano"*) echo jetson-nano ;;
        *) echo "" ;;
    esac
}

has_nvidia_gpu() {
    for dev in "$root"/dev/nvidia[0-9]*; do
        [ -e "$dev" ] && return 0
    done
    [ "$root" = / ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}

# A command, printed under --dry-run, run otherwise.
kube() {
    if [ "$mode" = dry-run ]; then
        echo "$KUBECTL $*"
    else
        # shellcheck disable=SC2086  # KUBECTL may be a command with arguments ("k3s kubectl")
        $KUBECTL "$@" || exit 1
    fi
}

node=""
profile=""
root=/
mode=apply
while [ $# -gt 0 ]; do
    case "$1" in
        --node | --profile | --root)
            [ $# -ge 2 ] || die_usage "$1 needs a value"
            case "$1" in
                --node) node=$2 ;;
                --profile) profile=$2 ;;
                --root) root=$2 ;;
            esac
            shift 2
            ;;
        --dry-run | --print-config)
            [ "$mode" = apply ] || die_usage "--dry-run and --print-config exclude each other"
            mode=${1#--}
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die_usage "unknown argument: $1" ;;
    esac
done

[ -d "$root/proc" ] || die_usage "no proc/ under $root"
[ -n "$node" ] || node=$(hostname | tr '[:upper:]' '[:lower:]')  # as the kubelet names it
echo "$node" | grep -Eqx '[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?' ||
    die_usage "not a node name: $node"
if [ -n "$profile" ]; then
    echo "$profile" | grep -Eqx '[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?' ||
        die_usage "not a label value: $profile"
fi
KUBECTL=${KUBECTL:-kubectl}

model=""
if [ -r "$root/proc/device-tree/model" ]; then
    model=$(tr -d '\000' <"$root/proc/device-tree/model")
fi
memory_mib=$(awk '/^MemTotal:/ { print int($2 / 1024) }' "$root/proc/meminfo" 2>/dev/null || true)
cpus=$(grep -c '^processor' "$root/proc/cpuinfo" 2>/dev/null || true)
gpu=no
has_nvidia_gpu && gpu=yes
echo "detected: model='${model:-unknown}' memory=${memory_mib:-?}MiB cpus=${cpus:-?} nvidia-gpu=$gpu" >&2

[ -n "$profile" ] || profile=$(jetson_profile "$model")
if [ -n "$profile" ]; then
    tier=edge
elif [ "$gpu" = yes ]; then
    tier=cloud
else
    echo "label-node.sh: neither a known Jetson nor an NVIDIA GPU; pass --profile NAME to label it as an edge device" >&2
    exit 3
fi
echo "node $node: tier=$tier${profile:+ device-profile=$profile}" >&2

if [ "$mode" = print-config ]; then
    echo "node-label:"
    echo "  - edgeloom.io/tier=$tier"
    if [ "$tier" = edge ]; then
        echo "  - edgeloom.io/device-profile=$profile"
        echo "node-taint:"
        echo "  - edgeloom.io/tier=edge:NoSchedule"
    fi
    exit 0
fi

if [ "$tier" = edge ]; then
    kube label node "$node" edgeloom.io/tier=edge "edgeloom.io/device-profile=$profile" --overwrite
    kube taint node "$node" edgeloom.io/tier=edge:NoSchedule --overwrite
else
    kube label node "$node" edgeloom.io/tier=cloud --overwrite
fi
