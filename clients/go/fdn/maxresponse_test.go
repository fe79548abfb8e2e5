package fdn

// Options.MaxResponseBytes (spec 10.1 "Growing", 11, 13) against clients/tests/sized_server.py,
// whose model "sized" answers n zero bytes (a TOO_LARGE answer asks for what they need) and "tib"
// the same but asks for 1 TiB, as a hostile or broken server may; its default_capacity is 64
// pages. A TOO_LARGE answer made the client grow its response area to whatever required_bytes
// said (a 1 TiB segment tried, limited only by /dev/shm), as did the region's default_capacity at
// each claim.

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// startSized starts clients/tests/sized_server.py (run from clients/go/fdn) named prefix and the
// pid, stopped when the test ends; it skips the test without FDN_TEST_PYTHON.
func startSized(t *testing.T, prefix string) *echo {
	t.Helper()
	return startScript(t, prefix, "../../tests/sized_server.py")
}

// sized calls model of the sized server for n zero bytes: their count, or the error.
func sized(c *Client, model string, n uint64) (int, error) {
	x := []Input{{Name: "x", DType: INT32, Shape: []uint64{2}, Data: make([]byte, 8)}}
	res, err := c.InferCall(model, x, 10*time.Second, Call{Params: []byte(fmt.Sprintf(`{"n": %d}`, n))})
	if err != nil {
		return 0, err
	}
	y := res.Output("y")
	if y == nil {
		return 0, fmt.Errorf("no output y")
	}
	return len(y.Data), nil
}

// segment is what the client's channel says of its data segment.
type segment struct {
	gen, reqCap, respCap uint64
	name                 string
}

func segmentOf(c *Client) segment {
	name := c.ctl[c.ch+cDataName : c.ch+cDataName+dataNameSize]
	if i := strings.IndexByte(string(name), 0); i >= 0 {
		name = name[:i]
	}
	return segment{le.Uint64(c.ctl[c.ch+cDataGen:]), le.Uint64(c.ctl[c.ch+cRequestCapacity:]),
		le.Uint64(c.ctl[c.ch+cResponseCapacity:]), string(name)}
}

// Up to MaxResponseBytes the response area grows and the call is sent again; past it the call
// fails TooLarge naming the bytes, the limit and the option, the segment is left as it was, and
// the client serves its next call.
func TestLiveAResponseOverMaxResponseBytesIsTooLargeAndTheAreaIsNotGrown(t *testing.T) {
	srv := startSized(t, "fdngosz")
	c := srv.connect(Options{Capacity: 4 * page, MaxResponseBytes: 8 * page})
	if n, err := sized(c, "sized", 6*page); err != nil || n != 6*page {
		t.Fatalf("6 pages over an area of 4, within 8: %d %v", n, err)
	}
	grown := segmentOf(c)
	if grown.respCap <= 6*page || grown.respCap > 8*page {
		t.Fatalf("grown to %d bytes", grown.respCap)
	}
	_, err := sized(c, "sized", 16*page)
	wantError(t, "16 pages over MaxResponseBytes of 8", err, TooLarge, "the response needs ",
		"more than this client's Options.MaxResponseBytes (32768): connect with a larger Options.MaxResponseBytes to take it")
	var needs uint64
	if _, scan := fmt.Sscanf(err.(*Error).Message, "the response needs %d bytes", &needs); scan != nil || needs <= 16*page {
		t.Errorf("the bytes it needs: %v", err)
	}
	if e := err.(*Error); e.Model != "sized" || e.RequestID == 0 {
		t.Errorf("the error names no call: %q %d", e.Model, e.RequestID)
	}
	if got := segmentOf(c); got != grown {
		t.Fatalf("the segment was replaced: %+v, was %+v", got, grown)
	}
	if left := dataSegments(srv.name); len(left) != 1 {
		t.Fatalf("data segments: %v", left)
	}
	if n, err := sized(c, "sized", 5*page); err != nil || n != 5*page {
		t.Fatalf("the next call: %d %v", n, err)
	}
	if got := segmentOf(c); got != grown {
		t.Fatalf("the next call replaced the segment: %+v, was %+v", got, grown)
	}
	echoOnce(t, c)
}

