{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "patron.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; component suffixes are appended to it. */}}
{{- define "patron.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "patron.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "patron.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: patron
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "api"). */}}
{{- define "patron.selectorLabels" -}}
app.kubernetes.io/name: {{ include "patron.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "patron.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "patron.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "patron.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret with PATRON_DATABASE_URL, PATRON_API_TOKENS and PATRON_KAFKA_OPTIONS. */}}
{{- define "patron.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "patron.fullname" .)) }}
{{- end }}

{{/* Refuses values that would deploy something broken. */}}
{{- define "patron.validate" -}}
{{- if not .Values.secrets.existingSecret }}
{{- $_ := required "set secrets.databaseUrl (or secrets.existingSecret)" .Values.secrets.databaseUrl }}
{{- $_ := required "set secrets.apiTokens (or secrets.existingSecret)" .Values.secrets.apiTokens }}
{{- end }}
{{- if and .Values.apiTls.enabled (not .Values.apiTls.secretName) }}
{{- fail "apiTls.enabled needs apiTls.secretName" }}
{{- end }}
{{- $partitions := int .Values.ingest.inputPartitions }}
{{- if .Values.ingest.autoscaling.enabled }}
{{- if gt (int .Values.ingest.autoscaling.maxReplicas) $partitions }}
{{- fail (printf "ingest.autoscaling.maxReplicas (%d) exceeds ingest.inputPartitions (%d): consumers beyond the partition count idle" (int .Values.ingest.autoscaling.maxReplicas) $partitions) }}
{{- end }}
{{- else if gt (int .Values.ingest.replicas) $partitions }}
{{- fail (printf "ingest.replicas (%d) exceeds ingest.inputPartitions (%d): consumers beyond the partition count idle" (int .Values.ingest.replicas) $partitions) }}
{{- end }}
{{- end }}

{{/*
The environment of every process: the ConfigMap plus the secrets it needs.
(dict "root" $ "component" "api")
*/}}
{{- define "patron.env" -}}
{{- $root := .root -}}
envFrom:
  - configMapRef:
      name: {{ include "patron.fullname" $root }}-env
env:
  - name: PATRON_DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ include "patron.secretName" $root }}
        key: PATRON_DATABASE_URL
{{- if has .component (list "ingest" "relay") }}
  - name: PATRON_KAFKA_OPTIONS
    valueFrom:
      secretKeyRef:
        name: {{ include "patron.secretName" $root }}
        key: PATRON_KAFKA_OPTIONS
        optional: true
{{- end }}
{{- if eq .component "ingest" }}
  # Static group membership: a restarted container (same pod name) takes its partitions back
  # at once instead of waiting out its old session.
  - name: PATRON_INGEST_GROUP_INSTANCE_ID
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
{{- end }}
{{- if eq .component "api" }}
  - name: PATRON_API_TOKENS
    valueFrom:
      secretKeyRef:
        name: {{ include "patron.secretName" $root }}
        key: PATRON_API_TOKENS
{{- if $root.Values.apiTls.enabled }}
  - name: PATRON_API_TLS_CERT
    value: /etc/patron-tls/{{ $root.Values.apiTls.certKey }}
  - name: PATRON_API_TLS_KEY
    value: /etc/patron-tls/{{ $root.Values.apiTls.keyKey }}
{{- if $root.Values.apiTls.clientCaKey }}
  - name: PATRON_API_TLS_CLIENT_CA
    value: /etc/patron-tls/{{ $root.Values.apiTls.clientCaKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every workload. */}}
{{- define "patron.podCommon" -}}
serviceAccountName: {{ include "patron.serviceAccountName" . }}
automountServiceAccountToken: false
# Service links would inject PATRON_*_PORT style variables into a process configured by PATRON_*.
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
