{{/* Gatehouse chart helpers: names, labels, images. */}}

{{/* Prefix of every object name: fullnameOverride, else the release name. */}}
{{- define "gatehouse.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; call with (dict "ctx" $ "component" "agent"). */}}
{{- define "gatehouse.labels" -}}
{{ include "gatehouse.selectorLabels" . }}
app.kubernetes.io/part-of: gatehouse
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
{{- end -}}

{{/* The labels selectors match on; same call as gatehouse.labels. */}}
{{- define "gatehouse.selectorLabels" -}}
app.kubernetes.io/name: gatehouse
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image of a Gatehouse binary; call with (dict "ctx" $ "name" "gatehouse-agent"). */}}
{{- define "gatehouse.image" -}}
{{- printf "%s/%s:%s" .ctx.Values.image.registry .name (default .ctx.Chart.AppVersion .ctx.Values.image.tag) -}}
{{- end -}}

{{/* Whether the in-cluster ClickHouse StatefulSet runs. */}}
{{- define "gatehouse.inClusterClickHouse" -}}
{{- if and .Values.clickhouse.enabled (not .Values.externalClickHouse.url) -}}true{{- end -}}
{{- end -}}

{{/* The ClickHouse URL the collector writes to. */}}
{{- define "gatehouse.clickhouseUrl" -}}
{{- if .Values.externalClickHouse.url -}}
{{- .Values.externalClickHouse.url -}}
{{- else if .Values.clickhouse.enabled -}}
{{- printf "http://%s-clickhouse.%s.svc:8123" (include "gatehouse.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- fail "set externalClickHouse.url or clickhouse.enabled: the collector needs ClickHouse (the embedded store is single-node: see deploy/docker-compose.yml)" -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding the ClickHouse password. */}}
{{- define "gatehouse.clickhousePasswordSecret" -}}
{{- default (printf "%s-clickhouse" (include "gatehouse.fullname" .)) .Values.clickhouse.passwordSecret -}}
{{- end -}}
