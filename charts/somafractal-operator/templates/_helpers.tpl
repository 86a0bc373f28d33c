{{- define "sfo.fullname" -}}
{{- printf "%s" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sfo.labels" -}}
app.kubernetes.io/name: somafractal-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sfo.selector" -}}
app.kubernetes.io/name: somafractal-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sfo.secretName" -}}
{{- default (printf "%s-admin" (include "sfo.fullname" .)) .Values.existingSecret -}}
{{- end -}}
