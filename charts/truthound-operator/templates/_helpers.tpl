{{/* The chart's name. */}}
{{- define "truthound-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name when it already contains the chart's name. */}}
{{- define "truthound-operator.fullname" -}}
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

{{- define "truthound-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "truthound-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "truthound-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "truthound-operator.labels" -}}
helm.sh/chart: {{ include "truthound-operator.chart" . }}
{{ include "truthound-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: truthound
{{- end }}

{{- define "truthound-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "truthound-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest. Argument: (list image-values chart-context). */}}
{{- define "truthound-operator.imageRef" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "truthound-operator.image" -}}
{{- include "truthound-operator.imageRef" (list .Values.image .) }}
{{- end }}

{{- define "truthound-operator.workerImage" -}}
{{- include "truthound-operator.imageRef" (list .Values.worker.image .) }}
{{- end }}

{{- define "truthound-operator.daskImage" -}}
{{- include "truthound-operator.imageRef" (list .Values.daskRunner.image .) }}
{{- end }}

{{/* "true" when leader election is on: asked for, or needed by more than one replica. */}}
{{- define "truthound-operator.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "truthound-operator.leaseName" -}}
{{- default (include "truthound-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* Where workers reach the progress service: this chart's progress Service. */}}
{{- define "truthound-operator.progressEndpoint" -}}
{{- if .Values.progress.endpoint }}
{{- .Values.progress.endpoint }}
{{- else }}
{{- printf "%s://%s-progress.%s:%d" (ternary "https" "http" .Values.progress.tls.enabled) (include "truthound-operator.fullname" .) .Release.Namespace (int .Values.service.progressPort) }}
{{- end }}
{{- end }}

{{- define "truthound-operator.progressTlsSecret" -}}
{{- default (printf "%s-progress-tls" (include "truthound-operator.fullname" .)) .Values.progress.tls.existingSecret }}
{{- end }}

{{- define "truthound-operator.progressKeySecret" -}}
{{- default (printf "%s-progress-key" (include "truthound-operator.fullname" .)) .Values.progress.key.existingSecret }}
{{- end }}

{{- define "truthound-operator.progressKeyKey" -}}
{{- if .Values.progress.key.existingSecret }}{{ .Values.progress.key.existingSecretKey }}{{ else }}key{{ end }}
{{- end }}

{{/* The podDefaults values that are set, as YAML (empty when none is): the operator's
--pod-defaults file. */}}
{{- define "truthound-operator.podDefaults" -}}
{{- $out := dict }}
{{- range $k, $v := .Values.podDefaults }}
{{- if $v }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- if $out }}
{{- toYaml $out }}
{{- end }}
{{- end }}
