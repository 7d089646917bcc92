{{/* Names and labels shared by every template. */}}

{{- define "df.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "df.fullname" -}}
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

{{- define "df.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "df.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include "df.selector" (list $ "supernode") */}}
{{- define "df.selector" -}}
{{- $top := index . 0 -}}
app.kubernetes.io/name: {{ include "df.name" $top }}
app.kubernetes.io/instance: {{ $top.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "df.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "df.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "df.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the credentials: the user's existingSecret, or the chart's own. */}}
{{- define "df.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- if and .Values.externalRedis.password (not .Values.externalRedis.existingSecret) -}}
{{- fail "externalRedis.password is not used with secrets.existingSecret (the chart makes no Secret to hold it): set externalRedis.existingSecret" -}}
{{- end -}}
{{- if and .Values.externalDatabase.password (not .Values.externalDatabase.existingSecret) -}}
{{- fail "externalDatabase.password is not used with secrets.existingSecret (the chart makes no Secret to hold it): set externalDatabase.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- default (printf "%s-secrets" (include "df.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "df.redisSecretName" -}}
{{- if .Values.externalRedis.existingSecret -}}
{{- .Values.externalRedis.existingSecret -}}
{{- else -}}
{{- include "df.secretName" . -}}
{{- end -}}
{{- end -}}

{{- define "df.redisPasswordKey" -}}
{{- if .Values.externalRedis.existingSecret -}}
{{- .Values.externalRedis.existingSecretPasswordKey -}}
{{- else -}}
redis-password
{{- end -}}
{{- end -}}

{{- define "df.dbSecretName" -}}
{{- if .Values.externalDatabase.existingSecret -}}
{{- .Values.externalDatabase.existingSecret -}}
{{- else -}}
{{- include "df.secretName" . -}}
{{- end -}}
{{- end -}}

{{- define "df.dbPasswordKey" -}}
{{- if .Values.externalDatabase.existingSecret -}}
{{- .Values.externalDatabase.existingSecretPasswordKey -}}
{{- else -}}
database-password
{{- end -}}
{{- end -}}

{{- define "df.hasRedisPassword" -}}
{{- if or .Values.externalRedis.password .Values.externalRedis.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "df.hasDbPassword" -}}
{{- if or .Values.externalDatabase.password .Values.externalDatabase.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "df.home" -}}
{{- (include "df.settings" . | fromJson).home | default "/home/admin/supernode" -}}
{{- end -}}

{{- define "df.claimName" -}}
{{- default (printf "%s-seed-cache" (include "df.fullname" .)) .Values.persistence.existingClaim -}}
{{- end -}}

{{/* The seed cache (shared, RWX), the data directory and /tmp (the root filesystem is read-only). */}}
{{- define "df.volumes" -}}
- name: seed-cache
  persistentVolumeClaim: {claimName: {{ include "df.claimName" . }}}
- name: home
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}
