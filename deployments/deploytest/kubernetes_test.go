package deploytest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory/sources"
)

const (
	k8sManifest = "deployments/kubernetes/dirsync.yaml"
	k8sSecret   = "deployments/kubernetes/secret.example.yaml"
)

// The subset of the Kubernetes API the manifests use.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Replicas *int `yaml:"replicas"`
		// Endpoints: a ServiceMonitor's scrape endpoints.
		Endpoints []struct {
			Port string `yaml:"port"`
			Path string `yaml:"path"`
		} `yaml:"endpoints"`
		Selector     map[string]any `yaml:"selector"`
		MinAvailable any            `yaml:"minAvailable"`
		Ports        []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
		Template struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				SecurityContext struct {
					RunAsNonRoot *bool `yaml:"runAsNonRoot"`
				} `yaml:"securityContext"`
				Containers []k8sContainer `yaml:"containers"`
				Volumes    []struct {
					Name      string `yaml:"name"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
	} `yaml:"resources"`
	SecurityContext struct {
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

// manifests is a set of Kubernetes objects for dirsync, one per kind: the
// plain manifests of deployments/kubernetes or the Helm chart rendered.
type manifests struct {
	configMap, deployment, service *k8sObject
	// pdb, secret and serviceMonitor are optional: a chart with one
	// replica has no disruption budget, one using an existing Secret makes
	// none, and the ServiceMonitor is a value.
	pdb, secret, serviceMonitor *k8sObject
}

// decodeObjects decodes every document of a multi-document YAML stream
// (empty documents skipped). Fields the structs leave out are ignored.
func decodeObjects(t *testing.T, what string, data []byte) []*k8sObject {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []*k8sObject
	for n := 1; ; n++ {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", what, n, err)
		}
		if o.APIVersion == "" && o.Kind == "" && o.Metadata.Name == "" {
			continue
		}
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Fatalf("%s: document %d lacks apiVersion, kind or metadata.name", what, n)
		}
		out = append(out, &o)
	}
}

func readObjects(t *testing.T, rel string) []*k8sObject {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatal(err)
	}
	return decodeObjects(t, rel, data)
}

// sortObjects files objs by kind; it fails t on an unexpected kind, a kind
// twice, or a missing ConfigMap, Deployment or Service.
func sortObjects(t *testing.T, objs []*k8sObject) manifests {
	t.Helper()
	var m manifests
	for _, o := range objs {
		var slot **k8sObject
		switch o.Kind {
		case "ConfigMap":
			slot = &m.configMap
		case "Deployment":
			slot = &m.deployment
		case "Service":
			slot = &m.service
		case "PodDisruptionBudget":
			slot = &m.pdb
		case "Secret":
			slot = &m.secret
		case "ServiceMonitor":
			slot = &m.serviceMonitor
		default:
			t.Fatalf("unexpected %s %s", o.Kind, o.Metadata.Name)
		}
		if *slot != nil {
			t.Fatalf("two %s objects", o.Kind)
		}
		*slot = o
	}
	if m.configMap == nil || m.deployment == nil || m.service == nil {
		t.Fatalf("want a ConfigMap, Deployment and Service; have %+v", m)
	}
	return m
}

// readManifests reads deployments/kubernetes: the manifests and the example
// Secret.
func readManifests(t *testing.T) manifests {
	t.Helper()
	m := sortObjects(t, append(readObjects(t, k8sManifest), readObjects(t, k8sSecret)...))
	if m.pdb == nil || m.secret == nil {
		t.Fatalf("deployments/kubernetes: want a PodDisruptionBudget and an example Secret")
	}
	return m
}

// secretKeys returns the keys of a Secret object (data or stringData).
func secretKeys(o *k8sObject) map[string]bool {
	out := map[string]bool{}
	for k := range o.Data {
		out[k] = true
	}
	for k := range o.StringData {
		out[k] = true
	}
	return out
}

func (m manifests) container(t *testing.T) k8sContainer {
	t.Helper()
	cs := m.deployment.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("want one container, have %d", len(cs))
	}
	return cs[0]
}

// mountedVolume returns the volume mounted at dir in the container.
func (m manifests) mountedVolume(t *testing.T, dir string) (configMap, secret string) {
	t.Helper()
	c := m.container(t)
	for _, vm := range c.VolumeMounts {
		if path.Clean(vm.MountPath) != path.Clean(dir) {
			continue
		}
		for _, v := range m.deployment.Spec.Template.Spec.Volumes {
			if v.Name != vm.Name {
				continue
			}
			if v.ConfigMap != nil {
				return v.ConfigMap.Name, ""
			}
			if v.Secret != nil {
				return "", v.Secret.SecretName
			}
		}
	}
	return "", ""
}

// portNumber resolves a probe or Service port (number or container port
// name).
func (m manifests) portNumber(t *testing.T, p any) int {
	t.Helper()
	switch v := p.(type) {
	case int:
		return v
	case string:
		for _, cp := range m.container(t).Ports {
			if cp.Name == v {
				return cp.ContainerPort
			}
		}
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	t.Errorf("port %v is neither a number nor a named container port", p)
	return -1
}

func matchLabels(sel map[string]any) map[string]string {
	out := map[string]string{}
	src := sel
	if ml, ok := sel["matchLabels"].(map[string]any); ok {
		src = ml
	}
	for k, v := range src {
		out[k] = fmt.Sprint(v)
	}
	return out
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestKubernetesManifests checks the plain manifests of
// deployments/kubernetes with checkManifests.
func TestKubernetesManifests(t *testing.T) {
	checkManifests(t, readManifests(t), manifestWant{replicas: 2, secretName: "dirsync-secrets"})
}

// manifestWant is what a set of manifests must configure.
type manifestWant struct {
	replicas int
	// secretName is the Secret the pods mount; when the set has a Secret
	// object it must be that one and hold exactly the keys the config reads.
	secretName string
	// serviceMonitor: the set must have a ServiceMonitor.
	serviceMonitor bool
}

// checkManifests checks manifests against the binary and the config schema:
// the args are real subcommands and flags, the ConfigMap's config validates
// with the secrets of the mounted Secret (exactly its keys when the Secret
// is in the set), every port (probes, Service, scrape annotation,
// ServiceMonitor) is the one api.listen serves, selectors select the pods,
// and a disruption budget lets a node drain proceed.
func checkManifests(t *testing.T, m manifests, want manifestWant) {
	t.Helper()
	c := inspectCLI(t)
	ctr := m.container(t)
	pod := m.deployment.Spec.Template

	if r := m.deployment.Spec.Replicas; r == nil || *r != want.replicas {
		t.Errorf("Deployment replicas %v, want %d", r, want.replicas)
	}
	if err := c.checkArgs(ctr.Args); err != nil {
		t.Errorf("container args %q: %v", ctr.Args, err)
	}
	if len(ctr.Args) == 0 || ctr.Args[0] != "run" {
		t.Errorf("container args %q: want run", ctr.Args)
	}
	if ctr.Resources.Requests["cpu"] == "" || ctr.Resources.Requests["memory"] == "" {
		t.Errorf("container resource requests %v: want cpu and memory", ctr.Resources.Requests)
	}
	if sc := pod.Spec.SecurityContext.RunAsNonRoot; sc == nil || !*sc {
		t.Error("pod securityContext.runAsNonRoot must be true")
	}
	if ro := ctr.SecurityContext.ReadOnlyRootFilesystem; ro == nil || !*ro {
		t.Error("container securityContext.readOnlyRootFilesystem must be true")
	}
	if ape := ctr.SecurityContext.AllowPrivilegeEscalation; ape == nil || *ape {
		t.Error("container securityContext.allowPrivilegeEscalation must be false")
	}

	// Selectors.
	if !selects(matchLabels(m.deployment.Spec.Selector), pod.Metadata.Labels) {
		t.Errorf("Deployment selector %v does not select its pods %v", m.deployment.Spec.Selector, pod.Metadata.Labels)
	}
	if !selects(matchLabels(m.service.Spec.Selector), pod.Metadata.Labels) {
		t.Errorf("Service selector %v does not select the pods %v", m.service.Spec.Selector, pod.Metadata.Labels)
	}
	switch {
	case m.pdb == nil && want.replicas >= 2:
		t.Errorf("%d replicas and no PodDisruptionBudget", want.replicas)
	case m.pdb != nil && want.replicas < 2:
		t.Errorf("a PodDisruptionBudget for %d replica(s) would block every node drain", want.replicas)
	case m.pdb != nil:
		if !selects(matchLabels(m.pdb.Spec.Selector), pod.Metadata.Labels) {
			t.Errorf("PodDisruptionBudget selector %v does not select the pods %v", m.pdb.Spec.Selector, pod.Metadata.Labels)
		}
		if n, ok := m.pdb.Spec.MinAvailable.(int); !ok || n < 1 || n >= *m.deployment.Spec.Replicas {
			t.Errorf("PodDisruptionBudget minAvailable %v: want 1..replicas-1 so a node drain can proceed", m.pdb.Spec.MinAvailable)
		}
	}

	// The config: mounted from the ConfigMap, secrets from the Secret.
	cfgPath, ok := flagValue(ctr.Args, "config")
	if !ok {
		t.Fatalf("container args %q: no --config", ctr.Args)
	}
	cmName, _ := m.mountedVolume(t, path.Dir(cfgPath))
	if cmName != m.configMap.Metadata.Name {
		t.Fatalf("--config %s: its directory is not the ConfigMap %s mounted", cfgPath, m.configMap.Metadata.Name)
	}
	cfgText, ok := m.configMap.Data[path.Base(cfgPath)]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", cmName, path.Base(cfgPath))
	}
	secretDir := ""
	for _, vm := range ctr.VolumeMounts {
		if _, s := m.mountedVolume(t, vm.MountPath); s != "" {
			if s != want.secretName {
				t.Errorf("volume %s mounts Secret %s, want %s", vm.Name, s, want.secretName)
			}
			if m.secret != nil && s != m.secret.Metadata.Name {
				t.Errorf("volume %s mounts Secret %s; the Secret object is %s", vm.Name, s, m.secret.Metadata.Name)
			}
			secretDir = path.Clean(vm.MountPath) + "/"
		}
	}
	if secretDir == "" {
		t.Fatal("no Secret volume mounted")
	}
	used := map[string]bool{}
	for _, mm := range regexp.MustCompile(regexp.QuoteMeta(secretDir)+`([A-Za-z0-9_.-]+)`).FindAllStringSubmatch(cfgText, -1) {
		used[mm[1]] = true
	}
	if m.secret != nil {
		have := secretKeys(m.secret)
		for k := range used {
			if !have[k] {
				t.Errorf("the config reads %s%s but the Secret has no key %s", secretDir, k, k)
			}
		}
		for k := range have {
			if !used[k] {
				t.Errorf("Secret key %s is not used by the config", k)
			}
		}
	}
	tmp := t.TempDir()
	for k := range used {
		if err := os.WriteFile(filepath.Join(tmp, k), []byte("s3cret"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Parse([]byte(strings.ReplaceAll(cfgText, secretDir, tmp+"/")), path.Dir(cfgPath), "ConfigMap "+cmName, sources.Config(), func(string) string { return "" })
	if err != nil {
		t.Fatalf("the ConfigMap's config is not valid:\n%v", err)
	}

	// Ports: api.listen is what the probes, the Service and the scrape
	// annotation reach.
	_, portText, err := net.SplitHostPort(cfg.API.Listen)
	if err != nil {
		t.Fatal(err)
	}
	apiPort, _ := strconv.Atoi(portText)
	if len(ctr.Ports) != 1 || ctr.Ports[0].ContainerPort != apiPort {
		t.Errorf("container ports %+v: want the api.listen port %d", ctr.Ports, apiPort)
	}
	for name, p := range map[string]*k8sProbe{"livenessProbe": ctr.LivenessProbe, "readinessProbe": ctr.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe", name)
			continue
		}
		if got := m.portNumber(t, p.HTTPGet.Port); got != apiPort {
			t.Errorf("%s port %d, api.listen port %d", name, got, apiPort)
		}
	}
	if ctr.LivenessProbe != nil && ctr.LivenessProbe.HTTPGet != nil && ctr.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("livenessProbe path %s, want /healthz (process alive; /readyz would restart pods during a directory outage)", ctr.LivenessProbe.HTTPGet.Path)
	}
	if ctr.ReadinessProbe != nil && ctr.ReadinessProbe.HTTPGet != nil && ctr.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readinessProbe path %s, want /readyz", ctr.ReadinessProbe.HTTPGet.Path)
	}
	if len(m.service.Spec.Ports) == 0 {
		t.Error("Service has no ports")
	}
	for _, sp := range m.service.Spec.Ports {
		if got := m.portNumber(t, sp.TargetPort); got != apiPort {
			t.Errorf("Service port %s targets %d, api.listen port %d", sp.Name, got, apiPort)
		}
	}
	ann := pod.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(apiPort) || ann["prometheus.io/path"] == "" {
		t.Errorf("pod annotations %v: want prometheus.io/scrape \"true\", prometheus.io/port %q and a prometheus.io/path", ann, strconv.Itoa(apiPort))
	}
	switch sm := m.serviceMonitor; {
	case sm == nil && want.serviceMonitor:
		t.Error("no ServiceMonitor")
	case sm != nil && !want.serviceMonitor:
		t.Error("a ServiceMonitor that was not asked for")
	case sm != nil:
		if sm.APIVersion != "monitoring.coreos.com/v1" {
			t.Errorf("ServiceMonitor apiVersion %s, want monitoring.coreos.com/v1", sm.APIVersion)
		}
		if !selects(matchLabels(sm.Spec.Selector), m.service.Metadata.Labels) {
			t.Errorf("ServiceMonitor selector %v does not select the Service %v", sm.Spec.Selector, m.service.Metadata.Labels)
		}
		if len(sm.Spec.Endpoints) == 0 {
			t.Error("ServiceMonitor has no endpoints")
		}
		for _, ep := range sm.Spec.Endpoints {
			found := false
			for _, sp := range m.service.Spec.Ports {
				found = found || sp.Name == ep.Port
			}
			if !found || ep.Path != ann["prometheus.io/path"] {
				t.Errorf("ServiceMonitor endpoint %+v: want a Service port name and the path %s", ep, ann["prometheus.io/path"])
			}
		}
	}
}

// TestManifestPathsServedByDaemon requests every HTTP path a deployment
// file relies on (probes, the scrape path, the Docker health check) from a
// real `dirsync run`.
func TestManifestPathsServedByDaemon(t *testing.T) {
	m := readManifests(t)
	ctr := m.container(t)
	var paths []string
	for _, p := range []*k8sProbe{ctr.LivenessProbe, ctr.ReadinessProbe} {
		if p != nil && p.HTTPGet != nil {
			paths = append(paths, p.HTTPGet.Path)
		}
	}
	if p := m.deployment.Spec.Template.Metadata.Annotations["prometheus.io/path"]; p != "" {
		paths = append(paths, p)
	}
	img := readDockerfile(t)
	if raw, ok := flagValue(img.healthcheck, "url"); ok {
		if i := strings.Index(raw, "://"); i >= 0 {
			if j := strings.Index(raw[i+3:], "/"); j >= 0 {
				paths = append(paths, raw[i+3+j:])
			}
		}
	}
	if len(paths) < 4 {
		t.Fatalf("found only paths %q in the manifests and Dockerfile", paths)
	}
	d := startDaemon(t)
	servedPaths(t, d, "deployment files", paths...)
}
