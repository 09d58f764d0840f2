#!/usr/bin/env bash
# System tools and data the test tiers use for real: Prometheus (and promtool) from Debian's
# `prometheus` package, shellcheck for the k3s-edge scripts and Fashion-MNIST from
# `dataset-fashion-mnist`. Installs only what is missing.
set -euo pipefail

missing=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
command -v shellcheck >/dev/null || missing+=(shellcheck)
[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || missing+=(dataset-fashion-mnist)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing ${missing[*]} with apt-get (test tools)" >&2
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
