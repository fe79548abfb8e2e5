package fdn

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// resources are this process's open descriptors, its mappings of /dev/shm objects (segments,
// semaphores) and its goroutines.
func resources(t *testing.T) (fds, shmMaps, goroutines int) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents), strings.Count(string(maps), "/dev/shm/"), runtime.NumGoroutine()
}

// A long-running process connects and closes again and again, through every outcome of a call
// (an error response, a loan begun and abandoned, a Close with the request still pending, a Close
// during another goroutine's call): descriptors, mappings, goroutines and data segments come
// back to where they were.
func TestConnectCallCloseCyclesLeaveNothing(t *testing.T) {
	name := startEcho(t, "fdngocyc").name
	in := []Input{{Name: "x", DType: INT32, Shape: []uint64{2}, Data: []byte{1, 0, 0, 0, 2, 0, 0, 0}}}
	spec := []Tensor{{Name: "x", DType: INT32, NDim: 1, Shape: [8]uint64{2}}}
	slow := Call{Params: []byte(`{"ms": 5}`)}
	segments := func() int {
		paths, _ := filepath.Glob("/dev/shm/fdn-" + name + "-d*")
		return len(paths)
	}
	fds0, maps0, gor0 := resources(t)
	for i := 0; i < 200; i++ {
		c, err := Connect(name, Options{})
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if _, err := c.Infer("echo", in, 5*time.Second); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		switch i % 5 {
		case 0:
			_, err = c.Infer("no_such_model", in, 5*time.Second)
		case 1:
			_, err = c.Infer("fail", in, 5*time.Second)
		case 2:
			if err = c.LoanBegin("echo", spec); err == nil {
				err = fail(Internal, 0, "abandoned")
			}
		case 3:
			_, err = c.InferCall("sleep", in, 0, slow) // closed with its request pending
		default:
			done := make(chan error)
			go func() { _, e := c.InferCall("sleep", in, time.Second, slow); done <- e }()
			c.Close() // during the call, or before or after it: Close waits for it
			<-done
			continue
		}
		if err == nil {
			t.Fatalf("cycle %d: the failing call succeeded", i)
		}
		c.Close()
	}
	// More than before is a leak; fewer is something of an earlier test's ending meanwhile (a
	// server's pipe closed, a goroutine returning), which an exact comparison failed. The last
	// call's goroutine may still be exiting: up to a minute for the counts to come back.
	fds, maps, gor := resources(t)
	for k := 0; k < 6000 && (fds > fds0 || maps > maps0 || gor > gor0); k++ {
		time.Sleep(10 * time.Millisecond)
		fds, maps, gor = resources(t)
	}
	if fds > fds0 || maps > maps0 || gor > gor0 {
		t.Fatalf("after 200 connect/call/close cycles: %d descriptors (was %d), %d mappings of /dev/shm (was %d), %d goroutines (was %d)",
			fds, fds0, maps, maps0, gor, gor0)
	}
	if n := segments(); n != 0 {
		t.Fatalf("after 200 cycles: %d data segments left in /dev/shm", n)
	}
}
