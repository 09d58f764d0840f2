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
The URL the operator (and through it every job pod) connects to. The chart's NATS serves TLS
only, so its URL is tls://.
*/}}
{{- define "edgeloom.nats.url" -}}
{{- if .Values.nats.url }}
{{- .Values.nats.url }}
{{- else if .Values.nats.enabled }}
{{- printf "tls://%s.%s.svc:4222" (include "edgeloom.nats.fullname" .) .Release.Namespace }}
{{- else }}
{{- fail "nats.enabled is false and nats.url is empty: set nats.url to an external NATS server, or enable the chart's NATS" }}
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

{{/*
A job pod's edgeloom.io/<x> labels as target labels edgeloom_<x> (kind, job, role, run: the
resource's uid), as the annotation-based `kubernetes-pods` job's labelmap does.
*/}}
{{- define "edgeloom.jobTargetRelabelings" -}}
- action: labelmap
  regex: __meta_kubernetes_pod_label_edgeloom_io_(.+)
  replacement: edgeloom_$1
{{- end }}

{{/*
Name of the Secret with the chart NATS's server certificate (tls.crt, tls.key, ca.crt): the
user's (nats.tls.existingSecret), or the one cert-manager or the chart writes.
*/}}
{{- define "edgeloom.nats.tlsSecretName" -}}
{{- if .Values.nats.tls.existingSecret }}
{{- .Values.nats.tls.existingSecret }}
{{- else }}
{{- printf "%s-nats-tls" (include "edgeloom.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Name of the Secret whose ca.crt the operator verifies NATS with: nats.tls.caSecret, else the
server certificate's Secret of the chart's NATS. Nothing for an external NATS without
caSecret (the system trust store verifies it).
*/}}
{{- define "edgeloom.nats.caSecretName" -}}
{{- if .Values.nats.tls.caSecret }}
{{- .Values.nats.tls.caSecret }}
{{- else if include "edgeloom.nats.internal" . }}
{{- include "edgeloom.nats.tlsSecretName" . }}
{{- end }}
{{- end }}

{{/* Folder of the server certificate (tls.crt, tls.key, ca.crt) in the NATS containers. */}}
{{- define "edgeloom.nats.tlsDir" -}}
/etc/nats-tls
{{- end }}

{{/* Folder of the NATS CA in the operator and helm-test containers (EDGELOOM_NATS_CA_FILE). */}}
{{- define "edgeloom.nats.caDir" -}}
/etc/edgeloom/nats-ca
{{- end }}

{{/*
DNS names the chart NATS's certificate carries: the client Service (short, namespaced, .svc,
fully qualified), the headless Service and each pod's name under it (routes dial those), then
nats.tls.extraDnsNames. Renders a YAML list.
*/}}
{{- define "edgeloom.nats.dnsNames" -}}
{{- $ns := .Release.Namespace }}
{{- $domain := .Values.clusterDomain }}
{{- $client := include "edgeloom.nats.fullname" . }}
{{- $headless := include "edgeloom.nats.headlessName" . }}
{{- $names := list $client (printf "%s.%s" $client $ns) (printf "%s.%s.svc" $client $ns) (printf "%s.%s.svc.%s" $client $ns $domain) }}
{{- $names = concat $names (list (printf "%s.%s.svc" $headless $ns) (printf "%s.%s.svc.%s" $headless $ns $domain)) }}
{{- range $i := until (int .Values.nats.replicas) }}
{{- $pod := printf "%s-%d.%s.%s.svc" $client $i $headless $ns }}
{{- $names = concat $names (list $pod (printf "%s.%s" $pod $domain)) }}
{{- end }}
{{- toYaml (uniq (concat $names .Values.nats.tls.extraDnsNames)) }}
{{- end }}

{{/*
Digest of the names the chart NATS's certificate carries; the generated certificate is signed
anew (and the NATS pods restarted) when it changes.
*/}}
{{- define "edgeloom.nats.tlsNamesDigest" -}}
{{- dict "dns" (include "edgeloom.nats.dnsNames" . | fromYamlArray) "ips" .Values.nats.tls.extraIpAddresses | toJson | sha256sum }}
{{- end }}

{{/*
Name of the Secret in the release namespace holding the NATS account key (key account.nk)
that signs every job's credentials: nats.auth.existingSecret, or the one the operator
creates on first start for the chart's own NATS. The operator's RBAC may get this one Secret
by name there.
*/}}
{{- define "edgeloom.nats.authoritySecretName" -}}
{{- if .Values.nats.auth.existingSecret }}
{{- .Values.nats.auth.existingSecret }}
{{- else if include "edgeloom.nats.internal" . }}
{{- printf "%s-nats-authority" (include "edgeloom.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else if .Values.nats.url }}
{{- fail "nats.url is set: set nats.auth.existingSecret to a Secret with the account key (account.nk) of that server's edgeloom account" }}
{{- else }}
{{- include "edgeloom.nats.url" . }}{{/* fails: no NATS at all */}}
{{- end }}
{{- end }}
