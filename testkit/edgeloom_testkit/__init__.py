"""edgeloom's test kit: helpers every test tier shares (pytest plugin:
``edgeloom_testkit.fixtures``).

A distribution of its own (``testkit/pyproject.toml``), installed into the dev venv by
``scripts/setup-venv.sh`` and never into a pod image; the shipped ``edgeloom`` package may not
import it (an import-linter contract). Per-kind helpers live in ``edgeloom_testkit.kinds``.
"""
