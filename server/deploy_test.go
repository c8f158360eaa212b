package server

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"nectar/server/catalog"
	"nectar/server/queue"
)

// The deployment files (tools/deploy) name what the code defines: the NECTAR_* variables,
// the task stream and the queues' consumers KEDA reads, the metrics alerts use, the binary the
// image installs. Each such name is checked here against the code itself (the parsed Go
// sources, the package's constants, a real server's metrics registry, ConfigFromEnv, the
// nats-server configuration parser of go.mod's version), so renaming one side without the
// other fails here, naming the file and what the code has instead.
func TestDeployFilesUseTheCodesNames(t *testing.T) {
	d := loadDeploy(t)
	// What the files build and start, read once (a problem with them is reported here).
	d.img = d.image(t)
	d.containers = d.nectarContainers(t)
	d.natsK, d.natsC = d.natsK8s(t), d.natsCompose(t)
	// A real server in queue mode: its routes answer the probes, its registry has the metrics.
	d.srv = newTestServer(t, func(c *Config) { c.Dispatch = "queue" })
	t.Run("kubernetes objects", d.checkObjects)
	t.Run("env names", d.checkEnvNames)
	t.Run("secrets", d.checkSecrets)
	t.Run("image and binary", d.checkImage)
	t.Run("nats", d.checkNATS)
	t.Run("processes", d.checkProcesses)
	t.Run("probes", d.checkProbes)
	t.Run("keda", d.checkKEDA)
	t.Run("metrics", d.checkMetrics)
}

// deployRoot is tools/deploy, seen from this package's folder; file names in messages are
// relative to the repository's root.
const deployRoot = "../tools/deploy"

type deployDoc struct {
	file  string // tools/deploy/...
	index int    // 0-based document index in the file
	m     map[string]any
}

func (d deployDoc) where() string {
	if kind := dpStr(d.m, "kind"); kind != "" {
		return fmt.Sprintf("%s (document %d, %s %s)", d.file, d.index, kind, dpStr(d.m, "metadata", "name"))
	}
	return fmt.Sprintf("%s (document %d)", d.file, d.index)
}

type deployFiles struct {
	text       map[string]string // every file under tools/deploy, by name
	k8s        []deployDoc       // documents under tools/deploy/kubernetes
	compose    []deployDoc       // compose files' documents
	dockerfile string            // name of the Dockerfile

	img          dockerImage
	containers   []nectarContainer
	natsK, natsC natsSetup // the NATS of the Kubernetes manifests, of compose
	srv          *testServer
}

