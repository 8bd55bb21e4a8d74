{{- define "farm.name" -}}{{ .Chart.Name }}{{- end -}}
{{- define "farm.fullname" -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "farm.labels" -}}
app.kubernetes.io/name: {{ include "farm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "farm.selector" -}}
app.kubernetes.io/name: {{ include "farm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "farm.image" -}}{{ printf "%s:%s" .Values.image.repository .Values.image.tag }}{{- end -}}
{{- define "farm.executorImage" -}}{{ printf "%s:%s" .Values.executorImage.repository .Values.executorImage.tag }}{{- end -}}
{{- define "farm.serviceAccount" -}}{{ default (include "farm.fullname" .) .Values.serviceAccount.name }}{{- end -}}
{{- define "farm.secret" -}}{{ default (printf "%s-auth" (include "farm.fullname" .)) .Values.auth.existingSecret }}{{- end -}}
{{- define "farm.redisUrl" -}}
{{- if .Values.redis.enabled -}}redis://{{ include "farm.fullname" . }}-redis:6379/0{{- else -}}{{ required "redis.externalUrl is required when redis.enabled is false" .Values.redis.externalUrl }}{{- end -}}
{{- end -}}
{{- define "farm.env" -}}
- name: FARM_REDIS_URL
  value: {{ include "farm.redisUrl" . | quote }}
- name: FARM_ADMIN_TOKEN
  valueFrom: {secretKeyRef: {name: {{ include "farm.secret" . }}, key: admin-token}}
- name: FARM_DATA_DIR
  value: /var/lib/farm
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
{{- end -}}
{{- /* farm.env less the admin token, which executors never use. */ -}}
{{- define "farm.executorEnv" -}}
- name: FARM_REDIS_URL
  value: {{ include "farm.redisUrl" . | quote }}
- name: FARM_DATA_DIR
  value: /var/lib/farm
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
{{- end -}}
