{{/* Names, labels and the pieces every rdev pod shares. */}}

{{- define "rdev.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rdev.fullname" -}}
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

{{/* rdev.labels: common labels; call with (dict "root" $ "component" "api"). */}}
{{- define "rdev.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "rdev.selectorLabels" . }}
{{- end -}}

{{- define "rdev.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rdev.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "rdev.secretName" -}}
{{- default (include "rdev.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "rdev.workspaceNamespace" -}}
{{- default .Release.Namespace .Values.worker.workspaceNamespace -}}
{{- end -}}

{{/* rdev.natsAuth: the env of a process signing in as user (dict "root" $ "user" "api"). */}}
{{- define "rdev.natsAuth" -}}
- name: RDEV_NATS_USER
  value: {{ index .root.Values.nats.users .user | quote }}
- name: RDEV_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "rdev.secretName" .root }}
      key: nats-{{ .user }}-password
{{- end -}}

{{/* rdev.egressNATS and rdev.egressDNS: NetworkPolicy egress rules. */}}
{{- define "rdev.egressNATS" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.nats.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.nats.podLabels | nindent 10 }}
  ports:
    - {protocol: TCP, port: 4222}
{{- end -}}

{{- define "rdev.egressDNS" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}

{{- define "rdev.egressRedis" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.redis.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.redis.podLabels | nindent 10 }}
  ports:
    - {protocol: TCP, port: {{ .Values.redis.port }}}
{{- end -}}

{{/* rdev.components: the Deployments of the release, space separated; the
     notifier needs the secrets key its signing secrets are sealed with. */}}
{{- define "rdev.components" -}}
api streamer worker
{{- if and .Values.notifier.enabled .Values.secrets.secretsKey }} notifier{{ end }}
{{- end -}}
