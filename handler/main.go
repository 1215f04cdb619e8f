// Command handler is credvault's Azure Functions custom handler: one binary
// that the Functions host starts and forwards HTTP requests to, and that runs
// standalone on its embedded backends.
//
//	handler                                   serve (the default)
//	handler token --user NAME --roles R1,R2   print a signed dev token
//	handler rotate-cmk                        add a version to the local CMK
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/credvault/credvault/internal/cmk"
	"github.com/credvault/credvault/internal/config"
	"github.com/credvault/credvault/internal/identity"
	"github.com/credvault/credvault/internal/telemetry"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "credvault:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	switch cmd {
	case "serve":
		ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		return serve(ctx, cfg, getenv, newLogger(cfg, stdout), nil)
	case "token":
		return mintToken(cfg, args, stdout)
	case "rotate-cmk":
		if cfg.KeyVault.URL != "" {
			return errors.New("rotate-cmk rotates the local key file; the CMK is in Key Vault here (CREDVAULT_KEYVAULT_URL): rotate it there (az keyvault key rotate) and the rotation job re-wraps the domain keys")
		}
		key, err := cmk.OpenLocal(cfg.DataDir, cmk.LocalOptions{})
		if err != nil {
			return err
		}
		id, err := key.Rotate()
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, id)
		return nil
	case "audit":
		if len(args) == 0 || args[0] != "verify" {
			return errors.New("usage: handler audit verify [--from TIME]")
		}
		return verifyAudit(ctx, cfg, args[1:], stdout)
	default:
		return fmt.Errorf("unknown command %q (commands: serve, token, rotate-cmk, audit verify)", cmd)
	}
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel)) // validated by config
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// serve listens and serves until ctx ends, then drains within 10 s. ready,
// if not nil, receives the listening address.
func serve(ctx context.Context, cfg config.Config, getenv func(string) string, log *slog.Logger, ready chan<- string) error {
	sched, err := timerSchedule(cfg, getenv)
	if err != nil {
		return err
	}
	if err := checkRotationBudget("host.json", cfg.Rotation.Budget); err != nil {
		return err
	}
	a, err := openApp(cfg, log)
	if err != nil {
		return err
	}
	defer a.close()
	if cfg.Rotation.RunTimer {
		go runTimer(ctx, sched, a, log)
	}
	if a.tel != telemetry.Discard {
		go reportMetrics(ctx, a.tel, cfg.Telemetry.MetricsEvery, a.meters)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("credvault listening", "addr", ln.Addr().String(), "auth_mode", cfg.AuthMode)
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdown)
	log.Info("credvault stopped")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// mintToken prints a dev token signed with the data dir's dev key.
func mintToken(cfg config.Config, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	user := fs.String("user", "", "the dev user name (required)")
	roleList := fs.String("roles", "Credentials.Read,Credentials.Write,Credentials.Delete", "comma-separated roles")
	ttl := fs.Duration("ttl", 8*time.Hour, "how long the token is valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *user == "" {
		return errors.New("token: --user is required")
	}
	var roles []identity.Role
	for _, s := range strings.Split(*roleList, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		r, err := identity.ParseRole(s)
		if err != nil {
			return fmt.Errorf("token: %w (roles: %v)", err, identity.AllRoles())
		}
		roles = append(roles, r)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	dev, err := identity.LoadOrCreateDevKey(cfg.DataDir)
	if err != nil {
		return err
	}
	tok, err := dev.Mint(*user, roles, *ttl, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