func loadDeploy(t *testing.T) *deployFiles {
	t.Helper()
	d := &deployFiles{text: map[string]string{}}
	err := filepath.WalkDir(deployRoot, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", p)
		name := filepath.ToSlash(rel)
		d.text[name] = string(b)
		if e.Name() == "Dockerfile" {
			d.dockerfile = name
		}
		ext := path.Ext(name)
		if ext != ".yaml" && ext != ".yml" {
			return nil
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for i := 0; ; i++ {
			var v any
			err := dec.Decode(&v)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d does not parse: %v", name, i, err)
			}
			if v == nil {
				continue // an empty document (a leading or trailing ---)
			}
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%s: document %d is a %T, want a mapping", name, i, v)
			}
			doc := deployDoc{file: name, index: i, m: m}
			switch {
			case strings.Contains(name, "/kubernetes/"):
				d.k8s = append(d.k8s, doc)
			case strings.HasPrefix(path.Base(name), "compose.") || strings.HasPrefix(path.Base(name), "docker-compose."):
				d.compose = append(d.compose, doc)
			default:
				t.Errorf("%s: a YAML file neither under kubernetes/ nor a compose file: which checks apply to it?", name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.k8s) == 0 || len(d.compose) == 0 || d.dockerfile == "" {
		t.Fatalf("tools/deploy: want Kubernetes manifests, a compose file and a Dockerfile; found %d manifests, %d compose documents, Dockerfile %q",
			len(d.k8s), len(d.compose), d.dockerfile)
	}
	return d
}

// --- Kubernetes objects ----------------------------------------------------------------

func (d *deployFiles) checkObjects(t *testing.T) {
	ns := ""
	for _, doc := range d.k8s {
		if dpStr(doc.m, "kind") == "Namespace" {
			ns = dpStr(doc.m, "metadata", "name")
		}
	}
	for _, doc := range d.k8s {
		for _, f := range [][]string{{"apiVersion"}, {"kind"}, {"metadata", "name"}} {
			if dpStr(doc.m, f...) == "" {
				t.Errorf("%s: no %s", doc.where(), strings.Join(f, "."))
			}
		}
		if kind := dpStr(doc.m, "kind"); ns != "" && kind != "Namespace" {
			if got := dpStr(doc.m, "metadata", "namespace"); got != ns {
				t.Errorf("%s: namespace %q, want %q (the Namespace the files define; keda.yaml's NATS address names it too)", doc.where(), got, ns)
			}
		}
		// The API server refuses a number where a string is due: env values, ConfigMap data.
		for _, c := range podContainers(doc) {
			for _, e := range dpList(c, "env") {
				if v, ok := dpGet(e, "value"); ok {
					if _, isStr := v.(string); !isStr {
						t.Errorf("%s: container %s: env %s: value %v is a YAML %T; Kubernetes wants a string: quote it", doc.where(), dpStr(c, "name"), dpStr(e, "name"), v, v)
					}
				}
			}
		}
		if dpStr(doc.m, "kind") == "ConfigMap" {
			for k, v := range dpMap(doc.m, "data") {
				if _, isStr := v.(string); !isStr {
					t.Errorf("%s: data %s: %v is a YAML %T; Kubernetes wants a string: quote it", doc.where(), k, v, v)
				}
			}
		}
	}
}

// --- NECTAR_* names --------------------------------------------------------------------

// codeEnv is what the Go sources say about environment variables.
type codeEnv struct {
	names    map[string]bool // every string literal that is a whole NECTAR_* name
	families []string        // literals ending in _: prefixes of a family (NECTAR_CONN_<NAME>)
}

var envName = regexp.MustCompile(`^NECTAR_[A-Z0-9_]+$`)

// envNamesInCode parses every non-test Go file of the module for string literals that are
// NECTAR_* names: what the code reads (config.go, the CLI, the store, the test tools).
func envNamesInCode(t *testing.T) codeEnv {
	t.Helper()
	ce := codeEnv{names: map[string]bool{}}
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			switch n := e.Name(); {
			case p == "..":
			case strings.HasPrefix(n, ".") || n == "testdata" || n == "bin" || n == "local_targets" || n == "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			if s, err := strconv.Unquote(lit.Value); err == nil && envName.MatchString(s) {
				if strings.HasSuffix(s, "_") {
					if !slices.Contains(ce.families, s) {
						ce.families = append(ce.families, s)
					}
				} else {
					ce.names[s] = true
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !ce.names["NECTAR_TARGET"] || !slices.Contains(ce.families, "NECTAR_CONN_") {
		t.Fatalf("the sources' NECTAR_* names lack NECTAR_TARGET or the family NECTAR_CONN_: the walk missed the module (%d names, families %v)", len(ce.names), ce.families)
	}
	sort.Strings(ce.families)
	return ce
}

// family is the family prefix name belongs to, if any.
func (ce codeEnv) family(name string) string {
	for _, f := range ce.families {
		if strings.HasPrefix(name, f) && len(name) > len(f) {
			return f
		}
	}
	return ""
}

func (ce codeEnv) closest(name string) string {
	best, bestScore := "", 0
	for n := range ce.names {
		score := 0
		for i := 0; i < len(n) && i < len(name) && n[i] == name[i]; i++ {
			score++
		}
		if score > bestScore || (score == bestScore && n < best) {
			best, bestScore = n, score
		}
	}
	return best
}

var envMention = regexp.MustCompile(`NECTAR_[A-Z0-9_]+`)

func (d *deployFiles) checkEnvNames(t *testing.T) {
	ce := envNamesInCode(t)
	// JetStream's names are NECTAR_* too, but no variable: no file may set them as one.
	jetstream := map[string]bool{queue.TasksStream: true, queue.WorkersBucket: true}
	connections := map[string]bool{}
	for _, task := range catalog.Generated().Tasks() {
		for _, c := range task.Connections {
			connections[ConnectionEnv(c)] = true
		}
	}
	check := func(file, name string, set bool) {
		switch {
		case jetstream[name] && set:
			t.Errorf("%s: sets %s, the name of a JetStream stream or bucket (queue.TasksStream, queue.WorkersBucket), not a variable the code reads", file, name)
		case jetstream[name], ce.names[name]:
		case strings.HasSuffix(name, "_") && slices.ContainsFunc(slices.Collect(maps.Keys(ce.names)), func(n string) bool { return strings.HasPrefix(n, name) }):
			// a mention of several at once: NECTAR_NATS_TLS_*
		case ce.family(name) == "NECTAR_CONN_" || name == "NECTAR_CONN_":
			if name != "NECTAR_CONN_" && !connections[name] {
				var have []string
				for c := range connections {
					have = append(have, c)
				}
				sort.Strings(have)
				t.Errorf("%s: %s configures a connection no task declares (Connections()): the tasks declare %v", file, name, have)
			}
		case ce.family(name) != "":
		default:
			t.Errorf("%s: %s is not a variable the code reads (no such literal in the module's Go sources; closest: %s)", file, name, ce.closest(name))
		}
	}
	// Names the files set: env of containers, ConfigMap and Secret keys, compose environment.
	for _, doc := range d.k8s {
		for _, c := range podContainers(doc) {
			for _, e := range dpList(c, "env") {
				if n := dpStr(e, "name"); strings.HasPrefix(n, "NECTAR_") {
					check(doc.where(), n, true)
				}
			}
		}
		if k := dpStr(doc.m, "kind"); k == "ConfigMap" || k == "Secret" {
			for _, field := range []string{"data", "stringData"} {
				for n := range dpMap(doc.m, field) {
					if strings.HasPrefix(n, "NECTAR_") {
						check(doc.where(), n, true)
					}
				}
			}
		}
	}
	for _, doc := range d.compose {
		for name, svc := range dpMap(doc.m, "services") {
			for n := range composeEnv(svc) {
				if strings.HasPrefix(n, "NECTAR_") {
					check(fmt.Sprintf("%s (service %s)", doc.file, name), n, true)
				}
			}
		}
	}
	// And every mention in any file (comments, README, Dockerfile).
	for _, file := range slices.Sorted(maps.Keys(d.text)) {
		seen := map[string]bool{}
		for _, n := range envMention.FindAllString(d.text[file], -1) {
			if !seen[n] {
				seen[n] = true
				check(file, n, false)
			}
		}
	}
}

func (d *deployFiles) checkSecrets(t *testing.T) {
	for _, doc := range d.k8s {
		if dpStr(doc.m, "kind") != "Secret" {
			continue
		}
		if _, ok := dpGet(doc.m, "data"); ok {
			t.Errorf("%s: has data (base64): the example Secrets hold readable placeholders in stringData only", doc.where())
		}
		for k, v := range dpMap(doc.m, "stringData") {
			if s, _ := v.(string); !strings.Contains(strings.ToUpper(s), "REPLACE") {
				t.Errorf("%s: %s is not a placeholder (no REPLACE in it): never commit a real secret", doc.where(), k)
			}
		}
	}
}

// --- The image -------------------------------------------------------------------------

// dockerImage is what the Dockerfile builds, as the other files must use it.
type dockerImage struct {
	binary    string // where the final stage puts the nectar binary
	pluginDir string // ENV NECTAR_PLUGIN_DIR
	env       map[string]string
}

var (
	dockerFrom = regexp.MustCompile(`(?m)^FROM\s+golang:(\d+)\.(\d+)`)
	goModGo    = regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`)
)

func (d *deployFiles) image(t *testing.T) dockerImage {
	t.Helper()
	text := strings.ReplaceAll(d.text[d.dockerfile], "\\\n", " ")
	img := dockerImage{env: map[string]string{}}
	var copies [][2]string
	var cmd []string
	for _, line := range strings.Split(text, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			copies, cmd, img.env = nil, nil, map[string]string{} // what counts is the last stage's
		case "COPY":
			var args []string
			for _, f := range fields[1:] {
				if !strings.HasPrefix(f, "--") {
					args = append(args, f)
				}
			}
			if len(args) == 2 && strings.Contains(line, "--from=") {
				copies = append(copies, [2]string{args[0], args[1]})
			}
		case "ENV":
			for _, kv := range fields[1:] {
				if k, v, ok := strings.Cut(kv, "="); ok {
					img.env[k] = v
				}
			}
		case "CMD":
			rest := strings.TrimSpace(line[len(fields[0]):])
			if err := yaml.Unmarshal([]byte(rest), &cmd); err != nil {
				t.Errorf("%s: CMD %s: want the exec form, a JSON list: %v", d.dockerfile, rest, err)
			}
		}
	}
	for _, c := range copies {
		if path.Base(c[0]) == "nectar" {
			img.binary = c[1]
		}
	}
	img.pluginDir = img.env["NECTAR_PLUGIN_DIR"]
	switch {
	case img.binary == "":
		t.Errorf("%s: the final stage copies no nectar binary (COPY --from=... .../nectar /usr/local/bin/nectar)", d.dockerfile)
	case len(cmd) == 0 || cmd[0] != img.binary:
		t.Errorf("%s: CMD %v does not start %s, where the final stage puts the binary", d.dockerfile, cmd, img.binary)
	}
	if img.pluginDir == "" {
		t.Errorf("%s: no ENV NECTAR_PLUGIN_DIR: the server would look for plugins in ./bin/plugins", d.dockerfile)
	} else if !slices.ContainsFunc(copies, func(c [2]string) bool { return strings.TrimSuffix(c[1], "/") == strings.TrimSuffix(img.pluginDir, "/") }) {
		t.Errorf("%s: NECTAR_PLUGIN_DIR=%s, but no COPY --from puts the plugins there (copies: %v)", d.dockerfile, img.pluginDir, copies)
	}
	for _, want := range []string{"./tools/nectar", "plugins/mains", "sha256sum"} {
		if !strings.Contains(text, want) {
			t.Errorf("%s: does not mention %s: it must build what make build builds (the nectar binary, each plugin of plugins/mains and its .sha256)", d.dockerfile, want)
		}
	}
	// The builder's Go is at least go.mod's.
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	want := goModGo.FindStringSubmatch(string(gomod))
	got := dockerFrom.FindStringSubmatch(text)
	if want == nil || got == nil {
		t.Errorf("%s: no FROM golang:X.Y stage (go.mod's go line: %v)", d.dockerfile, want)
	} else if dpAtoi(got[1])*1000+dpAtoi(got[2]) < dpAtoi(want[1])*1000+dpAtoi(want[2]) {
		t.Errorf("%s: builds with golang:%s.%s, older than go.mod's go %s.%s", d.dockerfile, got[1], got[2], want[1], want[2])
	}
	return img
}

// nectarContainer is one process of Nectar the files start: a Kubernetes container or a
// compose service.
type nectarContainer struct {
	where   string
	image   string
	command []string
	env     map[string]string // literal values, Dockerfile ENV first; secrets and ${...} left out
	names   []string          // every variable it gets, secrets included
	grace   time.Duration     // until SIGKILL after SIGTERM
	k8s     bool
	owner   deployDoc      // the Deployment, or the compose file
	raw     map[string]any // the container, or the compose service
}

func (c nectarContainer) subcommand() string {
	if len(c.command) > 1 {
		return c.command[1]
	}
	return ""
}

func (d *deployFiles) checkImage(t *testing.T) {
	img := d.img
	var composeImage string
	for _, doc := range d.compose {
		for name, svc := range dpMap(doc.m, "services") {
			if df := dpStr(svc, "build", "dockerfile"); df != "" {
				if path.Base(df) != path.Base(d.dockerfile) {
					t.Errorf("%s: service %s builds %s; the Dockerfile here is %s", doc.file, name, df, d.dockerfile)
				}
				composeImage = dpStr(svc, "image")
			}
		}
	}
	if composeImage == "" {
		t.Errorf("compose: no service builds the Dockerfile with an image name: Kubernetes would have nothing to compare with")
	}
	for _, c := range d.containers {
		if c.image != composeImage {
			t.Errorf("%s: image %q; compose builds %q: one image for all", c.where, c.image, composeImage)
		}
		if len(c.command) == 0 || c.command[0] != img.binary {
			t.Errorf("%s: command %v; the Dockerfile puts the binary at %s", c.where, c.command, img.binary)
		}
		if dir, ok := c.env["NECTAR_PLUGIN_DIR"]; ok && dir != img.pluginDir {
			t.Errorf("%s: NECTAR_PLUGIN_DIR=%s; the image has its plugins in %s", c.where, dir, img.pluginDir)
		}
	}
}

// nectarContainers finds every Nectar process of the files: a container or service whose
// image is named nectar or whose command runs a binary named nectar.
func (d *deployFiles) nectarContainers(t *testing.T) []nectarContainer {
	t.Helper()
	img := d.img
	isNectar := func(image string, command []string) bool {
		repo, _, _ := strings.Cut(path.Base(image), ":")
		return repo == "nectar" || (len(command) > 0 && path.Base(command[0]) == "nectar")
	}
	var out []nectarContainer
	for _, doc := range d.k8s {
		for _, c := range podContainers(doc) {
			command := append(dpStrings(c, "command"), dpStrings(c, "args")...)
			if !isNectar(dpStr(c, "image"), command) {
				continue
			}
			nc := nectarContainer{where: fmt.Sprintf("%s container %s", doc.where(), dpStr(c, "name")),
				image: dpStr(c, "image"), command: command, env: map[string]string{}, k8s: true, owner: doc, raw: c}
			maps.Copy(nc.env, img.env)
			for k := range img.env {
				nc.names = append(nc.names, k)
			}
			nc.grace = 30 * time.Second // Kubernetes' default
			if g, ok := dpGet(doc.m, "spec", "template", "spec", "terminationGracePeriodSeconds"); ok {
				nc.grace = time.Duration(dpInt(g)) * time.Second
			}
			for _, from := range dpList(c, "envFrom") {
				kind, name := "ConfigMap", dpStr(from, "configMapRef", "name")
				if name == "" {
					kind, name = "Secret", dpStr(from, "secretRef", "name")
				}
				src, ok := d.object(kind, name)
				if !ok {
					t.Errorf("%s: envFrom %s %s: no such %s in tools/deploy/kubernetes", nc.where, kind, name, kind)
					continue
				}
				for _, field := range []string{"data", "stringData"} {
					for k, v := range dpMap(src.m, field) {
						nc.names = append(nc.names, k)
						if kind == "ConfigMap" {
							nc.env[k] = fmt.Sprint(v)
						} else {
							delete(nc.env, k)
						}
					}
				}
			}
			for _, e := range dpList(c, "env") {
				name := dpStr(e, "name")
				nc.names = append(nc.names, name)
				delete(nc.env, name)
				if v, ok := dpGet(e, "value"); ok {
					nc.env[name] = fmt.Sprint(v)
					continue
				}
				for kind, ref := range map[string]string{"Secret": "secretKeyRef", "ConfigMap": "configMapKeyRef"} {
					r := dpMap(e, "valueFrom", ref)
					if r == nil {
						continue
					}
					src, ok := d.object(kind, dpStr(r, "name"))
					if !ok {
						t.Errorf("%s: env %s: no %s %s in tools/deploy/kubernetes", nc.where, name, kind, dpStr(r, "name"))
						continue
					}
					v, ok := dpGet(src.m, "data", dpStr(r, "key"))
					if !ok {
						v, ok = dpGet(src.m, "stringData", dpStr(r, "key"))
					}
					if !ok {
						t.Errorf("%s: env %s: %s has no key %s", nc.where, name, src.where(), dpStr(r, "key"))
					} else if kind == "ConfigMap" {
						nc.env[name] = fmt.Sprint(v)
					}
				}
			}
			out = append(out, nc)
		}
	}
	for _, doc := range d.compose {
		for _, name := range slices.Sorted(maps.Keys(dpMap(doc.m, "services"))) {
			svc := dpMap(doc.m, "services", name)
			command := dpStrings(svc, "command")
			if s, ok := svc["command"].(string); ok {
				command = strings.Fields(s)
			}
			if !isNectar(dpStr(svc, "image"), command) {
				continue
			}
			nc := nectarContainer{where: fmt.Sprintf("%s (service %s)", doc.file, name), image: dpStr(svc, "image"),
				command: command, env: map[string]string{}, grace: 10 * time.Second /* Docker's default */, owner: doc, raw: svc}
			maps.Copy(nc.env, img.env)
			for k, v := range composeEnv(svc) {
				nc.names = append(nc.names, k)
				if strings.Contains(v, "${") {
					delete(nc.env, k) // the operator's, from .env
				} else {
					nc.env[k] = v
				}
			}
			if g := dpStr(svc, "stop_grace_period"); g != "" {
				var err error
				if nc.grace, err = time.ParseDuration(g); err != nil {
					t.Errorf("%s: stop_grace_period %q: %v", nc.where, g, err)
				}
			}
			out = append(out, nc)
		}
	}
	if len(out) == 0 {
		t.Fatal("no Nectar container in tools/deploy")
	}
	return out
}

// object is the Kubernetes object of kind and name in the files.
func (d *deployFiles) object(kind, name string) (deployDoc, bool) {
	for _, doc := range d.k8s {
		if dpStr(doc.m, "kind") == kind && dpStr(doc.m, "metadata", "name") == name {
			return doc, true
		}
	}
	return deployDoc{}, false
}

// --- NATS ------------------------------------------------------------------------------

// natsSetup is the NATS a set of files runs (the Kubernetes manifests, or compose).
type natsSetup struct {
	where   string
	opts    *natsserver.Options
	nodes   int
	image   string
	service map[string]map[int]bool // client-reachable names (Services, compose service) and their ports
	sts     deployDoc               // the StatefulSet (Kubernetes)
}

var natsImage = regexp.MustCompile(`^nats:(\d+)\.(\d+)`)

// parseNATSConf reads conf with the nats-server of go.mod, as the cluster will.
func parseNATSConf(t *testing.T, where, conf string) *natsserver.Options {
	t.Helper()
	opts := &natsserver.Options{}
	if err := opts.ProcessConfigString(conf); err != nil {
		t.Fatalf("%s: nats.conf does not parse (nats-server of go.mod): %v", where, err)
	}
	return opts
}

func (d *deployFiles) natsK8s(t *testing.T) natsSetup {
	t.Helper()
	var ns natsSetup
	for _, doc := range d.k8s {
		if dpStr(doc.m, "kind") != "StatefulSet" {
			continue
		}
		for _, c := range podContainers(doc) {
			if !natsImage.MatchString(dpStr(c, "image")) {
				continue
			}
			ns.sts, ns.image, ns.where = doc, dpStr(c, "image"), doc.where()
			ns.nodes = 1
			if r, ok := dpGet(doc.m, "spec", "replicas"); ok {
				ns.nodes = dpInt(r)
			}
			command := append(dpStrings(c, "command"), dpStrings(c, "args")...)
			i := slices.IndexFunc(command, func(s string) bool { return s == "--config" || s == "-c" })
			if i < 0 || i+1 >= len(command) {
				t.Fatalf("%s: nats-server runs without --config: %v", doc.where(), command)
			}
			confPath := command[i+1]
			// Variables the configuration names, from the downward API, as in pod 0.
			for _, e := range dpList(c, "env") {
				if dpStr(e, "valueFrom", "fieldRef", "fieldPath") == "metadata.name" {
					t.Setenv(dpStr(e, "name"), dpStr(doc.m, "metadata", "name")+"-0")
				}
			}
			for _, m := range dpList(c, "volumeMounts") {
				mount := dpStr(m, "mountPath")
				if path.Dir(confPath) != path.Clean(mount) {
					continue
				}
				for _, v := range dpList(doc.m, "spec", "template", "spec", "volumes") {
					if dpStr(v, "name") != dpStr(m, "name") {
						continue
					}
					cm, ok := d.object("ConfigMap", dpStr(v, "configMap", "name"))
					if !ok {
						t.Fatalf("%s: volume %s: no ConfigMap %s", doc.where(), dpStr(v, "name"), dpStr(v, "configMap", "name"))
					}
					conf := dpStr(cm.m, "data", path.Base(confPath))
					if conf == "" {
						t.Fatalf("%s: no key %s, the file nats-server reads", cm.where(), path.Base(confPath))
					}
					ns.opts = parseNATSConf(t, cm.where(), conf)
				}
			}
			if ns.opts == nil {
				t.Fatalf("%s: %s is not mounted from a ConfigMap", doc.where(), confPath)
			}
		}
	}
	if ns.opts == nil {
		t.Fatal("tools/deploy/kubernetes: no StatefulSet runs a nats image")
	}
	// Services selecting the StatefulSet's pods, with their ports resolved to numbers.
	ns.service = map[string]map[int]bool{}
	containerPorts := map[string]int{}
	for _, c := range podContainers(ns.sts) {
		for _, p := range dpList(c, "ports") {
			containerPorts[dpStr(p, "name")] = dpInt(p["containerPort"])
		}
	}
	labels := dpMap(ns.sts.m, "spec", "template", "metadata", "labels")
	for _, doc := range d.k8s {
		if dpStr(doc.m, "kind") != "Service" {
			continue
		}
		sel := dpMap(doc.m, "spec", "selector")
		match := len(sel) > 0
		for k, v := range sel {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		ports := map[int]bool{}
		for _, p := range dpList(doc.m, "spec", "ports") {
			target := dpInt(p["port"])
			if tp, ok := p["targetPort"]; ok {
				if s, isName := tp.(string); isName {
					var found bool
					if target, found = containerPorts[s]; !found {
						t.Errorf("%s: targetPort %s: the nats container has no port of that name (%v)", doc.where(), s, containerPorts)
					}
				} else {
					target = dpInt(tp)
				}
			}
			if dpInt(p["port"]) != target {
				t.Errorf("%s: port %d goes to %d: keep them equal, the files name the port", doc.where(), dpInt(p["port"]), target)
			}
			ports[dpInt(p["port"])] = true
		}
		ns.service[dpStr(doc.m, "metadata", "name")] = ports
	}
	return ns
}

func (d *deployFiles) natsCompose(t *testing.T) natsSetup {
	t.Helper()
	for _, doc := range d.compose {
		for name, svc := range dpMap(doc.m, "services") {
			if !natsImage.MatchString(dpStr(svc, "image")) {
				continue
			}
			ns := natsSetup{where: fmt.Sprintf("%s (service %s)", doc.file, name), image: dpStr(svc, "image"), nodes: 1}
			if r, ok := dpGet(svc, "deploy", "replicas"); ok {
				ns.nodes = dpInt(r)
			}
			command := dpStrings(svc, "command")
			i := slices.IndexFunc(command, func(s string) bool { return s == "--config" || s == "-c" })
			if i < 0 || i+1 >= len(command) {
				t.Fatalf("%s: nats-server runs without --config: %v", ns.where, command)
			}
			for _, c := range dpList(svc, "configs") {
				if dpStr(c, "target") == command[i+1] {
					conf := dpStr(doc.m, "configs", dpStr(c, "source"), "content")
					if conf == "" {
						t.Fatalf("%s: config %s has no content", doc.file, dpStr(c, "source"))
					}
					ns.opts = parseNATSConf(t, fmt.Sprintf("%s (config %s)", doc.file, dpStr(c, "source")), conf)
				}
			}
			if ns.opts == nil {
				t.Fatalf("%s: no config is mounted at %s", ns.where, command[i+1])
			}
			ns.service = map[string]map[int]bool{name: {ns.opts.Port: true, ns.opts.HTTPPort: true}}
			return ns
		}
	}
	t.Fatal("compose: no service runs a nats image")
	return natsSetup{}
}

func (d *deployFiles) checkNATS(t *testing.T) {
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`github.com/nats-io/nats-server/v2 v(\d+)\.(\d+)\.`).FindStringSubmatch(string(gomod))
	if want == nil {
		t.Fatal("go.mod requires no github.com/nats-io/nats-server/v2")
	}
	for _, ns := range []natsSetup{d.natsK, d.natsC} {
		if got := natsImage.FindStringSubmatch(ns.image); got[1] != want[1] || got[2] != want[2] {
			t.Errorf("%s: image %s; go.mod's nats-server, the one the tests run, is %s.%s: use that minor version", ns.where, ns.image, want[1], want[2])
		}
		o := ns.opts
		if !o.JetStream {
			t.Errorf("%s: JetStream is off: the task queue is a JetStream stream", ns.where)
		}
		if o.HTTPPort <= 0 {
			t.Errorf("%s: no http_port: KEDA and the health checks read the monitoring endpoint", ns.where)
		}
		if o.MaxPayload < queue.EmbeddedMaxPayload {
			t.Errorf("%s: max_payload %d; the embedded server takes %d (queue.EmbeddedMaxPayload): a join's task message that runs on one machine would be refused by the cluster",
				ns.where, o.MaxPayload, queue.EmbeddedMaxPayload)
		}
	}
	// The health checks ask the monitoring port.
	for _, c := range podContainers(d.natsK.sts) {
		ports := map[string]int{}
		for _, p := range dpList(c, "ports") {
			ports[dpStr(p, "name")] = dpInt(p["containerPort"])
		}
		for _, kind := range []string{"startupProbe", "readinessProbe", "livenessProbe"} {
			hg := dpMap(c, kind, "httpGet")
			if hg == nil {
				continue
			}
			port := dpInt(hg["port"])
			if name, ok := hg["port"].(string); ok {
				port = ports[name]
			}
			if port != d.natsK.opts.HTTPPort {
				t.Errorf("%s: %s asks port %v (%d); NATS serves /healthz on http_port %d", d.natsK.where, kind, hg["port"], port, d.natsK.opts.HTTPPort)
			}
		}
	}
	for _, doc := range d.compose {
		for name, svc := range dpMap(doc.m, "services") {
			if natsImage.MatchString(dpStr(svc, "image")) {
				test := strings.Join(dpStrings(svc, "healthcheck", "test"), " ")
				if want := fmt.Sprintf(":%d/", d.natsC.opts.HTTPPort); test != "" && !strings.Contains(test, want) {
					t.Errorf("%s (service %s): healthcheck %q does not ask the monitoring port (http_port %d)", doc.file, name, test, d.natsC.opts.HTTPPort)
				}
			}
		}
	}
	ns := d.natsK
	sts := dpStr(ns.sts.m, "metadata", "name")
	svc := dpStr(ns.sts.m, "spec", "serviceName")
	if ns.opts.ServerName != sts+"-0" {
		t.Errorf("%s: server_name of pod 0 is %q, want the pod's name %s-0: KEDA asks the node leading a consumer at <server_name>.<monitoring host>", ns.where, ns.opts.ServerName, sts)
	}
	if ns.nodes > 1 {
		if ns.opts.Cluster.Port <= 0 || !ns.service[svc][ns.opts.Cluster.Port] {
			t.Errorf("%s: cluster port %d is not a port of the StatefulSet's Service %s (%v)", ns.where, ns.opts.Cluster.Port, svc, ns.service[svc])
		}
		var routes []string
		for _, r := range ns.opts.Routes {
			routes = append(routes, r.Host)
		}
		sort.Strings(routes)
		var want []string
		for i := range ns.nodes {
			want = append(want, fmt.Sprintf("%s-%d.%s:%d", sts, i, svc, ns.opts.Cluster.Port))
		}
		if !slices.Equal(routes, want) {
			t.Errorf("%s: cluster routes %v, want one per pod: %v", ns.where, routes, want)
		}
	}
}

// --- Nectar's processes ----------------------------------------------------------------

func (d *deployFiles) checkProcesses(t *testing.T) {
	img := d.img
	queues := catalog.Generated().Queues()
	type setup struct {
		name string
		nats natsSetup
		cs   []nectarContainer
	}
	var k8s, compose setup
	k8s.name, k8s.nats = "kubernetes", d.natsK
	compose.name, compose.nats = "compose", d.natsC
	for _, c := range d.containers {
		if c.k8s {
			k8s.cs = append(k8s.cs, c)
		} else {
			compose.cs = append(compose.cs, c)
		}
	}
	for _, s := range []setup{k8s, compose} {
		var first *Config
		var firstWhere string
		for _, c := range s.cs {
			cfg, err := ConfigFromEnv(func(k string) string { return c.env[k] })
			if err != nil {
				t.Errorf("%s: the server refuses its environment:\n%v", c.where, err)
				continue
			}
			if cfg.Dispatch != "queue" {
				t.Errorf("%s: NECTAR_DISPATCH=%s: API servers without workers and `nectar worker` need the queue", c.where, cfg.Dispatch)
			}
			switch c.subcommand() {
			case "serve":
				workers := 1
				if i := slices.Index(c.command, "--workers"); i > 0 && i+1 < len(c.command) {
					workers = dpAtoi(c.command[i+1])
				}
				if workers != 0 {
					t.Errorf("%s: %v: the API servers here run no worker (--workers 0): workers are their own containers", c.where, c.command)
				}
				// Serve: NECTAR_SHUTDOWN_GRACE for the runs, then Drain waits up to 20 s for
				// their records and HTTP gets 5 s to close (server.go).
				if need := cfg.ShutdownGrace + 25*time.Second; c.grace < need {
					t.Errorf("%s: %s between SIGTERM and SIGKILL; the server needs NECTAR_SHUTDOWN_GRACE (%s) + 25 s = %s to end its runs and record them",
						c.where, c.grace, cfg.ShutdownGrace, need)
				}
				if !slices.Contains(c.names, "NECTAR_SIGNING_KEY") && !strings.HasPrefix(cfg.Target, "/") && !strings.HasPrefix(cfg.Target, ".") {
					t.Errorf("%s: no NECTAR_SIGNING_KEY with a remote store: each API server would sign with a random key, and refuse the others' URLs", c.where)
				}
			case "worker":
				// A worker finishes its tasks in hand, each within NECTAR_TASK_TIMEOUT, or hands
				// them back after NECTAR_WORKER_GRACE (then it needs a few seconds to report
				// them and exit: 10 s at least).
				if cfg.WorkerGrace < 0 && c.grace < cfg.TaskTimeout {
					t.Errorf("%s: %s between SIGTERM and SIGKILL, below NECTAR_TASK_TIMEOUT (%s): a stopping worker's tasks in hand would be killed and run again elsewhere after NECTAR_TASK_ACK_WAIT; set NECTAR_WORKER_GRACE below it to hand them back at once",
						c.where, c.grace, cfg.TaskTimeout)
				}
				if need := cfg.WorkerGrace + 10*time.Second; cfg.WorkerGrace >= 0 && c.grace < need {
					t.Errorf("%s: %s between SIGTERM and SIGKILL; a worker needs NECTAR_WORKER_GRACE (%s) + 10 s = %s to hand back its tasks and exit",
						c.where, c.grace, cfg.WorkerGrace, need)
				}
				for _, q := range cfg.Queues {
					if !slices.Contains(queues, q) {
						t.Errorf("%s: NECTAR_QUEUES names %q; the catalog's queues are %v", c.where, q, queues)
					}
				}
			default:
				t.Errorf("%s: command %v: want %s serve or %s worker", c.where, c.command, img.binary, img.binary)
			}
			// Where NATS is, for every process.
			u, err := url.Parse(strings.Split(cfg.NATSURL, ",")[0])
			if cfg.NATSURL == "" || err != nil {
				t.Errorf("%s: NECTAR_NATS_URL=%q: every process here joins the NATS of the files", c.where, cfg.NATSURL)
			} else {
				host, port, _ := net.SplitHostPort(u.Host)
				if ports, ok := s.nats.service[strings.Split(host, ".")[0]]; !ok || !ports[dpAtoi(port)] || dpAtoi(port) != s.nats.opts.Port {
					t.Errorf("%s: NECTAR_NATS_URL=%s; NATS (%s) listens for clients on port %d of %v", c.where, cfg.NATSURL, s.nats.where, s.nats.opts.Port, slices.Sorted(maps.Keys(s.nats.service)))
				}
			}
			if cfg.NATSReplicas > s.nats.nodes {
				t.Errorf("%s: NECTAR_NATS_REPLICAS=%d, but NATS (%s) has %d node(s)", c.where, cfg.NATSReplicas, s.nats.where, s.nats.nodes)
			}
			// What every process must agree on: each creates the stream and the consumers with
			// its own values, and they all share the store.
			if first == nil {
				first, firstWhere = &cfg, c.where
				continue
			}
			for _, f := range []struct {
				name      string
				got, want any
			}{
				{"NECTAR_NATS_URL", cfg.NATSURL, first.NATSURL},
				{"NECTAR_NATS_REPLICAS", cfg.NATSReplicas, first.NATSReplicas},
				{"NECTAR_TASK_ACK_WAIT", cfg.TaskAckWait, first.TaskAckWait},
				{"NECTAR_TASK_DELIVERIES", cfg.TaskDeliveries, first.TaskDeliveries},
				{"NECTAR_TARGET", cfg.Target, first.Target},
			} {
				if f.got != f.want {
					t.Errorf("%s: %s is %v, but %v in %s: every process must use the same (each sets up the stream, its consumers and the store with its own)",
						c.where, f.name, f.got, f.want, firstWhere)
				}
			}
		}
		if !slices.ContainsFunc(s.cs, func(c nectarContainer) bool { return c.subcommand() == "serve" }) ||
			!slices.ContainsFunc(s.cs, func(c nectarContainer) bool { return c.subcommand() == "worker" }) {
			t.Errorf("%s: want API servers and workers, found %d Nectar processes", s.name, len(s.cs))
		}
	}
}

// --- Probes ----------------------------------------------------------------------------

// checkProbes asks a real server the paths the files probe and scrape.
func (d *deployFiles) checkProbes(t *testing.T) {
	get := func(p string) int {
		resp, err := http.Get(d.srv.url + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range d.containers {
		if !c.k8s {
			continue
		}
		_, addrPort, _ := net.SplitHostPort(c.env["NECTAR_ADDR"])
		ports := map[string]int{}
		for _, p := range dpList(c.raw, "ports") {
			ports[dpStr(p, "name")] = dpInt(p["containerPort"])
		}
		for _, kind := range []string{"startupProbe", "readinessProbe", "livenessProbe"} {
			probe := dpMap(c.raw, kind)
			if probe == nil {
				continue
			}
			if c.subcommand() != "serve" {
				t.Errorf("%s: %s: `nectar %s` serves no HTTP: nothing would answer it", c.where, kind, c.subcommand())
				continue
			}
			hg := dpMap(probe, "httpGet")
			if hg == nil {
				t.Errorf("%s: %s is no httpGet: the server answers GET /healthz", c.where, kind)
				continue
			}
			port := dpInt(hg["port"])
			if name, ok := hg["port"].(string); ok {
				port = ports[name]
			}
			if strconv.Itoa(port) != addrPort {
				t.Errorf("%s: %s probes port %v (%d); the server listens on NECTAR_ADDR=%s", c.where, kind, hg["port"], port, c.env["NECTAR_ADDR"])
			}
			if code := get(dpStr(hg, "path")); code != http.StatusOK {
				t.Errorf("%s: %s probes %s; a server answers that %d", c.where, kind, dpStr(hg, "path"), code)
			}
		}
		if c.subcommand() != "serve" {
			continue
		}
		if dpMap(c.raw, "readinessProbe") == nil {
			t.Errorf("%s: no readinessProbe: its Service would send requests to a server still starting", c.where)
		}
		ann := dpMap(c.owner.m, "spec", "template", "metadata", "annotations")
		if p := dpStr(ann, "prometheus.io/path"); p != "" {
			if code := get(p); code != http.StatusOK {
				t.Errorf("%s: prometheus.io/path %s; a server answers that %d", c.owner.where(), p, code)
			}
			if port := dpStr(ann, "prometheus.io/port"); port != addrPort {
				t.Errorf("%s: prometheus.io/port %q; the server listens on NECTAR_ADDR=%s", c.owner.where(), port, c.env["NECTAR_ADDR"])
			}
			if cfg, err := ConfigFromEnv(func(k string) string { return c.env[k] }); err == nil && !cfg.MetricsPublic {
				t.Errorf("%s: scraped by annotation (no token), but NECTAR_METRICS_PUBLIC=false puts /metrics behind the API tokens", c.where)
			}
		}
	}
}

// --- KEDA ------------------------------------------------------------------------------

// kedaKeys are the nats-jetstream scaler's metadata (https://keda.sh/docs/2.19/scalers/nats-jetstream/,
// pkg/scalers/nats_jetstream_scaler.go): a misspelt key is silently ignored by KEDA.
var kedaKeys = map[string]bool{"natsServerMonitoringEndpoint": true, "account": true, "stream": true, "consumer": true,
	"lagThreshold": true, "activationLagThreshold": true, "useHttps": true}

func (d *deployFiles) checkKEDA(t *testing.T) {
	ns := d.natsK
	catalogQueues := catalog.Generated().Queues()
	containers := d.containers
	var workerWait time.Duration
	for _, c := range containers {
		if c.k8s && c.subcommand() == "serve" {
			if cfg, err := ConfigFromEnv(func(k string) string { return c.env[k] }); err == nil && (workerWait == 0 || cfg.WorkerWait < workerWait) {
				workerWait = cfg.WorkerWait
			}
		}
	}
	found := 0
	for _, doc := range d.k8s {
		if dpStr(doc.m, "kind") != "ScaledObject" {
			continue
		}
		found++
		if av := dpStr(doc.m, "apiVersion"); av != "keda.sh/v1alpha1" {
			t.Errorf("%s: apiVersion %s, want keda.sh/v1alpha1", doc.where(), av)
		}
		// The target: a Deployment of workers.
		target := dpStr(doc.m, "spec", "scaleTargetRef", "name")
		var served []string
		var worker *nectarContainer
		for i, c := range containers {
			if c.k8s && dpStr(c.owner.m, "kind") == "Deployment" && dpStr(c.owner.m, "metadata", "name") == target {
				worker = &containers[i]
			}
		}
		if worker == nil || worker.subcommand() != "worker" {
			t.Errorf("%s: scaleTargetRef %s is no Deployment running `nectar worker`", doc.where(), target)
			continue
		}
		if _, ok := dpGet(worker.owner.m, "spec", "replicas"); ok {
			t.Errorf("%s: sets replicas, which KEDA owns (%s): every kubectl apply would reset it", worker.owner.where(), doc.where())
		}
		if cfg, err := ConfigFromEnv(func(k string) string { return worker.env[k] }); err == nil {
			served = cfg.Queues
		}
		if len(served) == 0 {
			served = catalogQueues // a worker without NECTAR_QUEUES serves every queue
		}
		poll := 30 * time.Second // KEDA's default
		if p, ok := dpGet(doc.m, "spec", "pollingInterval"); ok {
			poll = time.Duration(dpInt(p)) * time.Second
		}
		if workerWait > 0 && poll >= workerWait {
			t.Errorf("%s: pollingInterval %s; a run waits NECTAR_WORKER_WAIT (%s) for its first worker before it fails: KEDA must look sooner", doc.where(), poll, workerWait)
		}
		minReplicas := 0
		if m, ok := dpGet(doc.m, "spec", "minReplicaCount"); ok {
			minReplicas = dpInt(m)
		}
		triggered := map[string]bool{}
		for i, tr := range dpList(doc.m, "spec", "triggers") {
			where := fmt.Sprintf("%s trigger %d", doc.where(), i)
			if dpStr(tr, "type") != "nats-jetstream" {
				t.Errorf("%s: type %q, want nats-jetstream", where, dpStr(tr, "type"))
				continue
			}
			md := dpMap(tr, "metadata")
			for k, v := range md {
				if !kedaKeys[k] {
					t.Errorf("%s: metadata %s is no key of KEDA's nats-jetstream scaler (%v)", where, k, slices.Sorted(maps.Keys(kedaKeys)))
				}
				if _, ok := v.(string); !ok {
					t.Errorf("%s: metadata %s: %v is a YAML %T; KEDA's metadata is strings only: quote it", where, k, v, v)
				}
			}
			for _, k := range []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer"} {
				if dpStr(md, k) == "" {
					t.Errorf("%s: no metadata %s", where, k)
				}
			}
			if got := dpStr(md, "stream"); got != queue.TasksStream {
				t.Errorf("%s: stream %q; the code's task stream is %q (queue.TasksStream)", where, got, queue.TasksStream)
			}
			consumer := dpStr(md, "consumer")
			name, ok := strings.CutPrefix(consumer, queue.ConsumerPrefix)
			switch {
			case !ok:
				t.Errorf("%s: consumer %q; the code names a queue's consumer %q + the queue's name (queue.ConsumerPrefix)", where, consumer, queue.ConsumerPrefix)
			case queue.CheckName(name) != nil:
				t.Errorf("%s: consumer %q: %v", where, consumer, queue.CheckName(name))
			case !slices.Contains(catalogQueues, name):
				t.Errorf("%s: consumer %q watches queue %q; the catalog's queues are %v", where, consumer, name, catalogQueues)
			case !slices.Contains(served, name):
				t.Errorf("%s: consumer %q watches queue %q, which %s does not serve (NECTAR_QUEUES: %v): scaling it up would not help", where, consumer, name, target, served)
			default:
				triggered[name] = true
			}
			for _, k := range []string{"lagThreshold", "activationLagThreshold"} {
				if v := dpStr(md, k); v != "" {
					if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 0 || (k == "lagThreshold" && n == 0) {
						t.Errorf("%s: %s %q: want a whole number (above 0 for lagThreshold)", where, k, v)
					}
				}
			}
			https := false
			if v := dpStr(md, "useHttps"); v != "" {
				https, _ = strconv.ParseBool(v)
			}
			if got := dpStr(md, "account"); len(ns.opts.Accounts) == 0 && got != "$G" {
				t.Errorf("%s: account %q; nats.conf defines no account, so the streams are in the global one, $G", where, got)
			}
			// The monitoring endpoint: the StatefulSet's headless Service, the port NATS serves
			// its monitoring on.
			endpoint := dpStr(md, "natsServerMonitoringEndpoint")
			host, portStr, err := net.SplitHostPort(endpoint)
			port := dpAtoi(portStr)
			servedPort := ns.opts.HTTPPort
			if https {
				servedPort = ns.opts.HTTPSPort
			}
			svc := strings.Split(host, ".")[0]
			switch {
			case err != nil:
				t.Errorf("%s: natsServerMonitoringEndpoint %q: want host:port: %v", where, endpoint, err)
			case port != servedPort:
				t.Errorf("%s: natsServerMonitoringEndpoint %s: port %d; NATS (%s) serves monitoring on %d (http_port in its nats.conf)", where, endpoint, port, ns.where, servedPort)
			case !ns.service[svc][port]:
				t.Errorf("%s: natsServerMonitoringEndpoint %s: no Service %s with port %d selects the NATS pods (Services: %v)", where, endpoint, svc, port, ns.service)
			case svc != dpStr(ns.sts.m, "spec", "serviceName"):
				t.Errorf("%s: natsServerMonitoringEndpoint %s: Service %s; in a cluster KEDA asks <server_name>.%s, which resolves only through the StatefulSet's headless Service %s",
					where, endpoint, svc, host, dpStr(ns.sts.m, "spec", "serviceName"))
			}
			if labels := strings.Split(host, "."); len(labels) > 1 && labels[1] != dpStr(ns.sts.m, "metadata", "namespace") {
				t.Errorf("%s: natsServerMonitoringEndpoint %s: namespace %s; NATS runs in %s (KEDA runs in a namespace of its own: the name must be complete)", where, endpoint, labels[1], dpStr(ns.sts.m, "metadata", "namespace"))
			} else if len(labels) == 1 {
				t.Errorf("%s: natsServerMonitoringEndpoint %s: KEDA runs in its own namespace: name NATS's namespace too (%s.<namespace>.svc.cluster.local)", where, endpoint, host)
			}
		}
		if minReplicas == 0 {
			for _, q := range served {
				if !triggered[q] {
					t.Errorf("%s: %s serves queue %s and scales to zero, but no trigger watches consumer %s%s: its tasks would wait for a worker that never starts",
						doc.where(), target, q, queue.ConsumerPrefix, q)
				}
			}
		}
	}
	if found == 0 {
		t.Error("tools/deploy/kubernetes: no KEDA ScaledObject")
	}
}

// --- Metrics ---------------------------------------------------------------------------

var (
	metricMention = regexp.MustCompile(`(?:^|[^A-Za-z0-9_:])(nectar_[a-z0-9_]*[a-z0-9])(\{[^}]*\})?`)
	selectorLabel = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)`)
	descName      = regexp.MustCompile(`^Desc\{fqName: "([^"]*)"`)
	descLabels    = regexp.MustCompile(`variableLabels: \{([^}]*)\}\}$`)
)

// exposedMetrics describes every collector a real server in queue mode registers for
// GET /metrics: names and their variable labels (a Gather would miss vectors without series).
func exposedMetrics(t *testing.T, ts *testServer) map[string][]string {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() {
		ts.metrics.registry.Describe(ch)
		close(ch)
	}()
	out := map[string][]string{}
	for desc := range ch {
		s := desc.String()
		m := descName.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("a metric descriptor of an unknown form: %s", s)
		}
		var labels []string
		if l := descLabels.FindStringSubmatch(s); l != nil && l[1] != "" {
			for _, name := range strings.Split(l[1], ",") {
				name = strings.TrimSuffix(strings.TrimPrefix(name, "c("), ")")
				labels = append(labels, name)
			}
		}
		out[m[1]] = labels
	}
	if _, ok := out["nectar_runs_total"]; !ok {
		t.Fatalf("the server's registry does not describe nectar_runs_total: %v", slices.Sorted(maps.Keys(out)))
	}
	return out
}

// scrapeLabels are the labels Prometheus adds when it scrapes (and kube-state/operator
// relabelling): not the code's.
var scrapeLabels = map[string]bool{"job": true, "instance": true, "namespace": true, "pod": true, "container": true, "service": true, "endpoint": true}

func (d *deployFiles) checkMetrics(t *testing.T) {
	exposed := exposedMetrics(t, d.srv)
	var nectarNames []string
	for n := range exposed {
		if strings.HasPrefix(n, "nectar_") {
			nectarNames = append(nectarNames, n)
		}
	}
	sort.Strings(nectarNames)
	mentioned := map[string]bool{}
	for _, file := range slices.Sorted(maps.Keys(d.text)) {
		for _, m := range metricMention.FindAllStringSubmatch(d.text[file], -1) {
			name, selector := m[1], m[2]
			base, labels, ok := name, exposed[name], false
			if _, ok = exposed[name]; !ok {
				// A histogram's series: <name>_bucket (with le), _sum, _count.
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, cut := strings.CutSuffix(name, suffix); cut {
						if l, has := exposed[b]; has {
							base, labels, ok = b, l, true
							if suffix == "_bucket" {
								labels = append(slices.Clone(l), "le")
							}
						}
					}
				}
			}
			mentioned[base] = true
			if !ok {
				t.Errorf("%s: metric %s is not one the server exposes; it has %v", file, name, nectarNames)
				continue
			}
			for _, l := range selectorLabel.FindAllStringSubmatch(selector, -1) {
				if !slices.Contains(labels, l[1]) && !scrapeLabels[l[1]] {
					t.Errorf("%s: %s%s: label %s; the metric's labels are %v", file, name, selector, l[1], labels)
				}
			}
		}
	}
	// The queue's figures are what the alerts are for: they must be used (and exist).
	for _, name := range []string{metricPending, metricInFlight, metricWorkers} {
		if !mentioned[name] {
			t.Errorf("tools/deploy: no file uses %s (the queue's figures, server/metrics_queue.go)", name)
		}
	}
}

