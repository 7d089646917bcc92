{{/* Settings: the DF_* environment of every pod, built from values. */}}

{{/* Go duration (3m, 1h30m, 15s, 500ms) or a plain number of seconds -> seconds (float). */}}
{{- define "df.seconds" -}}
{{- $v := toString . | trim -}}
{{- if regexMatch "^[0-9]+(\\.[0-9]+)?$" $v -}}
{{- $v -}}
{{- else if regexMatch "^([0-9]+(\\.[0-9]+)?(h|ms|m|s))+$" $v -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9.]+(h|ms|m|s)" $v -1 -}}
{{- $n := float64 (regexFind "^[0-9.]+" .) -}}
{{- $unit := regexFind "(h|ms|m|s)$" . -}}
{{- $mult := get (dict "h" 3600.0 "m" 60.0 "s" 1.0 "ms" 0.001) $unit -}}
{{- $total = addf $total (mulf $n $mult) -}}
{{- end -}}
{{- $total -}}
{{- else -}}
{{- fail (printf "supernode.configData.base: %q is not a duration (like 3m, 2h, 15s)" $v) -}}
{{- end -}}
{{- end -}}

{{/* Size as the Go supernode wrote it (100G, 5GB, 512M, 1024) -> bytes, 1024-based. */}}
{{- define "df.bytes" -}}
{{- $v := toString . | trim | upper -}}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?(B|K|KB|M|MB|G|GB|T|TB)?$" $v) -}}
{{- fail (printf "supernode.configData.base: %q is not a size (like 100G, 5G, 512M)" $v) -}}
{{- end -}}
{{- $n := float64 (regexFind "^[0-9.]+" $v) -}}
{{- $unit := trimSuffix "B" (regexFind "[A-Z]*$" $v) -}}
{{- $mult := get (dict "" 1.0 "K" 1024.0 "M" 1048576.0 "G" 1073741824.0 "T" 1099511627776.0) $unit -}}
{{- mulf $n $mult | int64 -}}
{{- end -}}

{{/* The legacy configData.base keys this chart maps, and the settings they become. */}}
{{- define "df.legacyKeys" -}}
{{- dict
  "listenPort" "port" "downloadPort" "download_port" "homeDir" "home" "advertiseIP" "advertise_ip"
  "peerUpLimit" "peer_up_limit" "peerDownLimit" "peer_down_limit" "eliminationLimit" "elimination_limit"
  "failureCountLimit" "fail_count_limit" | toJson -}}
{{- end -}}

{{/* Settings as a map name -> value: legacy keys first, `config` over them. */}}
{{- define "df.settings" -}}
{{- $base := .Values.supernode.configData.base | default dict -}}
{{- $out := dict -}}
{{- range $legacy, $setting := include "df.legacyKeys" . | fromJson -}}
{{- if hasKey $base $legacy -}}{{- $_ := set $out $setting (get $base $legacy) -}}{{- end -}}
{{- end -}}
{{- if hasKey $base "failAccessInterval" -}}
{{- $_ := set $out "fail_access_seconds" (include "df.seconds" $base.failAccessInterval | float64 | int64) -}}
{{- end -}}
{{- if hasKey $base "taskExpireTime" -}}
{{- $_ := set $out "task_ttl_seconds" (include "df.seconds" $base.taskExpireTime | float64 | int64) -}}
{{- end -}}
{{- if hasKey $base "gcDiskInterval" -}}
{{- $_ := set $out "gc_interval_seconds" (include "df.seconds" $base.gcDiskInterval) -}}
{{- end -}}
{{- if hasKey $base "youngGCThreshold" -}}
{{- $_ := set $out "gc_young_free_bytes" (include "df.bytes" $base.youngGCThreshold) -}}
{{- end -}}
{{- if hasKey $base "fullGCThreshold" -}}
{{- $_ := set $out "gc_full_free_bytes" (include "df.bytes" $base.fullGCThreshold) -}}
{{- end -}}
{{- range $k, $v := .Values.config -}}{{- $_ := set $out $k $v -}}{{- end -}}
{{- $_ := set $out "port" (include "df.port" .) -}}
{{- $_ := set $out "download_port" (include "df.downloadPort" .) -}}
{{- $_ := set $out "listen" "0.0.0.0" -}}
{{- $_ := set $out "seed_dir" .Values.persistence.mountPath -}}
{{- $_ := set $out "drain_seconds" .Values.supernode.drainSeconds -}}
{{- if not (hasKey $out "workers") -}}
{{- $_ := set $out "workers" .Values.supernode.workers -}}
{{- end -}}
{{- if not (hasKey $out "advertise_download_port") -}}
{{- $_ := set $out "advertise_download_port" .Values.supernode.service.ports.targetPortNginx -}}
{{- end -}}
{{- $_ := set $out "shutdown_timeout_seconds" .Values.supernode.shutdownTimeoutSeconds -}}
{{- if and (not (hasKey $out "advertise_ip")) .Values.supernode.service.clusterIP -}}
{{- $_ := set $out "advertise_ip" .Values.supernode.service.clusterIP -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Legacy keys accepted without an equivalent setting (listed on the ConfigMap, never silently lost). */}}
{{- define "df.legacyIgnored" -}}
{{- $mapped := list "failAccessInterval" "taskExpireTime" "gcDiskInterval" "youngGCThreshold" "fullGCThreshold" -}}
{{- $known := include "df.legacyKeys" . | fromJson -}}
{{- $ignored := list -}}
{{- range $k, $_ := .Values.supernode.configData.base | default dict -}}
{{- if not (or (hasKey $known $k) (has $k $mapped)) -}}{{- $ignored = append $ignored $k -}}{{- end -}}
{{- end -}}
{{- $ignored | sortAlpha | join "," -}}
{{- end -}}

{{- define "df.port" -}}
{{- $base := .Values.supernode.configData.base | default dict -}}
{{- .Values.config.port | default $base.listenPort | default .Values.supernode.service.ports.targetPortHTTP | int -}}
{{- end -}}

{{- define "df.downloadPort" -}}
{{- $base := .Values.supernode.configData.base | default dict -}}
{{- .Values.config.download_port | default $base.downloadPort | default .Values.supernode.service.ports.targetPortNginx | int -}}
{{- end -}}

{{/* Redis URL, with $(REDIS_PASSWORD) where the password goes (Kubernetes expands it at start). */}}
{{- define "df.redisAuth" -}}
{{- if include "df.hasRedisPassword" . -}}:$(REDIS_PASSWORD)@{{- end -}}
{{- end -}}

{{- define "df.redisHostAndDb" -}}
{{- $r := .Values.externalRedis -}}
{{- if $r.url -}}
{{- $u := urlParse $r.url -}}
{{- if not (has $u.scheme (list "redis" "rediss")) -}}
{{- fail "externalRedis.url must be redis:// or rediss:// (for Sentinel use externalRedis.sentinel)" -}}
{{- end -}}
{{- if $u.userinfo -}}{{- fail "externalRedis.url: leave the password out of the URL; set externalRedis.password or existingSecret" -}}{{- end -}}
{{- dict "scheme" $u.scheme "host" $u.host "db" (trimPrefix "/" $u.path | default "0") | toJson -}}
{{- else if .Values.redis.enabled -}}
{{- dict "scheme" "redis" "host" (printf "%s-redis:6379" (include "df.fullname" .)) "db" "0" | toJson -}}
{{- else -}}
{{- fail "set externalRedis.url, externalRedis.sentinel.addrs or externalRedis.cluster.addrs (or redis.enabled for a trial, not for production)" -}}
{{- end -}}
{{- end -}}

{{/* Which external Redis is set: "url", "sentinel", "cluster", or "" (the demo). More than one is refused:
     the chart would otherwise pick one silently. */}}
{{- define "df.externalRedisKind" -}}
{{- $r := .Values.externalRedis -}}
{{- $kinds := list -}}
{{- if $r.url -}}{{- $kinds = append $kinds "url" -}}{{- end -}}
{{- if $r.sentinel.addrs -}}{{- $kinds = append $kinds "sentinel" -}}{{- end -}}
{{- if ($r.cluster | default dict).addrs -}}{{- $kinds = append $kinds "cluster" -}}{{- end -}}
{{- if gt (len $kinds) 1 -}}
{{- fail (printf "externalRedis: set one of url, sentinel.addrs and cluster.addrs, not %s" (join " and " $kinds)) -}}
{{- end -}}
{{- first $kinds | default "" -}}
{{- end -}}

{{/* The demo Redis runs only while no external Redis is set. */}}
{{- define "df.demoRedis" -}}
{{- if and .Values.redis.enabled (not (include "df.externalRedisKind" .)) -}}true{{- end -}}
{{- end -}}

{{- define "df.redisUrl" -}}
{{- $s := .Values.externalRedis.sentinel -}}
{{- $kind := include "df.externalRedisKind" . -}}
{{- if eq $kind "sentinel" -}}
{{- printf "redis+sentinel://%s%s/%v?master=%s" (include "df.redisAuth" .) (join "," $s.addrs) $s.db $s.masterName -}}
{{- else if eq $kind "cluster" -}}
{{- /* Any nodes: redis-py's cluster client discovers the rest (app.core.cluster_url); db 0 only. */ -}}
{{- printf "redis+cluster://%s%s" (include "df.redisAuth" .) (join "," .Values.externalRedis.cluster.addrs) -}}
{{- else -}}
{{- $r := include "df.redisHostAndDb" . | fromJson -}}
{{- printf "%s://%s%s/%s" $r.scheme (include "df.redisAuth" .) $r.host $r.db -}}
{{- end -}}
{{- end -}}

{{- define "df.brokerUrl" -}}
{{- $kind := include "df.externalRedisKind" . -}}
{{- if .Values.broker.url -}}
{{- .Values.broker.url -}}
{{- else if eq $kind "cluster" -}}
{{- fail "externalRedis.cluster needs broker.url: Celery's broker cannot be a Redis Cluster (Kombu has no cluster transport); give it a plain or Sentinel Redis" -}}
{{- else if eq $kind "sentinel" -}}
{{- /* The state store's Sentinel form; replicas and workers turn it into Kombu's (app.core.sentinel_url). */ -}}
{{- $s := .Values.externalRedis.sentinel -}}
{{- printf "redis+sentinel://%s%s/%v?master=%s" (include "df.redisAuth" .) (join "," $s.addrs) .Values.broker.brokerDB $s.masterName -}}
{{- else -}}
{{- $r := include "df.redisHostAndDb" . | fromJson -}}
{{- printf "%s://%s%s/%v" $r.scheme (include "df.redisAuth" .) $r.host .Values.broker.brokerDB -}}
{{- end -}}
{{- end -}}

{{- define "df.hasDatabase" -}}
{{- if or .Values.externalDatabase.url .Values.externalDatabase.host -}}true{{- end -}}
{{- end -}}

{{- define "df.databaseUrl" -}}
{{- $d := .Values.externalDatabase -}}
{{- $pw := "" -}}
{{- if include "df.hasDbPassword" . -}}{{- $pw = ":$(DATABASE_PASSWORD)" -}}{{- end -}}
{{- if $d.url -}}
{{- $u := urlParse $d.url -}}
{{- if contains ":" $u.userinfo -}}{{- fail "externalDatabase.url: leave the password out of the URL; set externalDatabase.password or existingSecret" -}}{{- end -}}
{{- $user := $u.userinfo | default $d.user -}}
{{- $query := "" -}}{{- if $u.query -}}{{- $query = printf "?%s" $u.query -}}{{- end -}}
{{- printf "%s://%s%s@%s%s%s" $u.scheme $user $pw $u.host $u.path $query -}}
{{- else -}}
{{- printf "postgresql+asyncpg://%s%s@%s:%v/%s" $d.user $pw $d.host $d.port $d.database -}}
{{- end -}}
{{- end -}}

{{/* The env list of every pod running the image (replica, worker, migrate). */}}
{{- define "df.env" -}}
{{- if include "df.hasRedisPassword" . }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "df.redisSecretName" . }}, key: {{ include "df.redisPasswordKey" . }}}
{{- end }}
{{- if include "df.hasDbPassword" . }}
- name: DATABASE_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "df.dbSecretName" . }}, key: {{ include "df.dbPasswordKey" . }}}
{{- end }}
- name: DF_REDIS_URL
  value: {{ include "df.redisUrl" . | quote }}
