{{/* Names, labels, images and security contexts shared by every template. */}}

{{- define "rlhf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<name>, or the release's name when it already contains the chart's name. */}}
{{- define "rlhf.fullname" -}}
{{- $name := include "rlhf.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Kubernetes' recommended labels. Call with (dict "ctx" $ "component" "mlflow"). */}}
{{- define "rlhf.labels" -}}
{{ include "rlhf.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: rlhf
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "rlhf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rlhf.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The project's CPU image: <repository>:<tag>, the tag defaulting to <appVersion>-cpu. */}}
{{- define "rlhf.image" -}}
{{- printf "%s:%s" .Values.image.repository (default (printf "%s-cpu" .Chart.AppVersion) .Values.image.tag) -}}
{{- end -}}

{{/* imagePullSecrets on one line, or nothing. */}}
{{- define "rlhf.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets: [{{ range $i, $n := . }}{{ if $i }}, {{ end }}{name: {{ $n }}}{{ end }}]
{{- end -}}
{{- end -}}

{{/* A pod's securityContext; call with the UID. */}}
{{- define "rlhf.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ . }}
  runAsGroup: {{ . }}
  fsGroup: {{ . }}
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* A container's securityContext; call with the UID. */}}
{{- define "rlhf.containerSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ . }}
  runAsGroup: {{ . }}
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* The UID of the project's images (images/cpu.Dockerfile). */}}
{{- define "rlhf.uid" -}}10001{{- end -}}

{{/* Writable emptyDirs for a read-only root filesystem: /tmp and the image's home. */}}
{{- define "rlhf.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/rlhf
{{- end -}}

{{- define "rlhf.scratchVolumes" -}}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
{{- end -}}

{{/* The S3 endpoint: the bundled SeaweedFS's Service, or s3.endpoint. */}}
{{- define "rlhf.s3Endpoint" -}}
{{- if .Values.seaweedfs.enabled -}}
{{- printf "http://%s-seaweedfs.%s.svc.cluster.local:8333" (include "rlhf.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- required "s3.endpoint: give the S3 endpoint URL, or set seaweedfs.enabled" .Values.s3.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "rlhf.mlflowHost" -}}
{{- printf "%s-mlflow" (include "rlhf.fullname" .) -}}
{{- end -}}

{{/* MLFLOW_TRACKING_URI: endpoints.mlflowTrackingUri, or this chart's MLflow Service. */}}
{{- define "rlhf.mlflowTrackingUri" -}}
{{- if .Values.endpoints.mlflowTrackingUri -}}
{{- .Values.endpoints.mlflowTrackingUri -}}
{{- else if .Values.mlflow.enabled -}}
{{- printf "http://%s.%s.svc.cluster.local:%v" (include "rlhf.mlflowHost" .) .Release.Namespace .Values.mlflow.service.port -}}
{{- else -}}
{{- fail "endpoints.mlflowTrackingUri: give your MLflow server's URL when mlflow.enabled is false" -}}
{{- end -}}
{{- end -}}

{{/* The S3 credentials (existing Secret secrets.s3) and endpoint, as env entries. */}}
{{- define "rlhf.s3Env" -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ .Values.secrets.s3 }}, key: AWS_ACCESS_KEY_ID}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.secrets.s3 }}, key: AWS_SECRET_ACCESS_KEY}
- name: AWS_ENDPOINT_URL
  value: {{ include "rlhf.s3Endpoint" . | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.s3.region | quote }}
{{- end -}}

{{/* What a pod that talks to the KFP API gets: the projected token and the run config. */}}
{{- define "rlhf.kfpEnv" -}}
- name: KF_PIPELINES_SA_TOKEN_PATH
  value: /var/run/secrets/kubeflow/pipelines/token
{{- end -}}

{{- define "rlhf.kfpMounts" -}}
- name: run-config
  mountPath: /etc/rlhf
  readOnly: true
- name: kfp-token
  mountPath: /var/run/secrets/kubeflow/pipelines
  readOnly: true
{{- end -}}

{{- define "rlhf.kfpVolumes" -}}
- name: run-config
  configMap:
    name: {{ .Values.runConfig.name }}
- name: kfp-token
  projected:
    sources:
      - serviceAccountToken:
          path: token
          audience: pipelines.kubeflow.org
          expirationSeconds: 7200
{{- end -}}

{{/* --namespace for multi-user KFP, --experiment; shell words (the schema restricts them). */}}
{{- define "rlhf.kfpNamespaceFlag" -}}
{{- with .Values.kfp.namespace }} --namespace {{ . | squote }}{{ end -}}
{{- end -}}
