"""PruneJob's rows (COMP): the pruner's stage, blocks, parameters and quality before and after,
and its peak memory."""

from __future__ import annotations

from collections.abc import Sequence

from edgeloom_operators.dashboards import panels
from edgeloom_operators.dashboards.panels import LEGEND, KindDashboard, Scope, Section, by, query

STAGE_LEGEND = "{{name}} {{stage}}"


def sections(scope: Scope) -> Sequence[Section]:
    """The pruning and its memory."""

    def pruner(metric: str, **labels: str) -> str:
        return scope.metric(metric, "pruner", **labels)

    def per_stage(metric: str) -> panels.Target:
        return query(f"max {by('stage')} ({pruner(metric)})", STAGE_LEGEND)

    stage = f"max {by('stage')} ({pruner('edgeloom_stage')})"
    blocks = query(f"max {by()} ({pruner('edgeloom_layers_done')})", LEGEND)
    kept = (
        f"max {by()} ({pruner('edgeloom_parameters', stage='after')}) / "
        f"max {by()} ({pruner('edgeloom_parameters', stage='before')})"
    )
    peak = query(f"max {by()} ({pruner('edgeloom_peak_memory_bytes')})", LEGEND)
    return (
        Section(
            "Pruning",
            (
                panels.single("Stage", "none", query(f"{stage} == 1", STAGE_LEGEND), width=8),
                panels.single("Blocks done", "none", blocks, width=8),
                panels.single(
                    "Parameters kept",
                    "percentunit",
                    query(kept, LEGEND),
                    width=8,
                    thresholds=panels.steps((None, "green"), (0.95, "yellow")),
                    description="Yellow: less than 5% of the parameters pruned.",
                ),
                panels.series("Stage", "none", query(stage, STAGE_LEGEND)),
                panels.series("Blocks done", "none", blocks),
                panels.bars("Parameters", "short", per_stage("edgeloom_parameters")),
                panels.bars("Quality", "none", per_stage("edgeloom_quality")),
            ),
        ),
        Section("Memory", (panels.series("Peak memory", "bytes", peak, width=24),)),
    )


DASHBOARD = KindDashboard(
    sections,
    "COMP post-training structured pruning: the jobs and their phase, stage, progress, "
    "parameters and quality before and after, memory.",
)
