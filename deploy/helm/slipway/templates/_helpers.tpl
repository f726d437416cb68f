{{/* Name of the chart, overridable. */}}
{{- define "slipway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name: "<release>-<chart>", or fullnameOverride. */}}
{{- define "slipway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "slipway.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "slipway.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "slipway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "slipway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels; add app.kubernetes.io/component beside them. */}}
{{- define "slipway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slipway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* slipway's image reference. */}}
{{- define "slipway.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* Name of the Secret slipway's containers load. */}}
{{- define "slipway.secretName" -}}
{{- default (include "slipway.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* Password of the bundled PostgreSQL: the value, else the one an earlier
release stored, else a new random one; set once per render so every template
sees the same. */}}
{{- define "slipway.postgresPassword" -}}
{{- if not .Values.postgresql.password -}}
{{- $old := lookup "v1" "Secret" .Release.Namespace (printf "%s-postgresql" (include "slipway.fullname" .)) -}}
{{- if and $old $old.data (index $old.data "password") -}}
{{- $_ := set .Values.postgresql "password" (index $old.data "password" | b64dec) -}}
{{- else -}}
{{- $_ := set .Values.postgresql "password" (randAlphaNum 24) -}}
{{- end -}}
{{- end -}}
{{- .Values.postgresql.password -}}
{{- end -}}

{{/* SLIPWAY_DATABASE_URL: the bundled PostgreSQL's, or secrets.SLIPWAY_DATABASE_URL. */}}
{{- define "slipway.databaseURL" -}}
{{- if .Values.postgresql.enabled -}}
{{- printf "postgres://%s:%s@%s-postgresql:5432/%s?sslmode=disable" .Values.postgresql.username (include "slipway.postgresPassword" . | urlquery) (include "slipway.fullname" .) .Values.postgresql.database -}}
{{- else -}}
{{- .Values.secrets.SLIPWAY_DATABASE_URL -}}
{{- end -}}
{{- end -}}

{{/* SLIPWAY_PUBLIC_URL: the value, else the ingress host. */}}
{{- define "slipway.publicURL" -}}
{{- if .Values.config.SLIPWAY_PUBLIC_URL -}}
{{- .Values.config.SLIPWAY_PUBLIC_URL -}}
{{- else if .Values.ingress.enabled -}}
{{- printf "%s://%s" (ternary "https" "http" (ne .Values.ingress.tlsSecretName "")) .Values.ingress.host -}}
{{- end -}}
{{- end -}}

{{/* envFrom of every slipway container: the ConfigMap and the Secret. */}}
{{- define "slipway.envFrom" -}}
- configMapRef:
    name: {{ include "slipway.fullname" . }}
- secretRef:
    name: {{ include "slipway.secretName" . }}
{{- end -}}

{{/* Address of a pool's buildkitd Service. */}}
{{- define "slipway.buildkitAddr" -}}
{{- printf "tcp://%s-buildkitd-%s:%d" (include "slipway.fullname" .root) .pool.name (int .root.Values.buildkitd.port) -}}
{{- end -}}

{{/* A probe on path at port "http". */}}
{{- define "slipway.probe" -}}
httpGet:
  path: {{ . }}
  port: http
periodSeconds: 10
timeoutSeconds: 3
failureThreshold: 3
{{- end -}}

{{/*
Registry credentials and a private CA (values registryAuth and caBundle):
env, volumeMounts and volumes of slipway's server and worker containers.
*/}}
{{- define "slipway.authEnv" -}}
{{- if .Values.githubApp.id }}
- name: SLIPWAY_GITHUB_APP_ID
  value: {{ .Values.githubApp.id | quote }}
- name: SLIPWAY_GITHUB_APP_PRIVATE_KEY_FILE
  value: /etc/slipway/github-app/{{ .Values.githubApp.privateKeyKey }}
{{- end }}
{{- if .Values.registryAuth.dockerConfigSecret }}
- name: SLIPWAY_DOCKER_CONFIG
  value: /etc/slipway/docker/config.json
{{- end }}
{{- if or .Values.caBundle.configMap .Values.caBundle.secret }}
- name: SLIPWAY_CA_BUNDLE
  value: /etc/slipway/ca/{{ .Values.caBundle.key }}
{{- end }}
{{- end }}

{{- define "slipway.authMounts" -}}
{{- if .Values.githubApp.privateKeySecret }}
- name: github-app
  mountPath: /etc/slipway/github-app
  readOnly: true
{{- end }}
{{- if .Values.registryAuth.dockerConfigSecret }}
- name: docker-config
  mountPath: /etc/slipway/docker
  readOnly: true
{{- end }}
{{- if or .Values.caBundle.configMap .Values.caBundle.secret }}
- name: ca-bundle
  mountPath: /etc/slipway/ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "slipway.caVolume" -}}
{{- if .Values.caBundle.configMap }}
- name: ca-bundle
  configMap:
    name: {{ .Values.caBundle.configMap }}
    items:
      - key: {{ .Values.caBundle.key }}
        path: {{ .Values.caBundle.key }}
{{- else if .Values.caBundle.secret }}
- name: ca-bundle
  secret:
    secretName: {{ .Values.caBundle.secret }}
    items:
      - key: {{ .Values.caBundle.key }}
        path: {{ .Values.caBundle.key }}
{{- end }}
{{- end }}

{{- define "slipway.authVolumes" -}}
{{- if .Values.githubApp.privateKeySecret }}
- name: github-app
  secret:
    secretName: {{ .Values.githubApp.privateKeySecret }}
    items:
      - key: {{ .Values.githubApp.privateKeyKey }}
        path: {{ .Values.githubApp.privateKeyKey }}
{{- end }}
{{- if .Values.registryAuth.dockerConfigSecret }}
- name: docker-config
  secret:
    secretName: {{ .Values.registryAuth.dockerConfigSecret }}
    items:
      - key: .dockerconfigjson
        path: config.json
{{- end }}
{{- include "slipway.caVolume" . }}
{{- end }}
