{{/*
edgeloom's alerts as a Prometheus rule file ({groups: [...]}): the spec of the PrometheusRule,
and what tests/integration/test_dashboards.py checks with `promtool test rules`. Job metrics
carry kind, role and name; targets carry namespace and pod, and the pod's
app.kubernetes.io/name as app_kubernetes_io_name (PodMonitor podTargetLabels, or labelmap in
an annotation-based scrape job).
*/}}
{{- define "edgeloom.alertRules" -}}
{{- $r := .Values.monitoring.prometheusRule }}
{{- $server := `kind="SplitTrainingJob",role="server"` }}
{{- $round := printf "edgeloom_round{%s}" $server }}
{{- $stage := `edgeloom_stage{kind="PruneJob",role="pruner"}` }}
{{- $blocks := `edgeloom_layers_done{kind="PruneJob",role="pruner"}` }}
{{- $byJob := "on (namespace, name, pod)" }}
groups:
  - name: edgeloom.jobs
    rules:
      # Each stall rule also needs the series `stalledFor` ago, so a new pod (or a Prometheus
      # that just started) is not taken for a stalled one.
      - alert: EdgeloomSplitTrainingJobStalled
        expr: |-
          {{ $round }} < edgeloom_planned_rounds{ {{- $server -}} }
          and changes({{ $round }}[{{ $r.splitTrainingStalledFor }}]) == 0
          and {{ $round }} offset {{ $r.splitTrainingStalledFor }}
        labels:
          severity: warning
        annotations:
          summary: {{ `SplitTrainingJob {{ $labels.namespace }}/{{ $labels.name }} is stalled` | quote }}
          description: {{ printf "Its server %s has finished no round for %s; it is at round %s, short of its planned rounds." `{{ $labels.pod }}` $r.splitTrainingStalledFor `{{ $value }}` | quote }}
      - alert: EdgeloomPruneJobStalled
        expr: |-
          max by (namespace, name, pod) (changes({{ $stage }}[{{ $r.pruneStalledFor }}])) == 0
          and {{ $byJob }} max by (namespace, name, pod) (changes({{ $blocks }}[{{ $r.pruneStalledFor }}])) == 0
          and {{ $byJob }} edgeloom_stage{kind="PruneJob",role="pruner",stage="Done"} == 0
          and {{ $byJob }} {{ $blocks }} offset {{ $r.pruneStalledFor }}
        labels:
          severity: warning
        annotations:
          summary: {{ `PruneJob {{ $labels.namespace }}/{{ $labels.name }} is stalled` | quote }}
          description: {{ printf "Its pruner %s has changed neither stage nor processed blocks for %s." `{{ $labels.pod }}` $r.pruneStalledFor | quote }}
      - alert: EdgeloomWorkersDropped
        expr: increase(edgeloom_workers_dropped_total{ {{- $server -}} }[{{ $r.workersDroppedWindow }}]) > 0
        labels:
          severity: info
        annotations:
          summary: {{ `SplitTrainingJob {{ $labels.namespace }}/{{ $labels.name }} dropped workers` | quote }}
          description: {{ printf "About %s workers were dropped from its rounds in the last %s; the job goes on without them." `{{ $value | humanize }}` $r.workersDroppedWindow | quote }}
  - name: edgeloom.scrape
    rules:
      - alert: EdgeloomTargetDown
        expr: up{app_kubernetes_io_name=~{{ include "edgeloom.monitoredNames" . | fromJsonArray | join "|" | quote }}} == 0
        for: {{ $r.staleFor }}
        labels:
          severity: warning
        annotations:
          summary: {{ `Metrics of {{ $labels.namespace }}/{{ $labels.pod }} are stale` | quote }}
          description: {{ printf "Prometheus has not scraped %s for %s: the pod's metrics, and the operator's health checks on them, are out of date." `{{ $labels.pod }}` $r.staleFor | quote }}
  - name: edgeloom.operator
    rules:
      - alert: EdgeloomOperatorReconcileErrors
        expr: sum by (namespace, pod, kind) (increase(edgeloom_operator_reconciles_total{outcome="error"}[5m])) > 0
        for: {{ $r.reconcileErrorsFor }}
        labels:
          severity: warning
        annotations:
          summary: {{ `The edgeloom operator keeps failing to reconcile {{ $labels.kind }} resources` | quote }}
          description: {{ printf "Operator %s/%s has had %s reconcile errors for at least %s; see its log and the resources' events." `{{ $labels.namespace }}` `{{ $labels.pod }}` `{{ $labels.kind }}` $r.reconcileErrorsFor | quote }}
{{- end }}
