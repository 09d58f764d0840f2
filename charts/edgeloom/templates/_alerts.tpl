{{/*
edgeloom's alerts as a Prometheus rule file ({groups: [...]}): the spec of the PrometheusRule,
and what tests/integration/test_dashboards.py checks with `promtool test rules`. Job metrics
carry kind, role and name; targets carry namespace and pod, and the pod's
app.kubernetes.io/name as app_kubernetes_io_name (PodMonitor podTargetLabels, or labelmap in
an annotation-based scrape job).
*/}}
{{- define "edgeloom.alertRules" -}}
{{- $r := .Values.monitoring.prometheusRule }}
{{- $done := "edgeloom_steps_completed" }}
groups:
  - name: edgeloom.jobs
    rules:
      # Every coordinating role exports the same progress pair, so one rule watches every
      # kind. It also needs the series `stalledFor` ago, so a new pod (or a Prometheus that
      # just started) is not taken for a stalled one; a finished job has completed == planned.
      - alert: EdgeloomJobStalled
        expr: |-
          {{ $done }} < edgeloom_steps_planned
          and changes({{ $done }}[{{ $r.stalledFor }}]) == 0
          and {{ $done }} offset {{ $r.stalledFor }}
        labels:
          severity: warning
        annotations:
          summary: {{ `{{ $labels.kind }} {{ $labels.namespace }}/{{ $labels.name }} is stalled` | quote }}
          description: {{ printf "Its %s %s has completed no step for %s; it is at step %s, short of its planned steps." `{{ $labels.role }}` `{{ $labels.pod }}` $r.stalledFor `{{ $value }}` | quote }}
      - alert: EdgeloomWorkersDropped
        expr: increase(edgeloom_workers_dropped_total[{{ $r.workersDroppedWindow }}]) > 0
        labels:
          severity: info
        annotations:
          summary: {{ `{{ $labels.kind }} {{ $labels.namespace }}/{{ $labels.name }} dropped workers` | quote }}
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
