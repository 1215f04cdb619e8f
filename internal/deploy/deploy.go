// Package deploy builds the deployable Functions app: the app folder
// (host.json, one folder per function with its function.json, the linux/amd64
// handler) and its zip, in Go so that no zip tool is needed. The handler's
// zip entry carries its execute bit in the Unix mode of the entry's external
// attributes, as the Flex Consumption host needs to start it.
package deploy

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"time"
)

const (
	// AppDir is the app folder inside the output folder.
	AppDir = "app"
	// ZipName is the deployment zip inside the output folder; azure.yaml's
	// dist names it.
	ZipName = "credvault.zip"
	// Handler is the binary's name, host.json's defaultExecutablePath.
	Handler = "handler"
)

// modTime is every zip entry's time, so that the same tree gives the same
// zip. Zip times cannot go below 1980.
var modTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// Options locate the sources and the output.
type Options struct {
	Root string // the repository: host.json, functions/, handler/
	Out  string // gets Out/app and Out/credvault.zip, both replaced
	Go   string // the go command; "go" when empty
}

// Entry is one file of the app: its slash-separated name in the app folder
// and the file it is copied from (empty for the built handler).
type Entry struct {
	Name string
	Src  string
}

// Files lists what the app holds besides the handler: host.json and each
// functions/<name>/function.json, as <name>/function.json. A folder of
// functions/ without a function.json is no function and is left out.
func Files(root string) ([]Entry, error) {
	files := []Entry{{Name: "host.json", Src: filepath.Join(root, "host.json")}}
	dirs, err := os.ReadDir(filepath.Join(root, "functions"))
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		src := filepath.Join(root, "functions", d.Name(), "function.json")
		if _, err := os.Stat(src); d.IsDir() && err == nil {
			files = append(files, Entry{Name: path.Join(d.Name(), "function.json"), Src: src})
		}
	}
	return files, nil
}

// Build assembles Out/app and writes Out/credvault.zip; it returns the zip's
// path.
func Build(ctx context.Context, o Options) (string, error) {
	if o.Go == "" {
		o.Go = "go"
	}
	app := filepath.Join(o.Out, AppDir)
	zipPath := filepath.Join(o.Out, ZipName)
	for _, p := range []string{app, zipPath} {
		if err := os.RemoveAll(p); err != nil {
			return "", err
		}
	}
	files, err := Files(o.Root)
	if err != nil {
		return "", err
	}
	for _, f := range files {
		if err := copyFile(filepath.Join(app, filepath.FromSlash(f.Name)), f.Src); err != nil {
			return "", err
		}
	}
	if err := buildHandler(ctx, o, filepath.Join(app, Handler)); err != nil {
		return "", err
	}
	if err := writeZip(zipPath, app); err != nil {
		return "", err
	}
	return zipPath, nil
}

// buildHandler compiles ./handler for linux/amd64, statically (no cgo).
func buildHandler(ctx context.Context, o Options, out string) error {
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, o.Go, "build", "-trimpath", "-ldflags=-s -w", "-o", abs, "./handler")
	cmd.Dir = o.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build the handler: %w: %s", err, stderr.Bytes())
	}
	return os.Chmod(abs, 0o755)
}

func copyFile(dst, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// writeZip zips the app folder: a folder entry per function folder, every
// file with mode 0644 but the handler with 0755, names sorted, fixed times.
func writeZip(zipPath, app string) (err error) {
	var names []string
	err = filepath.WalkDir(app, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == app {
			return err
		}
		rel, err := filepath.Rel(app, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if d.IsDir() {
			name += "/"
		} else if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		names = append(names, name)
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(names)
	f, err := os.Create(zipPath)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	zw := zip.NewWriter(f)
	for _, name := range names {
		if err := addEntry(zw, app, name); err != nil {
			return err
		}
	}
	return zw.Close()
}

func addEntry(zw *zip.Writer, app, name string) error {
	h := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: modTime}
	switch {
	case name[len(name)-1] == '/':
		h.Method = zip.Store
		h.SetMode(fs.ModeDir | 0o755)
	case name == Handler:
		h.SetMode(0o755)
	default:
		h.SetMode(0o644)
	}
	w, err := zw.CreateHeader(h)
	if err != nil || h.Mode().IsDir() {
		return err
	}
	src, err := os.Open(filepath.Join(app, filepath.FromSlash(name)))
	if err != nil {
		return err
	}
	defer src.Close()
	_, err = io.Copy(w, src)
	return err
}

// ErrNoRoot is returned by FindRoot when no go.mod is above the folder.
var ErrNoRoot = errors.New("no go.mod in this folder or above it")

// FindRoot walks up from dir to the folder holding go.mod.
func FindRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNoRoot
		}
		dir = parent
	}
}
