{{/*
Labels Helm charts carry by convention, on every object the chart installs. Selectors and the
app.kubernetes.io/name label stay exactly as in deploy/, and tests/helm.rs drops only these
(and helm.sh/ annotations) when it compares the chart with deploy/.
*/}}
{{- define "redis-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/*
What the operator may do where it watches: granted by the ClusterRole, or in namespaced mode
by a Role in the watched namespace. Only the verbs the code uses: reads come from watches
(list, watch), writes are server-side applies (patch; create for an object that does not exist
yet), deletes of what a restart replaces, status patches, and Events.
*/}}
{{- define "redis-operator.rules" -}}
- apiGroups: ["redis.github.com"]
  resources: ["redisinstances"]
  verbs: ["list", "watch"]
- apiGroups: ["redis.github.com"]
  resources: ["redisinstances/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch", "delete"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["get", "create", "patch"]
{{- end }}