- name: DF_BROKER_URL
  value: {{ include "df.brokerUrl" . | quote }}
{{- if include "df.hasDatabase" . }}
- name: DF_DATABASE_URL
  value: {{ include "df.databaseUrl" . | quote }}
{{- end }}
{{- range $key, $setting := dict "api-tokens" "DF_API_TOKENS" "harbor-webhook-secret" "DF_HARBOR_WEBHOOK_SECRET" "harbor-registry-username" "DF_HARBOR_REGISTRY_USERNAME" "harbor-registry-password" "DF_HARBOR_REGISTRY_PASSWORD" }}
- name: {{ $setting }}
  valueFrom:
    secretKeyRef: {name: {{ include "df.secretName" $ }}, key: {{ $key }}, optional: true}
{{- end }}
{{- $settings := include "df.settings" . | fromJson }}
{{- if not (hasKey $settings "advertise_ip") }}
# The CDN peer is advertised at the Service's cluster IP (a VIP: any replica serves any seed's pieces),
# which Kubernetes gives every pod of the namespace started after the Service as <NAME>_SERVICE_HOST.
# Hosts outside the cluster need config.advertise_ip set to the NodePort/LoadBalancer address instead.
- name: DF_ADVERTISE_IP
  value: {{ printf "$(%s_SERVICE_HOST)" (include "df.fullname" . | upper | replace "-" "_") | quote }}
{{- end }}
{{- end -}}
