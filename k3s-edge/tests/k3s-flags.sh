#!/bin/sh
# Turn the OPTIONS of `k3s server --help` or `k3s agent --help` into the flag list that
# tests/integration/test_k3s_edge.py checks config files against: one "name kind" line per
# flag name and alias, kind "value" (takes an argument) or "bool".
#
#   k3s server --help | k3s-edge/tests/k3s-flags.sh "k3s vX.Y.Z+k3s1" > k3s-edge/tests/k3s-server-flags.txt
#   k3s agent --help  | k3s-edge/tests/k3s-flags.sh "k3s vX.Y.Z+k3s1" > k3s-edge/tests/k3s-agent-flags.txt
set -eu

[ $# -eq 1 ] || {
    echo "usage: k3s server --help | k3s-flags.sh SOURCE > FILE   (SOURCE: where the help came from)" >&2
    exit 2
}
echo "# Flags of k3s, from its --help output: $1"
echo "# Regenerate with k3s-edge/tests/k3s-flags.sh. Format: name kind (value | bool)."
# An option line starts with spaces and a dash; its flag column ends at the first two spaces.
awk '
    /^[ \t]+-/ {
        sub(/^[ \t]+/, "")
        split($0, columns, /  +/)
        count = split(columns[1], names, /, /)
        for (i = 1; i <= count; i++) {
            words = split(names[i], parts, " ")
            sub(/^-+/, "", parts[1])
            print parts[1], (words > 1 ? "value" : "bool")
        }
    }
' | sort -u
