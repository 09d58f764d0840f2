{{/*
edgeloom's alerts as a Prometheus rule file ({groups: [...]}): the spec of the PrometheusRule,
and what tests/integration/test_dashboards.py checks with `promtool test rules`. Job metrics
carry kind, role and name; targets carry namespace and pod, the pod's app.kubernetes.io/*
labels as app_kubernetes_io_* and its edgeloom.io/* labels as edgeloom_* (PodMonitor
podTargetLabels and relabelings, or labelmap in an annotation-based scrape job); the
operator's per-resource series carry kind, resource_namespace, name and uid. Every alert has a
runbook_url (its section of docs/operations.md) and a dashboard_url.
*/}}
{{- define "edgeloom.alertRules" -}}
{{- $r := .Values.monitoring.prometheusRule }}
{{- $done := "edgeloom_steps_completed" }}
{{- $runbook := $r.runbookUrl }}
{{- $kindBoard := printf "%s/d/edgeloom-%s?var-namespace=%s&var-resource=%s" ($r.grafanaUrl | trimSuffix "/") `{{ $labels.kind | toLower }}` `{{ $labels.namespace }}` `{{ $labels.name }}` }}
{{- $operatorBoard := printf "%s/d/edgeloom-operator" ($r.grafanaUrl | trimSuffix "/") }}
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
          runbook_url: {{ printf "%s#edgeloomjobstalled" $runbook | quote }}
          dashboard_url: {{ $kindBoard | quote }}
          summary: {{ `{{ $labels.kind }} {{ $labels.namespace }}/{{ $labels.name }} is stalled` | quote }}
          description: {{ printf "Its %s %s has completed no step for %s; it is at step %s, short of its planned steps." `{{ $labels.role }}` `{{ $labels.pod }}` $r.stalledFor `{{ $value }}` | quote }}
      - alert: EdgeloomWorkersDropped
        expr: increase(edgeloom_workers_dropped_total[{{ $r.workersDroppedWindow }}]) > 0
        labels:
          severity: info
        annotations:
          runbook_url: {{ printf "%s#edgeloomworkersdropped" $runbook | quote }}
          dashboard_url: {{ $kindBoard | quote }}
          summary: {{ `{{ $labels.kind }} {{ $labels.namespace }}/{{ $labels.name }} dropped workers` | quote }}
          description: {{ printf "About %s workers were dropped from its rounds in the last %s; the job goes on without them." `{{ $value | humanize }}` $r.workersDroppedWindow | quote }}
      # The operator's per-resource series: one alert per failed resource (its run's uid).
      - alert: EdgeloomJobFailed
        expr: max by (kind, resource_namespace, name, uid) (edgeloom_operator_resource_phase{phase="Failed"}) == 1
        labels:
          severity: warning
        annotations:
          runbook_url: {{ printf "%s#edgeloomjobfailed" $runbook | quote }}
          dashboard_url: {{ printf "%s/d/edgeloom-%s?var-namespace=%s&var-resource=%s&var-run=%s" ($r.grafanaUrl | trimSuffix "/") `{{ $labels.kind | toLower }}` `{{ $labels.resource_namespace }}` `{{ $labels.name }}` `{{ $labels.uid }}` | quote }}
          summary: {{ `{{ $labels.kind }} {{ $labels.resource_namespace }}/{{ $labels.name }} failed` | quote }}
          description: {{ `Its Ready condition says why: kubectl describe {{ $labels.kind | toLower }} {{ $labels.name }} -n {{ $labels.resource_namespace }}.` | quote }}
  - name: edgeloom.scrape
    rules:
      - alert: EdgeloomTargetDown
        expr: up{app_kubernetes_io_name=~{{ include "edgeloom.monitoredNames" . | fromJsonArray | join "|" | quote }}} == 0
        for: {{ $r.staleFor }}
        labels:
          severity: warning
        annotations:
          runbook_url: {{ printf "%s#edgeloomtargetdown" $runbook | quote }}
          dashboard_url: {{ printf "%s%s" ($r.grafanaUrl | trimSuffix "/") `{{ if $labels.edgeloom_kind }}/d/edgeloom-{{ $labels.edgeloom_kind }}?var-namespace={{ $labels.namespace }}&var-resource={{ $labels.edgeloom_job }}{{ else }}/d/edgeloom-operator?var-operator_namespace={{ $labels.namespace }}{{ end }}` | quote }}
          summary: {{ `Metrics of {{ $labels.namespace }}/{{ $labels.pod }} are stale` | quote }}
          description: {{ printf "Prometheus has not scraped %s for %s: the pod's metrics, and the operator's health checks on them, are out of date." `{{ $labels.pod }}` $r.staleFor | quote }}
  - name: edgeloom.operator
    rules:
      # Nothing reconciles, and deleting a resource with external state waits on its finalizer.
      - alert: EdgeloomOperatorAbsent
        expr: absent(up{app_kubernetes_io_component="operator", app_kubernetes_io_instance={{ .Release.Name | quote }}} == 1)
        for: {{ $r.operatorAbsentFor }}
        labels:
          severity: critical
        annotations:
          runbook_url: {{ printf "%s#edgeloomoperatorabsent" $runbook | quote }}
          dashboard_url: {{ $operatorBoard | quote }}
          summary: "The edgeloom operator is not running or not scraped"
          description: {{ printf "No operator target of release %s has been up for %s: resources are not reconciled and their deletion waits on the operator." .Release.Name $r.operatorAbsentFor | quote }}
      - alert: EdgeloomOperatorReconcileErrors
        expr: sum by (namespace, pod, kind) (increase(edgeloom_operator_reconciles_total{outcome="error"}[5m])) > 0
        for: {{ $r.reconcileErrorsFor }}
        labels:
          severity: warning
        annotations:
          runbook_url: {{ printf "%s#edgeloomoperatorreconcileerrors" $runbook | quote }}
          dashboard_url: {{ printf "%s?var-operator_namespace=%s" $operatorBoard `{{ $labels.namespace }}` | quote }}
          summary: {{ `The edgeloom operator keeps failing to reconcile {{ $labels.kind }} resources` | quote }}
          description: {{ printf "Operator %s/%s has had %s reconcile errors for at least %s; see its log and the resources' events." `{{ $labels.namespace }}` `{{ $labels.pod }}` `{{ $labels.kind }}` $r.reconcileErrorsFor | quote }}
{{- end }}
