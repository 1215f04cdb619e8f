package deploy

import (
	"archive/zip"
	"bytes"
	"context"
	"debug/elf"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// built is the package built once for every test of this file.
type built struct {
	root, out, zip string
}

var (
	pkg      *built
	buildErr error
	tried    bool
)

// TestMain removes the package built for the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if pkg != nil {
		os.RemoveAll(pkg.out)
	}
	os.Exit(code)
}

// buildOnce runs the packaging into a temporary folder the first time a test
// asks for it; later tests get the same result, or the same error.
func buildOnce(t *testing.T) *built {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the handler for linux/amd64; skipped with -short")
	}
	if !tried {
		tried = true
		pkg, buildErr = build()
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return pkg
}

func build() (*built, error) {
	root, err := FindRoot(".")
	if err != nil {
		return nil, err
	}
	out, err := os.MkdirTemp("", "credvault-package-")
	if err != nil {
		return nil, err
	}
	b := &built{root: root, out: out}
	b.zip, err = Build(context.Background(), Options{Root: root, Out: out})
	if err != nil {
		os.RemoveAll(out)
		return nil, err
	}
	return b, nil
}

// wantEntries is exactly what the zip must hold: host.json, the handler, and
// for each function folder of the repository the folder and its
// function.json.
func wantEntries(t *testing.T, root string) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(root, "functions", "*", "function.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 10 {
		t.Fatalf("found %d functions in %s/functions; expected the whole API", len(dirs), root)
	}
	want := []string{"host.json", Handler}
	for _, p := range dirs {
		fn := filepath.Base(filepath.Dir(p))
		want = append(want, fn+"/", fn+"/function.json")
	}
	slices.Sort(want)
	return want
}

func openZip(t *testing.T, p string) *zip.ReadCloser {
	t.Helper()
	zr, err := zip.OpenReader(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zr.Close() })
	return zr
}

func TestZipHoldsExactlyTheApp(t *testing.T) {
	b := buildOnce(t)
	zr := openZip(t, b.zip)
	var got []string
	for _, f := range zr.File {
		got = append(got, f.Name)
	}
	slices.Sort(got)
	if want := wantEntries(t, b.root); !slices.Equal(got, want) {
		t.Fatalf("zip entries = %q\nwant %q", got, want)
	}
}

func TestZipEntriesMatchTheRepository(t *testing.T) {
	b := buildOnce(t)
	for _, f := range openZip(t, b.zip).File {
		if f.Name == Handler || strings.HasSuffix(f.Name, "/") {
			continue
		}
		src := filepath.Join(b.root, "functions", filepath.FromSlash(f.Name))
		if f.Name == "host.json" {
			src = filepath.Join(b.root, "host.json")
		}
		want, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if got := readEntry(t, f); !bytes.Equal(got, want) {
			t.Errorf("%s in the zip differs from %s", f.Name, src)
		}
	}
}

func TestZipModes(t *testing.T) {
	b := buildOnce(t)
	for _, f := range openZip(t, b.zip).File {
		// The Unix mode is in the high 16 bits of the external attributes
		// when the creator is Unix (3): what unzip and the Functions host read.
		if creator := f.CreatorVersion >> 8; creator != 3 {
			t.Errorf("%s: creator system = %d, want 3 (Unix), or its mode is lost", f.Name, creator)
		}
		mode := os.FileMode(f.ExternalAttrs >> 16).Perm()
		want := os.FileMode(0o644)
		switch {
		case f.Name == Handler:
			want = 0o755
		case strings.HasSuffix(f.Name, "/"):
			want = 0o755
		}
		if mode != want {
			t.Errorf("%s: Unix mode = %v, want %v", f.Name, mode, want)
		}
	}
}

func TestHandlerIsStaticLinuxAMD64(t *testing.T) {
	b := buildOnce(t)
	var handler *zip.File
	for _, f := range openZip(t, b.zip).File {
		if f.Name == Handler {
			handler = f
		}
	}
	if handler == nil {
		t.Fatal("no handler in the zip")
	}
	bin, err := elf.NewFile(bytes.NewReader(readEntry(t, handler)))
	if err != nil {
		t.Fatalf("the handler is not an ELF binary: %v", err)
	}
	if bin.Class != elf.ELFCLASS64 || bin.Machine != elf.EM_X86_64 {
		t.Errorf("handler is %v %v, want ELFCLASS64 EM_X86_64", bin.Class, bin.Machine)
	}
	for _, p := range bin.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("handler names a dynamic loader; want a static binary (CGO_ENABLED=0)")
		}
	}
}

func TestAppFolderMatchesZip(t *testing.T) {
	b := buildOnce(t)
	app := filepath.Join(b.out, AppDir)
	var got []string
	err := filepath.WalkDir(app, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == app {
			return err
		}
		rel, _ := filepath.Rel(app, p)
		name := filepath.ToSlash(rel)
		if d.IsDir() {
			name += "/"
		}
		got = append(got, name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := wantEntries(t, b.root); !slices.Equal(got, want) {
		t.Fatalf("app folder = %q\nwant %q", got, want)
	}
	info, err := os.Stat(filepath.Join(app, Handler))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm()&0o111 == 0 {
		t.Errorf("app/handler mode = %v, want executable", info.Mode())
	}
}

func TestFilesSkipsFoldersWithoutFunctionJSON(t *testing.T) {
	root := t.TempDir()
	write := func(rel, body string) {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("host.json", "{}")
	write("functions/health/function.json", "{}")
	write("functions/health/notes.txt", "not deployed")
	write("functions/scratch/readme.md", "not a function")
	write("functions/stray.json", "{}")
	files, err := Files(root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, f.Name)
	}
	if want := []string{"host.json", "health/function.json"}; !slices.Equal(got, want) {
		t.Fatalf("Files = %q, want %q", got, want)
	}
}

func readEntry(t *testing.T, f *zip.File) []byte {
	t.Helper()
	r, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
