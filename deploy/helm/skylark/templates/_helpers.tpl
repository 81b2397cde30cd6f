{{/*
Names, labels and the environment shared by every Skylark workload.
*/}}

{{- define "skylark.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, at most 63 characters (DNS names); components append
"-api", "-sfu", … so it is cut at 52.
*/}}
{{- define "skylark.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "skylark.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels. Call with (dict "ctx" $ "component" "api").
*/}}
{{- define "skylark.labels" -}}
helm.sh/chart: {{ include "skylark.chart" .ctx }}
{{ include "skylark.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: skylark
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/*
Selector labels. Call with (dict "ctx" $ "component" "api").
*/}}
{{- define "skylark.selectorLabels" -}}
app.kubernetes.io/name: {{ include "skylark.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "skylark.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The Secret holding SKYLARK_JWT_SECRET, SKYLARK_PLAYBACK_SECRET, SKYLARK_INTERNAL_SECRET,
DATABASE_URL and REDIS_URL.
*/}}
{{- define "skylark.secretName" -}}
{{- default (include "skylark.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
A signing key of the release's Secret: the value, else the one already in the
Secret (kept across upgrades), else a new random one. Call with
(dict "ctx" $ "value" .Values.x "key" "SKYLARK_…").
*/}}
{{- define "skylark.signingKey" -}}
{{- if .value }}
{{- .value }}
{{- else }}
{{- $old := lookup "v1" "Secret" .ctx.Release.Namespace (include "skylark.fullname" .ctx) }}
{{- if and $old $old.data (hasKey $old.data .key) }}
{{- index $old.data .key | b64dec }}
{{- else }}
{{- randAlphaNum 64 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment of every long-running target: logs, traces, data dir.
SKYLARK_DATA_DIR is an emptyDir: nothing durable lives there once DATABASE_URL and
SKYLARK_JWT_SECRET are set.
*/}}
{{- define "skylark.env.common" -}}
- name: LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
- name: RUST_LOG
  value: {{ .Values.logging.level | quote }}
{{- with .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: SKYLARK_DATA_DIR
  value: /data
- name: SKYLARK_TRUSTED_PROXIES
  value: {{ join "," .Values.trustedProxies | quote }}
{{- end }}

{{/*
The token signing key: the API's alone (it mints access and viewer tokens).
*/}}
{{- define "skylark.env.jwtSecret" -}}
- name: SKYLARK_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "skylark.secretName" . }}
      key: SKYLARK_JWT_SECRET
{{- end }}

{{/*
The playback URL key: signaling signs private rooms' HLS/FLV URLs, packagers check
them. Separate from the JWT key, so neither can mint access tokens.
*/}}
{{- define "skylark.env.playbackSecret" -}}
- name: SKYLARK_PLAYBACK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "skylark.secretName" . }}
      key: SKYLARK_PLAYBACK_SECRET
{{- end }}

{{/*
The shared secret of internal gRPC calls: every target but migrate (servers check it,
clients send it).
*/}}
{{- define "skylark.env.internalSecret" -}}
- name: SKYLARK_INTERNAL_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "skylark.secretName" . }}
      key: SKYLARK_INTERNAL_SECRET
# A second secret accepted during a rotation: set only while one is under way.
- name: SKYLARK_INTERNAL_SECRET_ACCEPT
  valueFrom:
    secretKeyRef:
      name: {{ include "skylark.secretName" . }}
      key: SKYLARK_INTERNAL_SECRET_ACCEPT
      optional: true
{{- end }}

{{/*
Where signaling and the packager reach the API's RoomDirectory gRPC.
*/}}
{{- define "skylark.env.apiGrpcUrl" -}}
- name: SKYLARK_API_GRPC_URL
  value: "http://{{ include "skylark.fullname" . }}-api:{{ .Values.api.grpcPort }}"
{{- end }}

{{/*
The Redis bus: every target but migrate.
*/}}
{{- define "skylark.env.redis" -}}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "skylark.secretName" . }}
      key: REDIS_URL
- name: SKYLARK_REDIS_PREFIX
  value: {{ .Values.redis.prefix | quote }}
{{- end }}

{{/*
The internal listener (SKYLARK_INTERNAL_ADDR: /metrics, /healthz, /readyz) of a workload,
on a container port named `internal` that only the headless <fullname>-internal Service
lists; pods with one carry skylark.io/internal: "true", which that Service selects.
Call with (dict "bind" "0.0.0.0" "port" 9090).
*/}}
{{- define "skylark.env.internal" -}}
- name: SKYLARK_INTERNAL_ADDR
  value: "{{ .bind }}:{{ .port }}"
{{- end }}

