"""Per-kind test helpers: one module per kind (small resources, process helpers)."""
