{{- define "ddc.fullname" -}}
{{- printf "%s-%s" .Release.Name .Values.role | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ddc.labels" -}}
app.kubernetes.io/name: ddc
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.role }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ddc.selector" -}}
app.kubernetes.io/name: ddc
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.role }}
{{- end -}}

{{- define "ddc.keySecret" -}}
{{- if .Values.existingKeySecret -}}{{ .Values.existingKeySecret }}{{- else -}}{{ include "ddc.fullname" . }}-keys{{- end -}}
{{- end -}}