{{- define "skylark.port.internal" -}}
- name: internal
  containerPort: {{ .port }}
  protocol: TCP
{{- end }}

{{/*
The internal ports must not share a number with a pod's other ports.
*/}}
{{- define "skylark.checkInternalPorts" -}}
{{- if has (int .Values.internalPort) (list 8080 (int .Values.api.grpcPort) (int .Values.rtmp.port)) }}
{{- fail "internalPort must differ from the pods' HTTP port (8080), api.grpcPort and rtmp.port" }}
{{- end }}
{{- if has (int .Values.sfu.internalPort) (list (int .Values.sfu.httpPort) (int .Values.sfu.grpcPort) (int .Values.sfu.udpPort) (int .Values.sfu.tcpPort)) }}
{{- fail "sfu.internalPort must differ from sfu.httpPort, sfu.grpcPort, sfu.udpPort and sfu.tcpPort" }}
{{- end }}
{{- if has (int .Values.sfu.tcpPort) (list (int .Values.sfu.httpPort) (int .Values.sfu.grpcPort)) }}
{{- fail "sfu.tcpPort (ICE over TCP) must differ from sfu.httpPort and sfu.grpcPort" }}
{{- end }}
{{- end }}

{{/*
Pod annotations for Prometheus scrapers that read them: the internal port.
Call with (dict "port" 9090).
*/}}
{{- define "skylark.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}

{{/*
Probes on the HTTP port: readiness /readyz, liveness /healthz.
*/}}
{{- define "skylark.probes" -}}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 6
{{- end }}

{{/*
Recordings storage of the packagers and the api: SKYLARK_RECORDINGS_URL, and the volume
of recordings.existingClaim at /recordings. With an s3:// URL: the AWS_* settings of
recordings.s3, the credentials from recordings.s3.existingSecret (none there: the
pod's own identity, e.g. IRSA).
*/}}
{{- define "skylark.env.recordings" -}}
{{- $default := ternary "file:///recordings" "file:///data/recordings" (ne .Values.recordings.existingClaim "") -}}
- name: SKYLARK_RECORDINGS_URL
  value: {{ .Values.recordings.url | default $default | quote }}
{{- if hasPrefix "s3://" .Values.recordings.url }}
{{- if .Values.recordings.s3.region }}
- name: AWS_REGION
  value: {{ .Values.recordings.s3.region | quote }}
{{- end }}
{{- if .Values.recordings.s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ .Values.recordings.s3.endpoint | quote }}
{{- end }}
- name: AWS_ALLOW_HTTP
  value: {{ .Values.recordings.s3.allowHttp | quote }}
{{- if .Values.recordings.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.recordings.s3.existingSecret | quote }}
      key: {{ .Values.recordings.s3.accessKeyIdKey | quote }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.recordings.s3.existingSecret | quote }}
      key: {{ .Values.recordings.s3.secretAccessKeyKey | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "skylark.volumeMount.recordings" -}}
{{- if .Values.recordings.existingClaim }}
- name: recordings
  mountPath: /recordings
{{- end }}
{{- end }}

{{- define "skylark.volume.recordings" -}}
{{- if .Values.recordings.existingClaim }}
- name: recordings
  persistentVolumeClaim:
    claimName: {{ .Values.recordings.existingClaim | quote }}
{{- end }}
{{- end }}

{{/*
The TURN URLs clients get: turn.urls, else those of the embedded server (turn.server).
*/}}
{{- define "skylark.turnUrls" -}}
{{- if .Values.turn.urls -}}
{{- join "," .Values.turn.urls -}}
{{- else if .Values.turn.server.enabled -}}
{{- $host := .Values.turn.server.host -}}
{{- if not $host }}{{ fail "turn.server.enabled needs turn.server.host (how clients reach the TURN nodes) or turn.urls" }}{{ end -}}
{{- $port := int .Values.turn.server.port -}}
{{- $urls := list (printf "turn:%s:%d?transport=udp" $host $port) (printf "turn:%s:%d?transport=tcp" $host $port) -}}
{{- if .Values.turn.server.tlsSecret -}}{{- $urls = append $urls (printf "turns:%s:%d?transport=tcp" $host (int .Values.turn.server.tlsPort)) -}}{{- end -}}
{{- join "," $urls -}}
{{- end -}}
{{- end }}
