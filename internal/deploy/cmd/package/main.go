// Command package builds the deployable Functions app folder and zip
// (make package): dist/app and dist/credvault.zip by default.
//
//	go run ./internal/deploy/cmd/package [-out dist] [-go go]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/credvault/credvault/internal/deploy"
)

func main() {
	out := flag.String("out", "dist", "output folder: gets app/ and "+deploy.ZipName)
	goCmd := flag.String("go", "go", "the go command that builds the handler")
	flag.Parse()
	if err := run(*out, *goCmd); err != nil {
		fmt.Fprintln(os.Stderr, "package:", err)
		os.Exit(1)
	}
}

func run(out, goCmd string) error {
	root, err := deploy.FindRoot(".")
	if err != nil {
		return err
	}
	zipPath, err := deploy.Build(context.Background(), deploy.Options{Root: root, Out: out, Go: goCmd})
	if err != nil {
		return err
	}
	fmt.Println(zipPath)
	return nil
}
