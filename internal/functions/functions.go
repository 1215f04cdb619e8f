// Package functions is the Azure Functions host's side of credvault, as far
// as Go code needs it: the app's host.json and function.json files read into
// types, each HTTP function's route as the host serves it, and the JSON a
// custom handler exchanges with the host for functions it does not forward
// as plain HTTP (the timer).
//
// What the host does is taken from the custom handler documentation
// (https://learn.microsoft.com/azure/azure-functions/functions-custom-handlers)
// and from the host's source (github.com/Azure/azure-functions-host, cited by
// file below).
package functions

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DefaultRoutePrefix is the prefix of every HTTP function's path when
// host.json sets no extensions.http.routePrefix.
const DefaultRoutePrefix = "api"

// Host is what credvault reads from host.json.
type Host struct {
	Version string
	// ExecutablePath is customHandler.description.defaultExecutablePath: the
	// handler binary, relative to WorkingDirectory.
	ExecutablePath string
	// WorkingDirectory is customHandler.description.workingDirectory; empty
	// means the app root.
	WorkingDirectory string
	// Arguments are passed to the handler; the host expands %NAME% in them.
	Arguments []string
	// ForwardHTTP is customHandler.enableForwardingHttpRequest: the host then
	// forwards each HTTP function's request unchanged (see Function.Forwarded).
	ForwardHTTP bool
	// RoutePrefix is extensions.http.routePrefix: DefaultRoutePrefix when
	// absent, no prefix when set to "".
	RoutePrefix string
	// FunctionTimeout is functionTimeout as written ("hh:mm:ss", "-1" or "").
	FunctionTimeout string
}

// hostFile mirrors the parts of host.json that Host exposes.
type hostFile struct {
	Version       string `json:"version"`
	CustomHandler struct {
		Description struct {
			DefaultExecutablePath string   `json:"defaultExecutablePath"`
			WorkingDirectory      string   `json:"workingDirectory"`
			Arguments             []string `json:"arguments"`
		} `json:"description"`
		EnableForwardingHTTPRequest bool `json:"enableForwardingHttpRequest"`
	} `json:"customHandler"`
	Extensions struct {
		HTTP struct {
			RoutePrefix *string `json:"routePrefix"`
		} `json:"http"`
	} `json:"extensions"`
	FunctionTimeout string `json:"functionTimeout"`
}

// LoadHost reads a host.json file.
func LoadHost(path string) (Host, error) {
	var f hostFile
	if err := readJSON(path, &f); err != nil {
		return Host{}, err
	}
	h := Host{
		Version:          f.Version,
		ExecutablePath:   f.CustomHandler.Description.DefaultExecutablePath,
		WorkingDirectory: f.CustomHandler.Description.WorkingDirectory,
		Arguments:        f.CustomHandler.Description.Arguments,
		ForwardHTTP:      f.CustomHandler.EnableForwardingHTTPRequest,
		RoutePrefix:      DefaultRoutePrefix,
		FunctionTimeout:  f.FunctionTimeout,
	}
	if p := f.Extensions.HTTP.RoutePrefix; p != nil {
		h.RoutePrefix = *p
	}
	return h, nil
}

// Timeout is host.json's functionTimeout: how long the host lets one
// invocation run before it stops the function. It is a TimeSpan,
// [d.]hh:mm:ss; "-1" (no limit, Premium and Dedicated plans) and an absent
// value (the plan's default) give ok false.
func (h Host) Timeout() (d time.Duration, ok bool, err error) {
	s := strings.TrimSpace(h.FunctionTimeout)
	if s == "" || s == "-1" {
		return 0, false, nil
	}
	m := timeSpan.FindStringSubmatch(s)
	if m == nil {
		return 0, false, fmt.Errorf("host.json functionTimeout %q: want [d.]hh:mm:ss or -1", s)
	}
	var n [4]int // days, hours, minutes, seconds
	for i, f := range m[1:] {
		n[i], _ = strconv.Atoi(f) // digits only; empty: no days
	}
	if n[1] > 23 || n[2] > 59 || n[3] > 59 {
		return 0, false, fmt.Errorf("host.json functionTimeout %q: hours, minutes or seconds out of range", s)
	}
	d = time.Duration(n[0])*24*time.Hour + time.Duration(n[1])*time.Hour +
		time.Duration(n[2])*time.Minute + time.Duration(n[3])*time.Second
	if d <= 0 {
		return 0, false, fmt.Errorf("host.json functionTimeout %q: not a positive duration", s)
	}
	return d, true, nil
}

