{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "prequal.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "prequal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "name" "command-api"). */}}
{{- define "prequal.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "prequal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "prequal.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "prequal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
Checks run once per render: no secret setting in `config`, every config value a string,
an https JWKS URL in production.
*/}}
{{- define "prequal.checks" -}}
{{- range $key := .Values.secrets.keys -}}
{{- if hasKey $.Values.config $key -}}
{{- fail (printf "%s is a secret: put it in the Secret %q, never in values (config.%s)" $key $.Values.secrets.name $key) -}}
{{- end -}}
{{- end -}}
{{- range $key, $value := .Values.config -}}
{{- if not (hasPrefix "PREQUAL_" $key) -}}
{{- fail (printf "config.%s: every setting is a PREQUAL_* variable" $key) -}}
{{- end -}}
{{- if hasPrefix "PREQUAL_AUTH_" $key -}}
{{- fail (printf "config.%s: set access control under auth (jwksUrl, issuer, audience)" $key) -}}
{{- end -}}
{{- if not (kindIs "string" $value) -}}
{{- fail (printf "config.%s must be a string (quote it in the values file)" $key) -}}
{{- end -}}
{{- end -}}
{{- if eq (.Values.config.PREQUAL_ENVIRONMENT | default "development") "production" -}}
{{- if not (hasPrefix "https://" .Values.auth.jwksUrl) -}}
{{- fail "auth.jwksUrl (PREQUAL_AUTH_JWKS_URL) must be the identity provider's https JWKS URL when PREQUAL_ENVIRONMENT is production" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The environment of every prequal container: ConfigMap, Secret keys, instance name. */}}
{{- define "prequal.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "prequal.fullname" .root }}-config
env:
  {{- range $key := .root.Values.secrets.keys }}
  - name: {{ $key }}
    valueFrom:
      secretKeyRef:
        name: {{ $.root.Values.secrets.name }}
        key: {{ $key }}
  {{- end }}
  # The pod's name: unique per pod, and stable for a StatefulSet's (the credit worker's
  # transactional.id is built from it).
  - name: PREQUAL_INSTANCE_ID
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  {{- with .component }}
  {{- if .portSetting }}
  - name: {{ .portSetting }}
    value: {{ .port | quote }}
  {{- end }}
  {{- end }}
{{- end -}}

{{/* Pod-level settings shared by Deployments, Jobs and the ops CronJob. */}}
{{- define "prequal.podSpecCommon" -}}
serviceAccountName: {{ include "prequal.serviceAccountName" . }}
automountServiceAccountToken: false
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
volumes:
  # The root filesystem is read-only; Python and libraries may still want a /tmp.
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- end -}}
