package pod

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// dialInNetns connects to port on localhost inside the network namespace of
// process pid, and closes the connection again: the tcpSocket probe of a
// Pod that has no network but its own localhost. A socket belongs to the
// namespace of the thread that creates it, so the dial runs on a locked
// thread switched into the namespace and back; a thread that cannot switch
// back is left locked, and Go ends it with its goroutine.
func dialInNetns(ctx context.Context, pid, port int) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening the worker's network namespace: %w", err)
			return
		}
		defer unix.Close(own)
		target, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening the pod's network namespace: %w", err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering the pod's network namespace: %w", err)
			return
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if conn != nil {
			conn.Close()
		}
		if unix.Setns(own, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
