package app_test

import (
	"testing"

	"github.com/polos-run/polos/config"
	"github.com/polos-run/polos/internal/app"
)

// TestReplicasResolve: --replicas wins over polos.yaml server.replicas;
// with neither, Replicas stays 0 (provisioning keeps the existing assets'
// count rather than scaling a cluster down to the default).
func TestReplicasResolve(t *testing.T) {
	withFile := func(n int) *config.Config {
		c := config.Default()
		c.Server.Replicas = n
		return c
	}
	for _, tc := range []struct {
		name string
		flag int
		cfg  *config.Config
		want int
	}{
		{"neither", 0, nil, 0},
		{"file", 0, withFile(3), 3},
		{"flag", 3, nil, 3},
		{"flag wins over file", 1, withFile(3), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := app.Options{Replicas: tc.flag, Config: tc.cfg}
			if err := o.Resolve(); err != nil {
				t.Fatal(err)
			}
			if o.Replicas != tc.want {
				t.Fatalf("Replicas %d, want %d", o.Replicas, tc.want)
			}
		})
	}
}
