{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "edgeloom.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, with the chart name unless the release name
already contains it. Truncated to 63 characters because of DNS naming limits.
*/}}
{{- define "edgeloom.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "edgeloom.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every object carries. Call with (dict "ctx" $ "component" "operator").
*/}}
{{- define "edgeloom.labels" -}}
helm.sh/chart: {{ include "edgeloom.chart" .ctx }}
{{ include "edgeloom.selectorLabels" . }}
{{- if .ctx.Chart.AppVersion }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: edgeloom
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: stable across upgrades, so never the version or the chart.
Call with (dict "ctx" $ "component" "operator").
*/}}
{{- define "edgeloom.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgeloom.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* Names of the chart's objects. */}}
{{- define "edgeloom.operator.fullname" -}}
{{- printf "%s-operator" (include "edgeloom.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edgeloom.operator.serviceAccountName" -}}
{{- include "edgeloom.operator.fullname" . }}
{{- end }}

{{- define "edgeloom.nats.fullname" -}}
{{- printf "%s-nats" (include "edgeloom.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edgeloom.nats.headlessName" -}}
{{- printf "%s-nats-headless" (include "edgeloom.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Whether the chart runs its own NATS server: enabled and no external URL given.
Renders "true" or nothing, so use it as (include "edgeloom.nats.internal" .).
*/}}
{{- define "edgeloom.nats.internal" -}}
{{- if and .Values.nats.enabled (not .Values.nats.url) }}true{{- end }}
{{- end }}

{{/*
The URL the operator (and through it every job pod) connects to.
*/}}
{{- define "edgeloom.nats.url" -}}
{{- if .Values.nats.url }}
{{- .Values.nats.url }}
{{- else if .Values.nats.enabled }}
{{- printf "nats://%s.%s.svc:4222" (include "edgeloom.nats.fullname" .) .Release.Namespace }}
{{- else }}
{{- fail "nats.enabled is false and nats.url is empty: set nats.url to an external NATS server, or enable the chart's NATS" }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the NATS user and password (keys user, password), or nothing when
the client connects without chart-managed credentials (external NATS without existingSecret:
put credentials in nats.url).
*/}}
{{- define "edgeloom.nats.authSecretName" -}}
{{- if .Values.nats.auth.existingSecret }}
{{- .Values.nats.auth.existingSecret }}
{{- else if include "edgeloom.nats.internal" . }}
{{- printf "%s-nats-auth" (include "edgeloom.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Container image reference: repository:tag, the tag defaulting to the chart's appVersion.
Call with (dict "image" .Values.operator.image "ctx" $).
*/}}
{{- define "edgeloom.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .ctx.Chart.AppVersion | toString) }}
{{- end }}

{{/*
Plurals of the edgeloom.io kinds, read from the chart's generated CRDs so that RBAC covers
exactly the kinds this chart installs. Renders a YAML list.
*/}}
{{- define "edgeloom.kindPlurals" -}}
{{- $plurals := list }}
{{- range $path, $_ := .Files.Glob "crds/*.yaml" }}
{{- $crd := $.Files.Get $path | fromYaml }}
{{- if eq $crd.spec.group "edgeloom.io" }}
{{- $plurals = append $plurals $crd.spec.names.plural }}
{{- end }}
{{- end }}
{{- if not $plurals }}
{{- fail "no edgeloom.io CRDs found under the chart's crds/ folder: run `edgeloom crds`" }}
{{- end }}
{{- toYaml (sortAlpha $plurals) }}
{{- end }}

{{/*
Renders the kind plurals with a suffix, e.g. (dict "ctx" $ "suffix" "/status").
*/}}
{{- define "edgeloom.kindResources" -}}
{{- $suffix := .suffix }}
{{- $resources := list }}
{{- range (include "edgeloom.kindPlurals" .ctx | fromYamlArray) }}
{{- $resources = append $resources (printf "%s%s" . $suffix) }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/*
Pod-level securityContext shared by every pod of the chart.
*/}}
{{- define "edgeloom.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Container-level securityContext shared by every container of the chart.
*/}}
{{- define "edgeloom.containerSecurityContext" -}}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
{{- end }}

{{/*
The operator's kopf command line; watchNamespaces replaces --all-namespaces.
*/}}
{{- define "edgeloom.operator.command" -}}
- kopf
- run
- --standalone
{{- if .Values.operator.watchNamespaces }}
{{- range .Values.operator.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
- --liveness=http://0.0.0.0:{{ .Values.operator.healthPort }}/healthz
- -m
- edgeloom_operators.main
{{- end }}

{{/*
Values of app.kubernetes.io/name that mark pods to scrape: job pods always carry "edgeloom",
the operator pod carries the chart name (nameOverride). Renders a JSON list.
*/}}
{{- define "edgeloom.monitoredNames" -}}
{{- uniq (list "edgeloom" (include "edgeloom.name" .)) | toJson }}
{{- end }}

{{/*
Pod labels copied onto the scrape targets (as app_kubernetes_io_name, ...), as the usual
annotation-based `kubernetes-pods` job does with labelmap: the dashboards and alerts select
`up` by them.
*/}}
{{- define "edgeloom.podTargetLabels" -}}
- app.kubernetes.io/name
- app.kubernetes.io/instance
- app.kubernetes.io/component
{{- end }}
