package fdn

import (
	"fmt"
	"syscall"
	"testing"
)

// TestOpenRegionAtTheFileLimit: at this process's file limit the control segment's shm_open fails
// EMFILE (before the name is looked up); that connect may pass once a descriptor is free:
// OVERLOADED naming the path and the error, not "no shm server named" (spec 10.1 step 1).
func TestOpenRegionAtTheFileLimit(t *testing.T) {
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd) // every descriptor below fd is open: a limit of fd leaves none free
	c := &Client{name: "openregion-test"}
	lim := old
	lim.Cur = uint64(fd)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	err = c.openRegion()
	if rerr := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	c.disconnect()
	want := fmt.Sprintf(`shm server "openregion-test": cannot open /dev/shm/fdn-openregion-test: %v`, syscall.EMFILE)
	wantError(t, "openRegion at the file limit", err, Overloaded, want)
}

// TestOpenFailed: only ENOENT is "no shm server named"; EACCES (another user's server, mode 0600)
// says so and what lets a group in; ENFILE may pass later (OVERLOADED); any other error names the
// path and the error (spec 10.1 step 1).
func TestOpenFailed(t *testing.T) {
	for _, k := range []struct {
		err  syscall.Errno
		code Status
		want string
	}{
		{syscall.ENOENT, ServerUnavailable, `no shm server named "m"`},
		{syscall.EACCES, ServerUnavailable, `no permission to use shm server "m" (/dev/shm/fdn-m): another user's; ` +
			"a server started with mode 0o660 lets its group in"},
		{syscall.ENFILE, Overloaded, `shm server "m": cannot open /dev/shm/fdn-m: ` + syscall.ENFILE.Error()},
		{syscall.ELOOP, ServerUnavailable, `shm server "m": cannot open /dev/shm/fdn-m: ` + syscall.ELOOP.Error()},
	} {
		err := openFailed("m", k.err)
		wantError(t, fmt.Sprintf("shm_open failing %v", k.err), err, k.code, k.want)
		if e := err.(*Error); e.Message != k.want {
			t.Errorf("shm_open failing %v: %q, want %q", k.err, e.Message, k.want)
		}
	}
}
