package protocol_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/polos-run/polos/internal/testutil"
	"github.com/polos-run/polos/protocol"
)

// TestDirectReaderConcurrentReads: many reads share one reader (one
// subscription) and each gets exactly its own batch, in order.
func TestDirectReaderConcurrentReads(t *testing.T) {
	s := testutil.StartServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	subj := protocol.RunSubject("default", "run_direct", "step_started")
	stream := protocol.RunsStreamOf("run_direct")
	var first uint64
	for i := 0; i < 300; i++ {
		ack, err := s.JS.Publish(ctx, subj, []byte(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = ack.Sequence
		}
	}
	r := protocol.NewDirectReader(s.ConnectAs(t, "observer"))
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for g := 0; g < 40; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			from := first + uint64(g*5)
			msgs, _, err := r.Batch(ctx, stream, protocol.RunFilter("default", "run_direct"), from, 10)
			if err != nil {
				errs <- err
				return
			}
			if len(msgs) != 10 {
				errs <- fmt.Errorf("read %d: %d messages", g, len(msgs))
				return
			}
			for i, m := range msgs {
				if m.Seq != from+uint64(i) || string(m.Data) != fmt.Sprint(g*5+i) {
					errs <- fmt.Errorf("read %d: message %d is seq %d %q", g, i, m.Seq, m.Data)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, ok, err := r.Last(ctx, stream, subj); err != nil || !ok {
		t.Fatalf("last: %v %v", ok, err)
	}
}