// A server asking 1 TiB for its response: the client tried a data segment that large. With the
// default options it refuses anything over 4 GiB, replacing nothing.
func TestLiveAServerAskingATiBForItsResponseGetsTooLargeNotATiB(t *testing.T) {
	srv := startSized(t, "fdngotib")
	c := srv.connect(Options{})
	before := segmentOf(c)
	_, err := sized(c, "tib", 2<<20)
	wantError(t, "a server asking 1 TiB", err, TooLarge, "the response needs 1099511627776 bytes, more than this "+
		"client's Options.MaxResponseBytes (4294967296): connect with a larger Options.MaxResponseBytes to take it")
	if got := segmentOf(c); got != before {
		t.Fatalf("the segment was replaced: %+v, was %+v", got, before)
	}
	if n, err := sized(c, "tib", 8); err != nil || n != 8 {
		t.Fatalf("the next call: %d %v", n, err)
	}
}

// The areas of a claim were the server's default_capacity (a header word): a server could have
// every claim reserve what MaxResponseBytes refuses to grow to. A client takes at most
// MaxResponseBytes (in pages); a request larger than the areas grows the response area as large,
// but not past it either.
func TestLiveDefaultCapacityAndRequestGrowthStopAtMaxResponseBytes(t *testing.T) {
	srv := startSized(t, "fdngocap")
	c := srv.connect(Options{MaxResponseBytes: 3*page + 1}) // default_capacity: 64 pages
	if s := segmentOf(c); s.reqCap != 4*page || s.respCap != 4*page {
		t.Fatalf("default_capacity over MaxResponseBytes: areas of %d+%d bytes", s.reqCap, s.respCap)
	}
	echoOnce(t, c)
	c.Close()

	c = srv.connect(Options{Capacity: page, MaxResponseBytes: 4 * page})
	x := []Input{{Name: "x", DType: UINT8, Shape: []uint64{16 * page}, Data: make([]byte, 16*page)}}
	if _, err := c.InferCall("sized", x, 10*time.Second, Call{Params: []byte(`{"n": 8}`)}); err != nil {
		t.Fatal(err)
	}
	if s := segmentOf(c); s.reqCap <= 16*page || s.respCap != 4*page {
		t.Fatalf("a request of 16 pages grew the areas to %d+%d bytes (the response area: at most 4 pages)",
			s.reqCap, s.respCap)
	}
}

// A Capacity over MaxResponseBytes is refused at Connect by name (the response area starts at
// Capacity), as is a MaxResponseBytes outside 4096..2^48; no channel is claimed, no segment left.
func TestLiveACapacityOverMaxResponseBytesIsRefusedAtConnect(t *testing.T) {
	srv := startSized(t, "fdngoopt")
	_, err := Connect(srv.name, Options{Capacity: 2 * page, MaxResponseBytes: page})
	wantError(t, "Capacity over MaxResponseBytes", err, InvalidInput, "Options.Capacity (8192 bytes) exceeds "+
		"Options.MaxResponseBytes (4096 bytes): the response area starts at capacity; lower Capacity or raise MaxResponseBytes")
	_, err = Connect(srv.name, Options{Capacity: 8 << 30})
	wantError(t, "Capacity 8 GiB", err, InvalidInput, "exceeds Options.MaxResponseBytes (4294967296 bytes)")
	for _, max := range []uint64{100, page - 1, MaxResponseBytesLimit + 1, ^uint64(0)} {
		_, err = Connect(srv.name, Options{MaxResponseBytes: max})
		wantError(t, fmt.Sprint("MaxResponseBytes ", max), err, InvalidInput,
			fmt.Sprintf("Options.MaxResponseBytes must be 4096..2^48 bytes (0: the default, 4 GiB), not %d", max))
	}
	if left := dataSegments(srv.name); len(left) != 0 {
		t.Fatalf("a refused connect left data segments: %v", left)
	}
	c := srv.connect(Options{Capacity: page, MaxResponseBytes: page})
	if n, err := sized(c, "sized", 8); err != nil || n != 8 {
		t.Fatalf("a call: %d %v", n, err)
	}
}

// echoOnce checks an echo call on c.
func echoOnce(t *testing.T, c *Client) {
	t.Helper()
	x := []Input{{Name: "x", DType: INT32, Shape: []uint64{2}, Data: []byte{1, 0, 0, 0, 2, 0, 0, 0}}}
	res, err := c.Infer("echo", x, 10*time.Second)
	if err != nil || res.Output("x") == nil || string(res.Output("x").Data) != string(x[0].Data) {
		t.Fatalf("echo: %v", err)
	}
}
