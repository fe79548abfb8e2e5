package fdn

import (
	"fmt"
	"os"
	"syscall"
	"testing"
)

// TestAllocStatus: a data segment that cannot be created for lack of a file descriptor (EMFILE,
// ENFILE) is OVERLOADED, as no room is (it may pass later; spec 10.1 step 6), never INTERNAL.
func TestAllocStatus(t *testing.T) {
	for _, c := range []struct {
		err  syscall.Errno
		want Status
	}{
		{syscall.EMFILE, Overloaded},
		{syscall.ENFILE, Overloaded},
		{syscall.ENOSPC, Overloaded},
		{syscall.ENOMEM, Overloaded},
		{syscall.EFBIG, TooLarge},
		{syscall.EOVERFLOW, TooLarge},
		{syscall.EINVAL, TooLarge},
		{syscall.EIO, Internal},
	} {
		if got := allocStatus(c.err); got != c.want {
			t.Errorf("allocStatus(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

// TestCreateDataNoDescriptor: at this process's file limit shm_open fails EMFILE; the data
// segment's creation is OVERLOADED (it may pass once a descriptor is free), and nothing is left
// in /dev/shm.
func TestCreateDataNoDescriptor(t *testing.T) {
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd) // every descriptor below fd is open: a limit of fd leaves none free
	c := &Client{name: "allocstatus-test", index: 0, mode: 0o600}
	name := fmt.Sprintf("/fdn-allocstatus-test-d0-%d-1", os.Getpid())
	lim := old
	lim.Cur = uint64(fd)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	mem, err := c.createData(name, page, page)
	if rerr := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil {
		syscall.Munmap(mem)
		shmUnlink(name)
		t.Fatal("createData at the file limit succeeded")
	}
	wantError(t, "createData at the file limit", err, Overloaded, "no file descriptor free now")
	if _, serr := os.Stat("/dev/shm" + name); !os.IsNotExist(serr) {
		shmUnlink(name)
		t.Fatalf("%s left in /dev/shm (%v)", name, serr)
	}
}
