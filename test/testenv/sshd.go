package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SSHD is a running OpenSSH server (/usr/sbin/sshd) on a loopback port with
// its own host key, letting in the holders of the keys in its authorized
// keys file as the current user, so git fetches over ssh:// from any path
// on this machine.
type SSHD struct {
	// Addr is host:port of the server.
	Addr string
	// KnownHosts is the path of a known_hosts file holding the server's host
	// key (as "[127.0.0.1]:port ssh-ed25519 ...").
	KnownHosts string
	// User is the login the URLs of URL use.
	User string

	authorized string
	log        *SyncBuffer
}

// URL is the ssh:// URL of the repository at the absolute path dir.
func (s *SSHD) URL(dir string) string {
	return "ssh://" + s.User + "@" + s.Addr + dir
}

// Authorize lets the holder of the OpenSSH public key pub (one
// authorized_keys line) in from now on.
func (s *SSHD) Authorize(tb testing.TB, pub string) {
	tb.Helper()
	f, err := os.OpenFile(s.authorized, os.O_APPEND|os.O_WRONLY, 0o600)
	if err == nil {
		_, err = fmt.Fprintf(f, "restrict %s\n", strings.TrimSpace(pub))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// Log is what sshd has written (its -e log) so far.
func (s *SSHD) Log() string { return s.log.String() }

// NewSSHKey makes an ed25519 key pair with ssh-keygen, without passphrase,
// and returns the private key (OpenSSH PEM) and the public key line.
func NewSSHKey(tb testing.TB) (private []byte, public string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "slipway-test", "-f", path).CombinedOutput(); err != nil {
		tb.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	private, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		tb.Fatal(err)
	}
	return private, strings.TrimSpace(string(pub))
}

// StartSSHD starts sshd with a new host key on a free port of 127.0.0.1
// and stops it when the test ends; its log is printed when the test fails.
// Only public-key logins of keys given to Authorize are accepted. It skips
// the test when /usr/sbin/sshd is missing (apt-get install openssh-server;
// scripts/deps.sh installs it).
func StartSSHD(tb testing.TB) *SSHD {
	tb.Helper()
	const sshd = "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		tb.Skipf("no %s (install openssh-server; make deps does): %v", sshd, err)
	}
	u, err := user.Current()
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	hostKey := filepath.Join(dir, "host_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		tb.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		tb.Fatal(err)
	}
	s := &SSHD{User: u.Username, authorized: filepath.Join(dir, "authorized_keys"), KnownHosts: filepath.Join(dir, "known_hosts"), log: &SyncBuffer{}}
	if err := os.WriteFile(s.authorized, nil, 0o600); err != nil {
		tb.Fatal(err)
	}
	// sshd wants its privilege separation directory when run as root.
	if os.Geteuid() == 0 {
		_ = os.MkdirAll("/run/sshd", 0o755)
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conf := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(conf, []byte(strings.Join([]string{
			"ListenAddress " + s.Addr,
			"HostKey " + hostKey,
			"AuthorizedKeysFile " + s.authorized,
			"PidFile none",
			"UsePAM no",
			"StrictModes no",
			"PermitRootLogin prohibit-password",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"PubkeyAuthentication yes",
			"AcceptEnv GIT_PROTOCOL",
			"LogLevel VERBOSE",
			"",
		}, "\n")), 0o600); err != nil {
			tb.Fatal(err)
		}
		cmd := exec.Command(sshd, "-D", "-e", "-f", conf)
		cmd.Stdout, cmd.Stderr = s.log, s.log
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		stop := func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
			}
		}
		if waitSSHD(s.Addr, done) {
			tb.Cleanup(func() {
				stop()
				if tb.Failed() {
					tb.Logf("sshd log:\n%s", s.Log())
				}
			})
			break
		}
		stop()
		if attempt == 3 {
			tb.Fatalf("sshd did not start on %s: %s", s.Addr, s.Log())
		}
	}
	fields := strings.Fields(string(hostPub))
	line := fmt.Sprintf("[127.0.0.1]:%s %s %s\n", strings.TrimPrefix(s.Addr[strings.LastIndex(s.Addr, ":"):], ":"), fields[0], fields[1])
	if err := os.WriteFile(s.KnownHosts, []byte(line), 0o644); err != nil {
		tb.Fatal(err)
	}
	return s
}

// waitSSHD reports whether sshd answers on addr with its banner within 10s,
// false once it exited (done closed).
func waitSSHD(addr string, done <-chan struct{}) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return false
		default:
		}
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 4)
			n, _ := conn.Read(buf)
			conn.Close()
			if string(buf[:n]) == "SSH-" {
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
