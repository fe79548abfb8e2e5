package fdn

// A pool's arguments are checked before it takes a client: a nil callback is INVALID_INPUT,
// never a panic that costs the pool a client.

import (
	"context"
	"strings"
	"testing"
)

// Do with a nil callback is refused before a client is taken, with no server as with one.
func TestPoolDoRefusesANilCallback(t *testing.T) {
	p, err := NewPool("fdngonilfn_no_server", Options{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	err = p.Do(context.Background(), nil)
	if CodeOf(err) != InvalidInput || !strings.Contains(err.Error(), "nil callback") {
		t.Fatalf("Do(ctx, nil) with no server: %v, not INVALID_INPUT naming the nil callback", err)
	}
}

// Against a live server a nil callback panicked with a nil dereference inside Do (the pool
// closing the client it had connected for it); it is INVALID_INPUT, and the pool opens no client.
func TestLivePoolDoRefusesANilCallbackWithoutPanicking(t *testing.T) {
	srv := startEcho(t, "fdngonilfn")
	p := poolOf(t, srv.name, 1)
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Do(ctx, nil) panicked: %v", r)
			}
		}()
		if err := p.Do(context.Background(), nil); CodeOf(err) != InvalidInput {
			t.Fatalf("Do(ctx, nil): %v, not INVALID_INPUT", err)
		}
	}()
	if n := p.openClients(); n != 0 {
		t.Fatalf("the pool opened %d clients for a refused call", n)
	}
	if err := p.Do(context.Background(), func(*Client) error { return nil }); err != nil {
		t.Fatal(err)
	}
}