var timeSpan = regexp.MustCompile(`^(?:(\d{1,3})\.)?(\d{1,2}):(\d{2}):(\d{2})$`)

// Function is one function folder: its name is the folder's name.
type Function struct {
	Name     string
	Disabled bool
	Bindings []Binding
	// RoutePrefix is the app's HTTP route prefix, from host.json (see Load).
	RoutePrefix string
}

// Binding is one entry of a function.json "bindings" array. The host matches
// property names without regard to case, as encoding/json does.
type Binding struct {
	Type      string `json:"type"`
	Direction string `json:"direction"` // "in", "out" or "inout"
	Name      string `json:"name"`

	// httpTrigger
	Route     string   `json:"route,omitempty"`     // without the route prefix; empty: the function's name
	Methods   []string `json:"methods,omitempty"`   // empty: every method
	AuthLevel string   `json:"authLevel,omitempty"` // "anonymous", "function" or "admin"

	// timerTrigger
	Schedule     string `json:"schedule,omitempty"` // six-field NCRONTAB or a TimeSpan
	RunOnStartup bool   `json:"runOnStartup,omitempty"`
}

type functionFile struct {
	Disabled bool      `json:"disabled"`
	Bindings []Binding `json:"bindings"`
}

// The host's rules for function names and binding directions
// (src/WebJobs.Script/Utility.cs, IsValidFunctionName; BindingMetadata.Create).
var functionNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,127}$`)

// Load reads every function of an app: the folders under root/functions in
// the repository, or, when root has no functions folder, the folders directly
// under root, as in the deployed app that the host reads. A folder without a
// function.json is not a function, as for the host. The route prefix comes
// from root/host.json, DefaultRoutePrefix when that file is absent.
//
// Where the host would log a function error and skip the function (a bad
// name, no bindings, an unknown direction), Load fails.
func Load(root string) ([]Function, error) {
	prefix := DefaultRoutePrefix
	switch h, err := LoadHost(filepath.Join(root, "host.json")); {
	case err == nil:
		prefix = h.RoutePrefix
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}

	dir := filepath.Join(root, "functions")
	if !isDir(dir) || exists(filepath.Join(dir, "function.json")) {
		dir = root // the deployed layout (a function called "functions" included)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read function folders: %w", err)
	}

	var out []Function
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name(), "function.json")
		var f functionFile
		if err := readJSON(path, &f); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, err
		}
		if !functionNameRE.MatchString(e.Name()) || strings.EqualFold(e.Name(), "host") {
			return nil, fmt.Errorf("%s: %q is not a valid function name", path, e.Name())
		}
		if len(f.Bindings) == 0 {
			return nil, fmt.Errorf("%s: at least one binding must be declared", path)
		}
		for i, b := range f.Bindings {
			switch strings.ToLower(b.Direction) {
			case "in", "out", "inout":
			default:
				return nil, fmt.Errorf("%s: binding %d (%q): %q is not a valid binding direction", path, i, b.Name, b.Direction)
			}
		}
		out = append(out, Function{Name: e.Name(), Disabled: f.Disabled, Bindings: f.Bindings, RoutePrefix: prefix})
	}
	return out, nil
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// inputs and outputs split the bindings as the host does: "inout" counts as
// both (src/WebJobs.Script.Abstractions/Description/FunctionMetadata.cs).
func (f Function) inputs() []Binding  { return f.filter("out") }
func (f Function) outputs() []Binding { return f.filter("in") }

func (f Function) filter(notDirection string) []Binding {
	var bs []Binding
	for _, b := range f.Bindings {
		if !strings.EqualFold(b.Direction, notDirection) {
			bs = append(bs, b)
		}
	}
	return bs
}

// Trigger returns the function's trigger: its first input binding whose type
// ends in "Trigger".
func (f Function) Trigger() (Binding, bool) {
	for _, b := range f.inputs() {
		if strings.HasSuffix(strings.ToLower(b.Type), "trigger") {
			return b, true
		}
	}
	return Binding{}, false
}

// Forwarded reports whether the host, with enableForwardingHttpRequest on,
// forwards this function's requests to the handler as plain HTTP at their
// original path: only when it has exactly one input, an httpTrigger, and one
// output, an http binding (IsHttpInAndOutFunction in
// src/WebJobs.Script/Extensions/FunctionMetadataExtensions.cs). Any other
// function is invoked with an InvokeRequest on POST /<function name>.
func (f Function) Forwarded() bool {
	in, out := f.inputs(), f.outputs()
	return len(in) == 1 && len(out) == 1 &&
		strings.EqualFold(in[0].Type, "httpTrigger") && strings.EqualFold(out[0].Type, "http")
}

// HTTPRoute returns the methods (upper case; nil means every method) and the
// path ("/" + route prefix + "/" + route) at which the host serves the
// function, or ok false when it has no httpTrigger. As in the host, an empty
// route is the function's name and slashes around the route are ignored.
// The route keeps its template parameters ("{name}") as written, except a
// parameter pinned to one literal by a regex constraint, which is shown as
// that literal: credvault writes its "admin/…" routes as
// "{area:regex(^admin$)}/…" because the host refuses a route that starts
// with "admin" (ScriptHost.ValidateHttpFunction) while it routes this one to
// the same path.
func (f Function) HTTPRoute() (methods []string, path string, ok bool) {
	t, ok := f.Trigger()
	if !ok || !strings.EqualFold(t.Type, "httpTrigger") {
		return nil, "", false
	}
	for _, m := range t.Methods {
		methods = append(methods, strings.ToUpper(m))
	}
	route := pinnedLiteral.ReplaceAllString(strings.Trim(t.Route, "/"), "$1")
	if route == "" {
		route = f.Name
	}
	path = "/" + route
	if p := strings.Trim(f.RoutePrefix, "/"); p != "" {
		path = "/" + p + path
	}
	return methods, path, true
}

// pinnedLiteral matches a route parameter constrained to one literal segment.
var pinnedLiteral = regexp.MustCompile(`\{[A-Za-z0-9_]+:regex\(\^([A-Za-z0-9_-]+)\$\)\}`)

// InvokeRequest is the body of the POST /<function name> with which the host
// invokes a function that it does not forward as plain HTTP, such as a timer
// (HttpScriptInvocationContext in src/WebJobs.Script/Workers/Http, filled by
// ScriptInvocationContextExtensions.ToHttpScriptInvocationContext). Data
// holds each input binding's value by binding name (the timer's is a JSON
// object with ScheduleStatus and IsPastDue); Metadata holds the trigger's
// other binding data, such as "sys" (MethodName, UtcNow, RandGuid).
type InvokeRequest struct {
	Data     map[string]json.RawMessage `json:"Data"`
	Metadata map[string]json.RawMessage `json:"Metadata"`
}

// InvokeResponse is the handler's answer to an InvokeRequest
// (HttpScriptInvocationResult in src/WebJobs.Script/Workers/Http). Outputs
// holds values for output bindings by name; the host writes each of Logs to
// the function's log at Information level; ReturnValue goes to a "$return"
// binding. The host reads the body only after a 2xx status: any other status
// fails the invocation (DefaultHttpWorkerService.ProcessDefaultInvocationRequest).
type InvokeResponse struct {
	Outputs     map[string]any `json:"Outputs,omitempty"`
	Logs        []string       `json:"Logs,omitempty"`
	ReturnValue any            `json:"ReturnValue,omitempty"`
}

// readJSON decodes a JSON file, naming the file and, for a syntax error,
// the line and column in the error.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			line, col := position(b, se.Offset)
			return fmt.Errorf("%s:%d:%d: invalid JSON: %w", path, line, col, err)
		case errors.As(err, &te):
			line, col := position(b, te.Offset)
			return fmt.Errorf("%s:%d:%d: %w", path, line, col, err)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// position gives the 1-based line and column of the byte before offset:
// the one that the decoder stopped at.
func position(b []byte, offset int64) (line, col int) {
	offset = min(max(offset-1, 0), int64(len(b)))
	before := b[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - bytes.LastIndexByte(before, '\n')
	return line, col
}
