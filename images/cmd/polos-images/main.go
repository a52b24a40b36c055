// Command polos-images builds Polos sandbox images without a registry.
//
//	polos-images busybox [-tag polos/busybox:test] [-force]
//	polos-images import -tag polos/node:20 < rootfs.tar
//	polos-images exists -tag REF      (exit 0 if present, 1 if not)
//
// It talks to the Docker Engine API (DOCKER_HOST etc. as for the docker CLI).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/docker/docker/client"

	"github.com/polos-run/polos/images"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	tag := fs.String("tag", "", "image reference to build")
	force := fs.Bool("force", false, "rebuild even if the image exists")
	_ = fs.Parse(args)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		fail(err)
	}
	defer cli.Close()

	switch cmd {
	case "busybox":
		ref := or(*tag, images.BusyboxRef)
		if *force {
			err = images.BuildBusybox(ctx, cli, ref)
		} else {
			err = images.EnsureBusybox(ctx, cli, ref)
		}
		if err == nil {
			fmt.Println(ref)
		}
	case "import":
		if *tag == "" {
			usage()
		}
		if err = images.Import(ctx, cli, os.Stdin, *tag); err == nil {
			fmt.Println(*tag)
		}
	case "exists":
		if *tag == "" {
			usage()
		}
		var ok bool
		if ok, err = images.Exists(ctx, cli, *tag); err == nil && !ok {
			os.Exit(1)
		}
	default:
		usage()
	}
	if err != nil {
		fail(err)
	}
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: polos-images busybox [-tag REF] [-force] | import -tag REF < rootfs.tar | exists -tag REF")
	os.Exit(2)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "polos-images:", err)
	os.Exit(1)
}
