package protocol

import (
	"time"

	"github.com/nats-io/nats.go"
)

// Connection defaults of long-lived Polos processes (executors, sandbox
// hosts, polosd's server role).
const (
	// DefaultReconnectWait is the pause between reconnect attempts after the
	// connection to the NATS server is lost (nats.go's default is 2 s, which
	// adds up to 2 s to every run's recovery after a broker restart).
	DefaultReconnectWait = 250 * time.Millisecond
	// DefaultReconnectJitter spreads many processes' reconnects apart.
	DefaultReconnectJitter = 100 * time.Millisecond
)

// ServiceConnOptions are the nats.go options of a long-lived process: it
// reconnects forever, quickly, and buffers what it publishes meanwhile.
func ServiceConnOptions() []nats.Option {
	return []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(DefaultReconnectWait),
		nats.ReconnectJitter(DefaultReconnectJitter, DefaultReconnectJitter),
	}
}
