package fdn

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestAllocStatus: a data segment that cannot be created for lack of a file descriptor (EMFILE,
// ENFILE) is OVERLOADED, as no room is (it may pass later; spec 10.1 step 6), never INTERNAL, at
// any step; a size that can never fit is TOO_LARGE only at a step that sizes (EINVAL from
// shm_open is no size).
func TestAllocStatus(t *testing.T) {
	for _, c := range []struct {
		err         syscall.Errno
		open, sized Status
	}{
		{syscall.EMFILE, Overloaded, Overloaded},
		{syscall.ENFILE, Overloaded, Overloaded},
		{syscall.ENOSPC, Overloaded, Overloaded},
		{syscall.ENOMEM, Overloaded, Overloaded},
		{syscall.EINTR, Overloaded, Overloaded},
		{syscall.EFBIG, Internal, TooLarge},
		{syscall.EOVERFLOW, Internal, TooLarge},
		{syscall.EINVAL, Internal, TooLarge},
		{syscall.EIO, Internal, Internal},
	} {
		if got := allocStatus(c.err, false); got != c.open {
			t.Errorf("allocStatus(%v) at shm_open = %s, want %s", c.err, got, c.open)
		}
		if got := allocStatus(c.err, true); got != c.sized {
			t.Errorf("allocStatus(%v) after shm_open = %s, want %s", c.err, got, c.sized)
		}
	}
}

// TestCreateDataShmOpenFails: a data segment whose shm_open finds no room (ENOSPC: a tmpfs out of
// inodes; ENOMEM) is OVERLOADED, as an ftruncate or posix_fallocate without room is (it may fit
// later); it was INTERNAL. Any other shm_open error stays INTERNAL, named as the later steps are.
func TestCreateDataShmOpenFails(t *testing.T) {
	real := shmOpenData
	t.Cleanup(func() { shmOpenData = real })
	c := &Client{name: "allocstatus-test", index: 0, mode: 0o600}
	name := fmt.Sprintf("/fdn-allocstatus-test-d0-%d-1", os.Getpid())
	for _, k := range []struct {
		err  syscall.Errno
		code Status
		tail string
	}{
		{syscall.ENOSPC, Overloaded, ": no room now, it may fit later"},
		{syscall.ENOMEM, Overloaded, ": no room now, it may fit later"},
		{syscall.ENFILE, Overloaded, ": no file descriptor free now, it may be later"},
		{syscall.EACCES, Internal, ""},
	} {
		shmOpenData = func(string, int, uint32) (int, error) { return -1, k.err }
		mem, _, err := c.createData(name, page, page)
		if err == nil {
			syscall.Munmap(mem)
			shmUnlink(name)
			t.Fatalf("createData with shm_open failing %v succeeded", k.err)
		}
		want := fmt.Sprintf("(shm_open: %v)%s", k.err, k.tail)
		wantError(t, fmt.Sprintf("createData with shm_open failing %v", k.err), err, k.code, want)
		if !strings.HasSuffix(err.Error(), want) {
			t.Errorf("createData with shm_open failing %v: %q does not end %q", k.err, err, want)
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
	mem, _, err := c.createData(name, page, page)
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

// TestCreateDataFallocateInterruptedEveryTime: a posix_fallocate that a signal interrupts
// (EINTR) is made again, but not for ever: interrupted fallocateTries times in a row (signals that
// come faster than tmpfs allocates, which undoes an interrupted call's pages) the data segment's
// creation fails OVERLOADED, it may pass later, and nothing is left in /dev/shm. It tried for as
// long as the signals came.
func TestCreateDataFallocateInterruptedEveryTime(t *testing.T) {
	real := fallocateSys
	t.Cleanup(func() { fallocateSys = real })
	calls := 0
	fallocateSys = func(fd int, mode uint32, off int64, size int64) error {
		if calls++; calls <= 1000*fallocateTries { // (the old loop got through them: a segment)
			return syscall.EINTR
		}
		return real(fd, mode, off, size)
	}
	c := &Client{name: "allocstatus-test", index: 0, mode: 0o600}
	name := fmt.Sprintf("/fdn-allocstatus-test-d0-%d-1", os.Getpid())
	mem, token, err := c.createData(name, page, page)
	if err == nil {
		syscall.Munmap(mem)
		unlinkOwn(name, token)
		t.Fatalf("createData with posix_fallocate interrupted every time succeeded after %d calls", calls)
	}
	want := fmt.Sprintf("(posix_fallocate: %v): %d times in a row, it may pass later", syscall.EINTR, fallocateTries)
	wantError(t, "createData with posix_fallocate interrupted every time", err, Overloaded, want)
	if !strings.HasSuffix(err.Error(), want) || calls != fallocateTries {
		t.Errorf("createData: %q after %d calls; want it to end %q after %d", err, calls, want, fallocateTries)
	}
	if _, serr := os.Stat("/dev/shm" + name); !os.IsNotExist(serr) {
		shmUnlink(name)
		t.Fatalf("%s left in /dev/shm (%v)", name, serr)
	}
}
