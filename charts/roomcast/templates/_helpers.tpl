{{/* Names, labels and images shared by every template. */}}

{{- define "roomcast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name of the operator's objects. */}}
{{- define "roomcast.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "roomcast.operatorName" -}}
{{- printf "%s-operator" (include "roomcast.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "roomcast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "roomcast.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object of the release, without name and component. */}}
{{- define "roomcast.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: roomcast
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels of the operator's objects. */}}
{{- define "roomcast.labels" -}}
{{ include "roomcast.commonLabels" . }}
app.kubernetes.io/name: {{ include "roomcast.name" . }}-operator
app.kubernetes.io/component: operator
{{- end -}}

{{- define "roomcast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "roomcast.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository@digest when a digest is set (immutable), else repository:tag with the tag
defaulting to the chart's appVersion. */}}
{{- define "roomcast.image" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository (default .appVersion .tag) -}}
{{- end -}}
{{- end -}}

{{- define "roomcast.operatorImage" -}}
{{- include "roomcast.image" (dict "repository" .Values.image.repository "tag" .Values.image.tag "digest" .Values.image.digest "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{- define "roomcast.gatewayImage" -}}
{{- include "roomcast.image" (dict "repository" .Values.gatewayImage.repository "tag" .Values.gatewayImage.tag "digest" .Values.gatewayImage.digest "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{/* Endpoint settings shared by the ServiceMonitor and the PodMonitor (`.` is the monitor's
values): honorLabels, relabelings and any extra endpoint properties. */}}
{{- define "roomcast.monitorEndpointExtras" -}}
honorLabels: {{ .honorLabels }}
{{- with .relabelings }}
relabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .endpointAdditionalProperties }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Namespace the controller role applies to: the watched one, or the cluster. */}}
{{- define "roomcast.clusterScoped" -}}
{{- if eq .Values.watchNamespace "" -}}true{{- end -}}
{{- end -}}
