// Package emulators starts the Azure emulators that the integration tests
// run against: Azurite for Blob Storage and cosmosdb-server for Cosmos DB,
// installed by `make tools` into .tools/npm (pinned by package-lock.json
// here), each on a free loopback port, once per test process, stopped by
// Main. It is test support: production code never imports it.
package emulators

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Required, when set to 1 in the environment (make test sets it), turns a
// missing emulator into a test failure instead of a skip.
const Required = "CREDVAULT_EMULATORS_REQUIRED"

// AzuriteKey is the well-known development account key of Azurite.
const AzuriteKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

var (
	mu      sync.Mutex
	running = map[string]*process{}
)

type process struct {
	cmd  *exec.Cmd
	addr string
	err  error
	log  string
}

// Main runs the package's tests and stops every emulator they started.
// Call it from TestMain: func TestMain(m *testing.M) { emulators.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	StopAll()
	os.Exit(code)
}

// StopAll stops every emulator started by this process.
func StopAll() {
	mu.Lock()
	defer mu.Unlock()
	for name, p := range running {
		if p.cmd != nil && p.cmd.Process != nil {
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
			done := make(chan struct{})
			go func() { p.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			}
		}
		delete(running, name)
	}
}

// Blob returns the connection string of an Azurite blob service.
func Blob(t testing.TB) string {
	t.Helper()
	bin := tool(t, "azurite-blob")
	addr := start(t, "azurite-blob", func(port int) []string {
		return []string{bin, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
			"--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry", "--loose", "--silent"}
	})
	return "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + AzuriteKey +
		";BlobEndpoint=http://" + addr + "/devstoreaccount1;"
}

// Cosmos returns the endpoint of a cosmosdb-server started through the
// project's launcher (cosmos-launcher.js beside this file), which patches
// the emulator's known gaps, over plain HTTP on loopback. Any key is
// accepted by the emulator.
func Cosmos(t testing.TB) (endpoint string) {
	t.Helper()
	modules := filepath.Dir(filepath.Dir(tool(t, "cosmosdb-server")))
	launcher := filepath.Join(repoRoot(t), "internal", "emulators", "cosmos-launcher.js")
	addr := start(t, "cosmosdb-server", func(port int) []string {
		return []string{"node", launcher, "--modules", modules, "--host", "127.0.0.1", "--port", strconv.Itoa(port)}
	})
	return "http://" + addr + "/"
}

// CosmosKey is a well-formed key for the emulator, which checks none.
const CosmosKey = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="

// start runs an emulator once per process and returns its address.
func start(t testing.TB, name string, argv func(port int) []string) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if p, ok := running[name]; ok {
		if p.err != nil {
			t.Fatalf("%s did not start: %v\n%s", name, p.err, p.log)
		}
		return p.addr
	}
	p := &process{}
	running[name] = p
	port, err := freePort()
	if err != nil {
		p.err = err
		t.Fatal(err)
	}
	args := argv(port)
	logf, _ := os.CreateTemp("", "credvault-"+name+"-*.log")
	p.log = logf.Name()
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		p.err = err
		t.Fatalf("start %s: %v", name, err)
	}
	p.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return p.addr
		}
		if p.cmd.ProcessState != nil || time.Now().After(deadline) {
			b, _ := os.ReadFile(p.log)
			p.err = fmt.Errorf("not listening on %s after 60 s", p.addr)
			t.Fatalf("%s: %v\n%s", name, p.err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tool returns the path of an installed emulator binary, or skips (fails
// when Required is set) when `make tools` has not installed it.
func tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), ".tools", "npm", "node_modules", ".bin", name)
	if _, err := os.Stat(p); err != nil {
		msg := fmt.Sprintf("%s is not installed (run `make tools`): %v", name, err)
		if os.Getenv(Required) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal(errors.New("no go.mod above the test's directory"))
		}
		dir = parent
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
