{{/* The chart's name. */}}
{{- define "headinfer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: resource names start with it. */}}
{{- define "headinfer.fullname" -}}
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

{{- define "headinfer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The model's name as a label value: model.name, or else the pulled
reference's repository and quantization or file (bartowski/Llama-3.2-1B-
Instruct-GGUF:Q8_0 gives Llama-3.2-1B-Instruct-GGUF-Q8_0), or else the file's
base name without .gguf. Characters a label value cannot hold become "-",
and it is cut to 63 characters, beginning and ending alphanumeric.
*/}}
{{- define "headinfer.modelName" -}}
{{- $n := .Values.model.name }}
{{- if not $n }}
{{- if .Values.model.pull.enabled }}
{{- $ref := .Values.model.pull.ref | trimPrefix "https://huggingface.co/" | trimPrefix "hf.co/" }}
{{- $parts := splitList "/" $ref }}
{{- $n = rest $parts | join "-" | trimSuffix ".gguf" }}
{{- else }}
{{- $n = base .Values.model.file | trimSuffix ".gguf" }}
{{- end }}
{{- end }}
{{- $n = regexReplaceAll "[^A-Za-z0-9._-]" $n "-" | trunc 63 }}
{{- $n = regexReplaceAll "^[^A-Za-z0-9]+" $n "" }}
{{- regexReplaceAll "[^A-Za-z0-9]+$" $n "" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "headinfer.labels" -}}
helm.sh/chart: {{ include "headinfer.chart" . }}
{{ include "headinfer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: model-server
headinfer.io/model: {{ include "headinfer.modelName" . | quote }}
{{- end }}

{{/*
The Deployment's selector: fixed for the release's life (a selector cannot
change), so the model label is not in it; pods carry it besides.
*/}}
{{- define "headinfer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "headinfer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "headinfer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "headinfer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the API key, or "" when there is no key. */}}
{{- define "headinfer.apiKeySecret" -}}
{{- if .Values.apiKey.existingSecret }}
{{- .Values.apiKey.existingSecret }}
{{- else if .Values.apiKey.value }}
{{- printf "%s-api-key" (include "headinfer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "headinfer.apiKeySecretKey" -}}
{{- if .Values.apiKey.existingSecret }}
{{- .Values.apiKey.existingSecretKey }}
{{- else }}
{{- "api-key" }}
{{- end }}
{{- end }}

{{/* The model volume's claim, or "" for an emptyDir. */}}
{{- define "headinfer.modelClaim" -}}
{{- if .Values.persistence.existingClaim }}
{{- .Values.persistence.existingClaim }}
{{- else if .Values.persistence.enabled }}
{{- printf "%s-models" (include "headinfer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The -m argument: the pulled reference (found on the volume through
HEADINFER_MODELS, never fetched again by the server) or the file's path. */}}
{{- define "headinfer.modelArg" -}}
{{- if .Values.model.pull.enabled }}
{{- required "model.pull.ref is required when model.pull.enabled is true" .Values.model.pull.ref }}
{{- else if isAbs .Values.model.file }}
{{- .Values.model.file }}
{{- else }}
{{- printf "%s/%s" (.Values.persistence.mountPath | trimSuffix "/") (required "model.file is required when model.pull.enabled is false" .Values.model.file) }}
{{- end }}
{{- end }}

{{/* OWNER/REPO of the pulled reference: where the pull puts its file under
HEADINFER_MODELS. */}}
{{- define "headinfer.pullRepo" -}}
{{- $ref := .Values.model.pull.ref | trimPrefix "https://huggingface.co/" | trimPrefix "hf.co/" }}
{{- $parts := splitList "/" $ref }}
{{- if lt (len $parts) 2 }}
{{- fail (printf "model.pull.ref %q: want OWNER/REPO[:QUANT] or OWNER/REPO/FILE.gguf" .Values.model.pull.ref) }}
{{- end }}
{{- printf "%s/%s" (index $parts 0) (index $parts 1 | splitList ":" | first) }}
{{- end }}

{{- define "headinfer.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* terminationGracePeriodSeconds: the preStop sleep, then --grace, then
the device's release, with margin. */}}
{{- define "headinfer.terminationGrace" -}}
{{- if .Values.terminationGracePeriodSeconds }}
{{- .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- add (int .Values.preStopSleepSeconds) (int .Values.server.graceSeconds) 15 }}
{{- end }}
{{- end }}