// --- Plain data access -----------------------------------------------------------------

func dpGet(v any, keys ...string) (any, bool) {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func dpStr(v any, keys ...string) string {
	got, _ := dpGet(v, keys...)
	s, _ := got.(string)
	return s
}

func dpMap(v any, keys ...string) map[string]any {
	got, _ := dpGet(v, keys...)
	m, _ := got.(map[string]any)
	return m
}

func dpList(v any, keys ...string) []map[string]any {
	got, _ := dpGet(v, keys...)
	l, _ := got.([]any)
	var out []map[string]any
	for _, e := range l {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func dpStrings(v any, keys ...string) []string {
	got, _ := dpGet(v, keys...)
	l, _ := got.([]any)
	var out []string
	for _, e := range l {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

func dpInt(v any) int {
	switch n := v.(type) {
	case int:
		return n
	case int64:
		return int(n)
	case float64:
		return int(n)
	case string:
		return dpAtoi(n)
	}
	return 0
}

func dpAtoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// podContainers are the containers of a workload's pod template.
func podContainers(doc deployDoc) []map[string]any {
	switch dpStr(doc.m, "kind") {
	case "Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet":
		return append(dpList(doc.m, "spec", "template", "spec", "initContainers"), dpList(doc.m, "spec", "template", "spec", "containers")...)
	case "CronJob":
		return dpList(doc.m, "spec", "jobTemplate", "spec", "template", "spec", "containers")
	}
	return nil
}

// composeEnv is a compose service's environment, as a map or a list of NAME=value.
func composeEnv(svc any) map[string]string {
	out := map[string]string{}
	got, _ := dpGet(svc, "environment")
	switch env := got.(type) {
	case map[string]any:
		for k, v := range env {
			if v == nil {
				out[k] = ""
			} else {
				out[k] = fmt.Sprint(v)
			}
		}
	case []any:
		for _, e := range env {
			k, v, _ := strings.Cut(fmt.Sprint(e), "=")
			out[k] = v
		}
	}
	return out
}
