{{/* The name of every object: the release name, or "dirsync" for a release named dirsync. */}}
{{- define "dirsync.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dirsync.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dirsync.labels" -}}
{{ include "dirsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The Secret mounted at /etc/dirsync/secrets. */}}
{{- define "dirsync.secretName" -}}
{{- if .Values.secrets.create -}}
{{ include "dirsync.fullname" . }}-secrets
{{- else -}}
{{ required "secrets.existingSecret: name the Secret holding dirsync's secrets, or set secrets.create: true" .Values.secrets.existingSecret }}
{{- end -}}
{{- end -}}

{{/* config.yaml: cache and api from the values, then .Values.config. */}}
{{- define "dirsync.config" -}}
{{- $dir := "/etc/dirsync/secrets" -}}
{{- $redis := dict "addrs" .Values.redis.addrs "key_prefix" .Values.redis.keyPrefix -}}
{{- if .Values.redis.masterName }}{{ $_ := set $redis "master_name" .Values.redis.masterName }}{{ end -}}
{{- if .Values.redis.username }}{{ $_ := set $redis "username" .Values.redis.username }}{{ end -}}
{{- if .Values.redis.tls }}{{ $_ := set $redis "tls" true }}{{ end -}}
{{- if .Values.redis.passwordKey }}{{ $_ := set $redis "password_file" (printf "%s/%s" $dir .Values.redis.passwordKey) }}{{ end -}}
{{- $fullname := include "dirsync.fullname" . -}}
{{- $hosts := concat (list $fullname (printf "%s.%s" $fullname .Release.Namespace) (printf "%s.%s.svc" $fullname .Release.Namespace)) .Values.allowedHosts -}}
{{- $api := dict "listen" (printf "0.0.0.0:%d" (int .Values.port)) "admin_token_file" (printf "%s/%s" $dir (required "secrets.adminTokenKey is required" .Values.secrets.adminTokenKey)) "read_token_file" (printf "%s/%s" $dir (required "secrets.readTokenKey is required" .Values.secrets.readTokenKey)) "allowed_hosts" $hosts -}}
{{- $cfg := merge (dict "cache" (dict "backend" "redis" "redis" $redis) "api" $api) (deepCopy .Values.config) -}}
{{- if hasKey .Values.config "cache" }}{{ fail "config.cache: set the cache with the redis values, not in config" }}{{ end -}}
{{- if hasKey .Values.config "api" }}{{ fail "config.api: the chart writes the api section (port, secrets.*TokenKey, allowedHosts)" }}{{ end -}}
{{- toYaml $cfg -}}
{{- end -}}
