package charttest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

const (
	chartDir  = "../headinfer"
	release   = "rel"
	namespace = "models"
)

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor
// (monitoring.coreos.com/v1) that the chart writes, field names as in its
// CRD; strict decoding rejects any other field, so a misspelt one fails.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
			Authorization *struct {
				Type        string                   `json:"type"`
				Credentials corev1.SecretKeySelector `json:"credentials"`
			} `json:"authorization,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// inferencePool mirrors the Gateway API Inference Extension's InferencePool
// (inference.networking.k8s.io/v1, api/v1/inferencepool_types.go there),
// status left out.
type inferencePool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		TargetPorts []struct {
			Number int32 `json:"number"`
		} `json:"targetPorts"`
		EndpointPickerRef struct {
			Group *string `json:"group,omitempty"`
			Kind  string  `json:"kind,omitempty"`
			Name  string  `json:"name"`
			Port  *struct {
				Number int32 `json:"number"`
			} `json:"port,omitempty"`
			FailureMode string `json:"failureMode,omitempty"`
		} `json:"endpointPickerRef"`
	} `json:"spec"`
}

// rendered is one release's objects, decoded.
type rendered struct {
	deploy   *appsv1.Deployment
	service  *corev1.Service
	sa       *corev1.ServiceAccount
	secrets  map[string]*corev1.Secret
	pvcs     map[string]*corev1.PersistentVolumeClaim
	hpa      *autoscalingv2.HorizontalPodAutoscaler
	monitor  *serviceMonitor
	pool     *inferencePool
	notes    string
	gvks     []string // apiVersion/kind of each document, sorted
	manifest map[string]string
}

// render renders the chart with the values files and overrides given (as
// helm install -f FILE... --set-json would merge them) and decodes it.
func render(t *testing.T, files []string, override map[string]any) (*rendered, error) {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]any{}
	for _, f := range files {
		v, err := chartutil.ReadValuesFile(f)
		if err != nil {
			t.Fatal(err)
		}
		vals = chartutil.MergeTables(v.AsMap(), vals)
	}
	vals = chartutil.MergeTables(override, vals)
	return renderValues(t, ch, vals)
}

func renderValues(t *testing.T, ch *chart.Chart, vals map[string]any) (*rendered, error) {
	t.Helper()
	caps := chartutil.DefaultCapabilities.Copy()
	opts := chartutil.ReleaseOptions{Name: release, Namespace: namespace, Revision: 1, IsInstall: true}
	top, err := chartutil.ToRenderValues(ch, vals, opts, caps)
	if err != nil {
		return nil, err
	}
	// Strict: a template that reads a value values.yaml does not define fails.
	out, err := engine.Engine{Strict: true}.Render(ch, top)
	if err != nil {
		return nil, err
	}
	r := &rendered{secrets: map[string]*corev1.Secret{}, pvcs: map[string]*corev1.PersistentVolumeClaim{}, manifest: out}
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		switch {
		case strings.HasSuffix(name, "NOTES.txt"):
			r.notes = out[name]
			continue
		case strings.HasPrefix(filepath.Base(name), "_"), !strings.HasSuffix(name, ".yaml"):
			continue
		}
		for _, doc := range releaseutil.SplitManifests(out[name]) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			if err := r.decode(doc); err != nil {
				return nil, fmt.Errorf("%s: %w\n%s", name, err, doc)
			}
		}
	}
	sort.Strings(r.gvks)
	return r, nil
}

// decode decodes one document into its kind's type, unknown and duplicate
// fields rejected, and checks its metadata.
func (r *rendered) decode(doc string) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
		return err
	}
	var obj any
	var meta *metav1.ObjectMeta
	switch gvk := tm.APIVersion + "/" + tm.Kind; gvk {
	case "apps/v1/Deployment":
		r.deploy = &appsv1.Deployment{}
		obj, meta = r.deploy, &r.deploy.ObjectMeta
	case "v1/Service":
		r.service = &corev1.Service{}
		obj, meta = r.service, &r.service.ObjectMeta
	case "v1/ServiceAccount":
		r.sa = &corev1.ServiceAccount{}
		obj, meta = r.sa, &r.sa.ObjectMeta
	case "v1/Secret":
		s := &corev1.Secret{}
		obj, meta = s, &s.ObjectMeta
		defer func() { r.secrets[s.Name] = s }()
	case "v1/PersistentVolumeClaim":
		p := &corev1.PersistentVolumeClaim{}
		obj, meta = p, &p.ObjectMeta
		defer func() { r.pvcs[p.Name] = p }()
	case "autoscaling/v2/HorizontalPodAutoscaler":
		r.hpa = &autoscalingv2.HorizontalPodAutoscaler{}
		obj, meta = r.hpa, &r.hpa.ObjectMeta
	case "monitoring.coreos.com/v1/ServiceMonitor":
		r.monitor = &serviceMonitor{}
		obj, meta = r.monitor, &r.monitor.ObjectMeta
	case "inference.networking.k8s.io/v1/InferencePool":
		r.pool = &inferencePool{}
		obj, meta = r.pool, &r.pool.ObjectMeta
	default:
		return fmt.Errorf("unexpected document %s", gvk)
	}
	r.gvks = append(r.gvks, tm.APIVersion+"/"+tm.Kind)
	if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
		return err
	}
	if errs := validation.IsDNS1123Subdomain(meta.Name); len(errs) > 0 {
		return fmt.Errorf("name %q: %s", meta.Name, errs)
	}
	if tm.Kind == "Service" {
		if errs := validation.IsDNS1035Label(meta.Name); len(errs) > 0 {
			return fmt.Errorf("service name %q: %s", meta.Name, errs)
		}
	}
	return checkLabels(meta.Labels)
}

func checkLabels(l map[string]string) error {
	for k, v := range l {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("label key %q: %s", k, errs)
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("label %s=%q: %s", k, v, errs)
		}
	}
	for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "headinfer.io/model"} {
		if l[k] == "" {
			return fmt.Errorf("no label %s in %v", k, l)
		}
	}
	return nil
}

func mustRender(t *testing.T, files []string, override map[string]any) *rendered {
	t.Helper()
	r, err := render(t, files, override)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// serveFlags are the flag names the headinfer binary defines (Name: "..."
// in cli/*.go), so that a renamed flag fails here rather than in a pod.
func serveFlags(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("../../../cli/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no cli sources: %v", err)
	}
	re := regexp.MustCompile(`(?:Name|Aliases):\s*(?:"([a-z0-9-]+)"|\[\]string\{"([a-z0-9-]+)"\})`)
	flags := map[string]bool{}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			flags[m[1]+m[2]] = true
		}
	}
	return flags
}

func env(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func mount(c corev1.Container, path string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == path {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func volume(spec corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// arg is the value of --name=VALUE in args, and whether it is there.
func arg(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name {
			return "", true
		}
	}
	return "", false
}

// checkCommon checks what holds for every release: the objects refer to one
// another consistently, the pod is locked down, and the probes, volumes and
// flags are right.
func checkCommon(t *testing.T, r *rendered, flags map[string]bool) {
	t.Helper()
	d := r.deploy
	if d == nil || r.service == nil {
		t.Fatalf("no Deployment or Service in %v", r.gvks)
	}
	pod := d.Spec.Template
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("Deployment selector %v does not match its pod labels %v (%v)", d.Spec.Selector, pod.Labels, err)
	}
	if err := checkLabels(pod.Labels); err != nil {
		t.Errorf("pod: %v", err)
	}
	if !labels.SelectorFromSet(r.service.Spec.Selector).Matches(labels.Set(pod.Labels)) {
		t.Errorf("Service selector %v does not match the pod labels %v", r.service.Spec.Selector, pod.Labels)
	}

	// Security: non-root at the pod level, every container locked down.
	psc := pod.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and a non-zero runAsUser", psc)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Errorf("the service account token is mounted; the server calls no Kubernetes API")
	}
	all := append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...)
	for _, c := range all {
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("container %s: root filesystem not read-only", c.Name)
		}
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: privilege escalation allowed", c.Name)
		}
		if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("container %s: capabilities not dropped", c.Name)
		}
		for _, m := range c.VolumeMounts {
			if volume(pod.Spec, m.Name) == nil {
				t.Errorf("container %s mounts %s, which is no volume of the pod", c.Name, m.Name)
			}
		}
		// The directories written to are emptyDirs (the root is read-only).
		for _, name := range []string{"XDG_CACHE_HOME"} {
			e := env(c, name)
			if e == nil {
				t.Errorf("container %s: no %s", c.Name, name)
				continue
			}
			m := mount(c, e.Value)
			if m == nil || m.ReadOnly || volume(pod.Spec, m.Name).EmptyDir == nil {
				t.Errorf("container %s: %s=%s is not a writable emptyDir", c.Name, name, e.Value)
			}
		}
		if m := mount(c, "/tmp"); m == nil || volume(pod.Spec, m.Name).EmptyDir == nil {
			t.Errorf("container %s: /tmp is not an emptyDir", c.Name)
		}
		if e := env(c, "HEADINFER_MODELS"); e == nil || mount(c, e.Value) == nil {
			t.Errorf("container %s: HEADINFER_MODELS is not the model volume's mount", c.Name)
		}
	}

	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want the server alone", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "serve" || len(c.Command) != 0 {
		t.Errorf("server command %q args %q: want the image's entry point with serve", c.Command, c.Args)
	}
	for _, a := range c.Args[1:] {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if strings.HasPrefix(a, "--") && !flags[name] {
			t.Errorf("server argument %s: no such flag in cli/*.go", a)
		}
	}
	if h, _ := arg(c.Args, "host"); h != "0.0.0.0" {
		t.Errorf("--host=%q, want 0.0.0.0", h)
	}
	if m := mount(c, "/models"); m == nil || !m.ReadOnly {
		t.Errorf("the server mounts the model volume writable")
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" {
		t.Fatalf("server ports %+v: want one named http", c.Ports)
	}
	if p, _ := arg(c.Args, "port"); p != fmt.Sprint(c.Ports[0].ContainerPort) {
		t.Errorf("--port=%s but containerPort %d", p, c.Ports[0].ContainerPort)
	}
	for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/health" || p.HTTPGet.Port.String() != "http" {
			t.Errorf("%s probe %+v: want GET /health on port http", name, p)
			continue
		}
		if p.PeriodSeconds <= 0 || p.FailureThreshold <= 0 {
			t.Errorf("%s probe: period %d, failure threshold %d", name, p.PeriodSeconds, p.FailureThreshold)
		}
	}
	if c.StartupProbe != nil && c.LivenessProbe != nil {
		if load := c.StartupProbe.PeriodSeconds * c.StartupProbe.FailureThreshold; load < 600 {
			t.Errorf("the startup probe allows %ds to load the model, want 10 minutes or more", load)
		}
		if live := c.LivenessProbe.PeriodSeconds * c.LivenessProbe.FailureThreshold; live < 300 {
			t.Errorf("the liveness probe restarts after %ds of 503, less than a reload may take", live)
		}
	}
	g, _ := arg(c.Args, "grace")
	var grace int64
	if _, err := fmt.Sscanf(g, "%ds", &grace); err != nil {
		t.Errorf("--grace=%q: %v", g, err)
	}
	if tg := pod.Spec.TerminationGracePeriodSeconds; tg == nil || *tg <= grace {
		t.Errorf("terminationGracePeriodSeconds %v not above --grace %ds", tg, grace)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("server resources %+v: want a CPU request and a memory limit", c.Resources)
	}

	// The API key: a Secret the release holds or names.
	if e := env(c, "HEADINFER_API_KEY"); e != nil {
		ref := e.ValueFrom
		if ref == nil || ref.SecretKeyRef == nil || e.Value != "" {
			t.Errorf("HEADINFER_API_KEY %+v: want a secretKeyRef", e)
		} else if s, ok := r.secrets[ref.SecretKeyRef.Name]; ok {
			if _, ok := s.Data[ref.SecretKeyRef.Key]; !ok {
				t.Errorf("Secret %s has no key %s", s.Name, ref.SecretKeyRef.Key)
			}
		}
	} else if _, ok := arg(c.Args, "api-key"); ok {
		t.Errorf("the API key is an argument, visible in the pod spec")
	}

	// The model volume: the release's claim, one it names, or an emptyDir.
	v := volume(pod.Spec, "models")
	if v == nil {
		t.Fatalf("no models volume")
	}
	if v.PersistentVolumeClaim != nil {
		if p, ok := r.pvcs[v.PersistentVolumeClaim.ClaimName]; ok && p.Spec.Resources.Requests.Storage().IsZero() {
			t.Errorf("claim %s requests no storage", p.Name)
		}
	} else if v.EmptyDir == nil {
		t.Errorf("models volume %+v: want a claim or an emptyDir", v)
	}

	// The pull: the server's -m names what the init container pulled.
	if len(pod.Spec.InitContainers) > 0 {
		ic := pod.Spec.InitContainers[0]
		m, _ := arg(c.Args, "model")
		if ic.Name != "pull" || !slices.Equal(ic.Command, []string{"bash", "-c"}) || len(ic.Args) != 4 ||
			!strings.Contains(ic.Args[0], `headinfer pull "$1"`) || ic.Args[2] != m {
			t.Errorf("init container %s %q %q does not pull the server's --model=%s", ic.Name, ic.Command, ic.Args, m)
		}
		if m := mount(ic, "/models"); m == nil || m.ReadOnly {
			t.Errorf("the pull cannot write the model volume")
		}
	}
	if e := env(c, "HF_TOKEN"); e != nil {
		t.Errorf("the server sees HF_TOKEN; only the pull needs it")
	}

	if r.monitor != nil {
		ms, err := metav1.LabelSelectorAsSelector(&r.monitor.Spec.Selector)
		if err != nil || !ms.Matches(labels.Set(r.service.Labels)) {
			t.Errorf("ServiceMonitor selector does not match the Service's labels")
		}
		for _, e := range r.monitor.Spec.Endpoints {
			if e.Port != r.service.Spec.Ports[0].Name || e.Path != "/metrics" {
				t.Errorf("ServiceMonitor endpoint %s%s, want %s/metrics", e.Port, e.Path, r.service.Spec.Ports[0].Name)
			}
		}
	}
	if r.hpa != nil {
		ref := r.hpa.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.Name != d.Name || d.Spec.Replicas != nil {
			t.Errorf("HPA targets %s/%s (Deployment %s sets replicas %v)", ref.Kind, ref.Name, d.Name, d.Spec.Replicas)
		}
		if len(r.hpa.Spec.Metrics) != 1 || r.hpa.Spec.Metrics[0].Pods == nil || r.hpa.Spec.Metrics[0].Pods.Metric.Name != "headinfer_queue_depth" {
			t.Errorf("HPA metrics %+v: want the Pods metric headinfer_queue_depth", r.hpa.Spec.Metrics)
		}
	}
	if p := r.pool; p != nil {
		s := p.Spec
		if n := len(s.Selector.MatchLabels); n == 0 || n > 64 {
			t.Errorf("InferencePool selects by %d labels", n)
		}
		if !labels.SelectorFromSet(s.Selector.MatchLabels).Matches(labels.Set(pod.Labels)) || s.Selector.MatchLabels["headinfer.io/model"] == "" {
			t.Errorf("InferencePool selector %v: want the pods' labels, model included", s.Selector.MatchLabels)
		}
		if len(s.TargetPorts) != 1 || s.TargetPorts[0].Number != c.Ports[0].ContainerPort {
			t.Errorf("InferencePool targetPorts %+v, want [%d]", s.TargetPorts, c.Ports[0].ContainerPort)
		}
		e := s.EndpointPickerRef
		if e.Name == "" || (e.Kind == "Service" || e.Kind == "") && (e.Port == nil || e.Port.Number < 1 || e.Port.Number > 65535) {
			t.Errorf("InferencePool endpointPickerRef %+v: a Service needs a name and a port", e)
		}
		if e.FailureMode != "" && e.FailureMode != "FailOpen" && e.FailureMode != "FailClose" {
			t.Errorf("InferencePool failureMode %q", e.FailureMode)
		}
	}
}

func gpuLimits(c corev1.Container) []string {
	var out []string
	for name := range c.Resources.Limits {
		if strings.Contains(string(name), "gpu") {
			out = append(out, string(name)+"="+c.Resources.Limits.Name(name, "").String())
		}
	}
	sort.Strings(out)
	return out
}

func TestDefaultValues(t *testing.T) {
	r := mustRender(t, nil, nil)
	checkCommon(t, r, serveFlags(t))
	want := []string{"apps/v1/Deployment", "v1/PersistentVolumeClaim", "v1/Service", "v1/ServiceAccount"}
	if !slices.Equal(r.gvks, want) {
		t.Errorf("documents %v, want %v", r.gvks, want)
	}
	c := r.deploy.Spec.Template.Spec.Containers[0]
	if g := gpuLimits(c); len(g) != 0 {
		t.Errorf("GPU limits %v without gpu.resource", g)
	}
	if env(c, "HEADINFER_API_KEY") != nil || !strings.Contains(r.notes, "WARNING: no API key") {
		t.Errorf("no key is configured: want no HEADINFER_API_KEY and a warning in NOTES")
	}
	if m, _ := arg(c.Args, "model"); m != "bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0" {
		t.Errorf("--model=%s", m)
	}
	if got := r.deploy.Spec.Template.Labels["headinfer.io/model"]; got != "Llama-3.2-1B-Instruct-GGUF-Q8_0" {
		t.Errorf("model label %q", got)
	}
	pvc := r.pvcs[release+"-headinfer-models"]
	if pvc == nil || pvc.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("model claim %v: want rel-headinfer-models, kept on uninstall", pvc)
	}
	if len(r.deploy.Spec.Template.Spec.InitContainers) != 1 {
		t.Errorf("no pull init container")
	}
}

func TestGPUValues(t *testing.T) {
	r := mustRender(t, []string{chartDir + "/values-gpu.yaml"}, nil)
	checkCommon(t, r, serveFlags(t))
	c := r.deploy.Spec.Template.Spec.Containers[0]
	if g := gpuLimits(c); !slices.Equal(g, []string{"nvidia.com/gpu=1"}) {
		t.Errorf("GPU limits %v, want nvidia.com/gpu=1", g)
	}
	if _, ok := c.Resources.Requests["nvidia.com/gpu"]; ok {
		t.Errorf("a GPU request besides the limit (the limit implies it)")
	}
	if e := env(c, "NVIDIA_DRIVER_CAPABILITIES"); e == nil || !strings.Contains(e.Value, "graphics") {
		t.Errorf("NVIDIA_DRIVER_CAPABILITIES %v: Vulkan needs graphics", e)
	}
	if rc := r.deploy.Spec.Template.Spec.RuntimeClassName; rc == nil || *rc != "nvidia" {
		t.Errorf("runtimeClassName %v", rc)
	}
	if m, _ := arg(c.Args, "model"); !strings.HasPrefix(m, "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF:") {
		t.Errorf("--model=%s", m)
	}
	if got := r.deploy.Spec.Template.Labels["headinfer.io/model"]; got != "llama-3.1-8b-instruct-q4_k_m" {
		t.Errorf("model label %q", got)
	}
	if v, _ := arg(c.Args, "max-conns-per-ip"); v != "0" {
		t.Errorf("--max-conns-per-ip=%q, want 0 behind a gateway", v)
	}
}

// TestEverything turns every optional part on: a key from a value, an
// existing model claim without a pull, the ServiceMonitor (sending the key),
// the HPA, the InferencePool and the KV directory.
func TestEverything(t *testing.T) {
	r := mustRender(t, nil, map[string]any{
		"model":       map[string]any{"name": "tiny/model:Q8", "file": "tiny.gguf", "pull": map[string]any{"enabled": false}},
		"persistence": map[string]any{"existingClaim": "shared-models"},
		"apiKey":      map[string]any{"value": "s3cret"},
		"metrics":     map[string]any{"serviceMonitor": map[string]any{"enabled": true}},
		"autoscaling": map[string]any{"enabled": true},
		"inferencePool": map[string]any{"enabled": true,
			"endpointPicker": map[string]any{"name": "epp"}},
		"server": map[string]any{"kvCacheDir": map[string]any{"enabled": true}, "extraArgs": []any{"--kv-type=f32"}},
	})
	checkCommon(t, r, serveFlags(t))
	want := []string{"apps/v1/Deployment", "autoscaling/v2/HorizontalPodAutoscaler", "inference.networking.k8s.io/v1/InferencePool",
		"monitoring.coreos.com/v1/ServiceMonitor", "v1/Secret", "v1/Service", "v1/ServiceAccount"}
	if !slices.Equal(r.gvks, want) {
		t.Errorf("documents %v, want %v", r.gvks, want)
	}
	pod := r.deploy.Spec.Template.Spec
	c := pod.Containers[0]
	if len(pod.InitContainers) != 0 {
		t.Errorf("an init container without a pull")
	}
	if m, _ := arg(c.Args, "model"); m != "/models/tiny.gguf" {
		t.Errorf("--model=%s", m)
	}
	if got := r.deploy.Spec.Template.Labels["headinfer.io/model"]; got != "tiny-model-Q8" {
		t.Errorf("model label %q", got)
	}
	if v := volume(pod, "models"); v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "shared-models" {
		t.Errorf("models volume %+v, want the claim shared-models", v)
	}
	e := env(c, "HEADINFER_API_KEY")
	if e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef.Name != release+"-headinfer-api-key" {
		t.Fatalf("HEADINFER_API_KEY %+v", e)
	}
	if s := r.secrets[e.ValueFrom.SecretKeyRef.Name]; s == nil || string(s.Data["api-key"]) != "s3cret" {
		t.Errorf("API key Secret %v", s)
	}
	for k, v := range r.deploy.Spec.Template.Annotations {
		if strings.Contains(v, "s3cret") {
			t.Errorf("pod annotation %s holds the key", k)
		}
	}
	for _, a := range r.deploy.Spec.Template.Spec.Containers[0].Args {
		if strings.Contains(a, "s3cret") {
			t.Errorf("argument %q holds the key", a)
		}
	}
	a := r.monitor.Spec.Endpoints[0].Authorization
	if a == nil || a.Type != "Bearer" || a.Credentials.Name != e.ValueFrom.SecretKeyRef.Name || a.Credentials.Key != "api-key" {
		t.Errorf("ServiceMonitor authorization %+v: want the API key's Secret", a)
	}
	if d, ok := arg(c.Args, "kv-cache-dir"); !ok || mount(c, d) == nil || mount(c, d).ReadOnly {
		t.Errorf("--kv-cache-dir=%s is not a writable mount", d)
	}
	if !slices.Contains(c.Args, "--kv-type=f32") {
		t.Errorf("extra arguments missing: %q", c.Args)
	}
	if r.pool.Spec.EndpointPickerRef.Name != "epp" || r.pool.Spec.EndpointPickerRef.Port.Number != 9002 {
		t.Errorf("InferencePool endpointPickerRef %+v", r.pool.Spec.EndpointPickerRef)
	}
}

// TestSecretsAndVendors: an existing key Secret, an HF token for the pull,
// the model on an emptyDir, an AMD GPU, and public metrics (the
// ServiceMonitor then sends no key).
func TestSecretsAndVendors(t *testing.T) {
	r := mustRender(t, nil, map[string]any{
		"apiKey": map[string]any{"existingSecret": "team-key", "existingSecretKey": "token"},
		"model": map[string]any{"pull": map[string]any{"ref": "meta-llama/Llama-3.2-3B-Instruct/model-q8_0.gguf",
			"hfTokenSecret": map[string]any{"name": "hf"}}},
		"persistence": map[string]any{"enabled": false},
		"gpu":         map[string]any{"resource": "amd.com/gpu", "count": 2},
		"metrics":     map[string]any{"public": true, "serviceMonitor": map[string]any{"enabled": true}},
	})
	checkCommon(t, r, serveFlags(t))
	if len(r.secrets) != 0 || len(r.pvcs) != 0 {
		t.Errorf("Secrets %v, claims %v: want none", r.secrets, r.pvcs)
	}
	pod := r.deploy.Spec.Template.Spec
	c := pod.Containers[0]
	if e := env(c, "HEADINFER_API_KEY"); e == nil || e.ValueFrom.SecretKeyRef.Name != "team-key" || e.ValueFrom.SecretKeyRef.Key != "token" {
		t.Errorf("HEADINFER_API_KEY %+v, want team-key/token", e)
	}
	if e := env(pod.InitContainers[0], "HF_TOKEN"); e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef.Name != "hf" || e.ValueFrom.SecretKeyRef.Key != "HF_TOKEN" {
		t.Errorf("pull HF_TOKEN %+v, want the Secret hf", e)
	}
	if v := volume(pod, "models"); v.EmptyDir == nil {
		t.Errorf("models volume %+v, want an emptyDir", v)
	}
	if g := gpuLimits(c); !slices.Equal(g, []string{"amd.com/gpu=2"}) {
		t.Errorf("GPU limits %v, want amd.com/gpu=2", g)
	}
	if env(c, "NVIDIA_DRIVER_CAPABILITIES") != nil {
		t.Errorf("NVIDIA_DRIVER_CAPABILITIES on an AMD pod")
	}
	if _, ok := arg(c.Args, "metrics-public"); !ok || r.monitor.Spec.Endpoints[0].Authorization != nil {
		t.Errorf("metrics.public: want --metrics-public and a ServiceMonitor without the key")
	}
	if got := r.deploy.Spec.Template.Labels["headinfer.io/model"]; got != "Llama-3.2-3B-Instruct-model-q8_0" {
		t.Errorf("model label %q", got)
	}
}

// TestRefused: values the chart must refuse rather than render.
func TestRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		values map[string]any
		want   string
	}{
		"unknown GPU":       {map[string]any{"gpu": map[string]any{"resource": "example.com/tpu"}}, "gpu.resource"},
		"pool without EPP":  {map[string]any{"inferencePool": map[string]any{"enabled": true}}, "inferencePool.endpointPicker.name"},
		"pull without ref":  {map[string]any{"model": map[string]any{"pull": map[string]any{"ref": ""}}}, "model.pull.ref"},
		"ref without repo":  {map[string]any{"model": map[string]any{"pull": map[string]any{"ref": "llama"}}}, "model.pull.ref"},
		"file without name": {map[string]any{"model": map[string]any{"file": "", "pull": map[string]any{"enabled": false}}}, "model.file"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := render(t, nil, tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
}

// TestPullScript runs the init container's script with a stand-in for
// headinfer: a failed pull lets the pod start only when a copy of the
// repository's model is on the volume.
func TestPullScript(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	r := mustRender(t, nil, map[string]any{"model": map[string]any{"pull": map[string]any{"ref": "hf.co/owner/repo:Q8_0"}}})
	ic := r.deploy.Spec.Template.Spec.InitContainers[0]
	if ic.Args[2] != "hf.co/owner/repo:Q8_0" || ic.Args[3] != "owner/repo" {
		t.Fatalf("pull arguments %q, want the reference and owner/repo", ic.Args[1:])
	}
	run := func(pullExit int, files ...string) int {
		t.Helper()
		bin, models := t.TempDir(), t.TempDir()
		stub := fmt.Sprintf("#!/bin/sh\n[ \"$1 $2\" = \"pull hf.co/owner/repo:Q8_0\" ] || exit 99\nexit %d\n", pullExit)
		if err := os.WriteFile(filepath.Join(bin, "headinfer"), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			p := filepath.Join(models, f)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(ic.Command[0], append(ic.Command[1:], ic.Args...)...)
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "HEADINFER_MODELS="+models)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return 0
	}
	for _, tc := range []struct {
		pull  int
		files []string
		want  int
	}{
		{0, nil, 0},
		{1, nil, 1},
		{1, []string{"owner/repo/m-Q8_0.gguf.0123456789abcdef.partial"}, 1},
		{1, []string{"other/repo/m-Q8_0.gguf"}, 1},
		{1, []string{"owner/repo/m-Q8_0.gguf"}, 0},
		{1, []string{"owner/repo/sub/dir/m-Q8_0.gguf"}, 0},
	} {
		if got := run(tc.pull, tc.files...); got != tc.want {
			t.Errorf("pull exits %d, volume holds %q: the script exits %d, want %d", tc.pull, tc.files, got, tc.want)
		}
	}
}
