{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "tideshift.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "tideshift.fullname" -}}
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

{{- define "tideshift.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tideshift.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tideshift.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tideshift.labels" -}}
helm.sh/chart: {{ include "tideshift.chart" . }}
{{ include "tideshift.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tideshift
{{- end }}

{{- define "tideshift.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tideshift.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tideshift.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "tideshift.leaseName" -}}
{{- default (include "tideshift.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
Namespaces the daemon may act in when rbac.scope is namespaced: the listed ones plus the
release namespace (policies are often kept next to the daemon), without duplicates.
*/}}
{{- define "tideshift.rbacNamespaces" -}}
{{- $namespaces := list .Release.Namespace }}
{{- range .Values.rbac.namespaces }}
{{- $namespaces = append $namespaces . }}
{{- end }}
{{- $namespaces | uniq | toJson }}
{{- end }}

{{/*
The rules the daemon needs on namespaced objects, shared by the ClusterRole and the per-namespace
Roles so the two scopes can never grant different verbs. Every verb here is used by the daemon:
- shiftpolicies: watch the policies; patch status only (the spec belongs to the user).
- deployments, statefulsets, jobs, pods, horizontalpodautoscalers: read; pods to see what is
  Ready and Pending, HPAs to detect a competing writer.
- deployments/scale, statefulsets/scale: the only way replica counts are written.
- jobs: patch parallelism and suspend.
- events: report shifts and problems (events.k8s.io, and core for older consumers).
*/}}
{{- define "tideshift.namespacedRules" -}}
- apiGroups: ["tideshift.io"]
  resources: ["shiftpolicies"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["tideshift.io"]
  resources: ["shiftpolicies/status"]
  verbs: ["patch"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale", "statefulsets/scale"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
