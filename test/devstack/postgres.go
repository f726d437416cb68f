package devstack

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresBinDir returns the folder holding Debian's PostgreSQL binaries
// (initdb, pg_ctl): initdb's on PATH, else the newest
// /usr/lib/postgresql/VERSION/bin.
func PostgresBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(real), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL initdb found: run make deps")
}

// Cluster is a PostgreSQL cluster of Debian's binaries: its data in
// Dir/data, its server log in Dir/postgres.log, TCP on 127.0.0.1 only (no
// unix socket: a socket folder's path may be too long or not ours), user
// postgres trusted. When we are root it runs as the postgres user (the server
// refuses root), who must reach Dir.
type Cluster struct {
	Dir  string
	bin  string
	cred *syscall.Credential // nil: as ourselves
}

// NewCluster returns the cluster in dir, making dir (given to the postgres
// user, made when missing, when we are root). Init and Start run it.
func NewCluster(dir string) (*Cluster, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := postgresUser()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	return &Cluster{Dir: dir, bin: bin, cred: cred}, nil
}

// Data is the cluster's data folder.
func (c *Cluster) Data() string { return filepath.Join(c.Dir, "data") }

// LogFile is the server's log.
func (c *Cluster) LogFile() string { return filepath.Join(c.Dir, "postgres.log") }

// Command runs a PostgreSQL binary (initdb, pg_ctl, psql) as the cluster's
// owner.
func (c *Cluster) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

// Init makes the cluster (initdb: user postgres, trust, UTF8, locale C)
// unless Data holds one; initdb's output goes to out.
func (c *Cluster) Init(out io.Writer) error {
	if _, err := os.Stat(filepath.Join(c.Data(), "PG_VERSION")); err == nil {
		return nil
	}
	cmd := c.Command("initdb", "-D", c.Data(), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	return nil
}

// Start starts the server on 127.0.0.1:port with the extra server options
// (e.g. "-c fsync=off") and waits up to timeout until it takes connections.
// pg_ctl's own output goes to out, the server's to LogFile.
func (c *Cluster) Start(ctx context.Context, port int, options string, timeout time.Duration, out io.Writer) error {
	// pg_ctl writes the server log as the server's user.
	f, err := os.OpenFile(c.LogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	f.Close()
	if c.cred != nil {
		if err := os.Chown(c.LogFile(), int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k '' %s", port, options)
	cmd := c.Command("pg_ctl", "-D", c.Data(), "-l", c.LogFile(), "-w", "-t", strconv.Itoa(int(timeout.Seconds())), "-o", opts, "start")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("postgres did not start: %w", err)
	}
	url := PostgresURL(port, "postgres")
	return waitReady(ctx, "postgres", nil, timeout, func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			conn.Close(ctx)
		}
		return err
	})
}

// Restart stops the server fast (in-flight transactions are aborted) and
// starts it again with the same options, waiting up to timeout.
func (c *Cluster) Restart(timeout time.Duration) error {
	out, err := c.Command("pg_ctl", "-D", c.Data(), "-l", c.LogFile(), "-m", "fast", "-w", "-t", strconv.Itoa(int(timeout.Seconds())), "restart").CombinedOutput()
	if err != nil {
		return fmt.Errorf("restarting postgres: %v: %s", err, out)
	}
	return nil
}

// Stop stops the server if it runs: fast (sessions are ended), or at once
// (immediate, as a crash would) when that fails or immediate is set.
func (c *Cluster) Stop(immediate bool) error {
	if !c.Running() {
		return nil
	}
	if !immediate {
		if _, err := c.Command("pg_ctl", "-D", c.Data(), "-m", "fast", "-w", "-t", "30", "stop").CombinedOutput(); err == nil {
			return nil
		}
	}
	if out, err := c.Command("pg_ctl", "-D", c.Data(), "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
		return fmt.Errorf("stopping postgres: %v: %s", err, out)
	}
	return nil
}

// Running tells whether Data's postmaster.pid names a live process.
func (c *Cluster) Running() bool { return postmasterRuns(c.Data()) }

// postgresUser returns the credential to run the server with: nil when we
// are not root, else the postgres user's, made (a system user without a
// home) when missing.
func postgresUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		out, err := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
			"--shell", "/usr/sbin/nologin", "postgres").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("making the postgres user: %v: %s", err, out)
		}
		if u, err = user.Lookup("postgres"); err != nil {
			return nil, err
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// stateHash names per-state folders outside the state folder.
func stateHash(state string) string {
	h := fnv.New32a()
	h.Write([]byte(state))
	return fmt.Sprintf("%08x", h.Sum32())
}

// pgRoot returns the cluster's folder: STATE/pg, unless the server's user
// cannot reach it (a repository under /root, say); then a folder in /var/tmp
// named after the state folder. The choice is kept in STATE/run/pgroot.
func (s *stack) pgRoot(cred *syscall.Credential) (string, error) {
	if b, err := os.ReadFile(filepath.Join(s.run, "pgroot")); err == nil && len(b) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	dir := filepath.Join(s.state, "pg")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return "", err
		}
		check := exec.Command("test", "-w", dir)
		check.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if check.Run() != nil {
			dir = "/var/tmp/slipway-pg-" + stateHash(s.state)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return "", err
			}
			if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
				return "", err
			}
			s.logf("postgres cannot reach %s; its cluster lives in %s", s.state, dir)
		}
	}
	return dir, os.WriteFile(filepath.Join(s.run, "pgroot"), []byte(dir+"\n"), 0o644)
}

// startPostgres makes the cluster when there is none, starts it on port
// and makes the databases slipway and slipway_test.
func (s *stack) startPostgres(ctx context.Context, port int) error {
	bin, err := PostgresBinDir()
	if err != nil {
		return err
	}
	cred, err := postgresUser()
	if err != nil {
		return err
	}
	root, err := s.pgRoot(cred)
	if err != nil {
		return err
	}
	c := &Cluster{Dir: root, bin: bin, cred: cred}
	initLog := filepath.Join(s.logs, "initdb.log")
	if err := s.appendTo(initLog, c.Init); err != nil {
		return s.failed(err.Error(), initLog)
	}
	link := filepath.Join(s.logs, "postgres.log")
	_ = os.Remove(link)
	if err := os.Symlink(c.LogFile(), link); err != nil {
		return err
	}
	if err := s.appendTo(filepath.Join(s.logs, "pg_ctl.log"), func(out io.Writer) error {
		return c.Start(ctx, port, s.o.PGOptions, s.o.timeout(), out)
	}); err != nil {
		return s.failed(err.Error(), link)
	}
	conn, err := pgx.Connect(ctx, PostgresURL(port, "postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, db := range []string{"slipway", "slipway_test"} {
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
			return fmt.Errorf("looking for database %s: %w", db, err)
		}
		if !exists {
			if _, err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
				return fmt.Errorf("making database %s: %w", db, err)
			}
		}
	}
	return nil
}

// PostgresURL is the URL of database db of the stack's cluster on port: user
// postgres, trusted, no TLS.
func PostgresURL(port int, db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, db)
}

// stopPostgres stops the cluster whose folder STATE/run/pgroot names, if it
// runs (Cluster.Stop), as the owner of its data.
func (s *stack) stopPostgres() error {
	b, err := os.ReadFile(filepath.Join(s.run, "pgroot"))
	if err != nil || len(b) == 0 {
		return nil
	}
	c := &Cluster{Dir: strings.TrimSpace(string(b))}
	if !c.Running() {
		return nil
	}
	if c.bin, err = PostgresBinDir(); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		var st syscall.Stat_t
		if err := syscall.Stat(c.Data(), &st); err != nil {
			return err
		}
		c.cred = &syscall.Credential{Uid: st.Uid, Gid: st.Gid}
	}
	if err := c.Stop(false); err != nil {
		return err
	}
	s.logf("stopped postgres")
	return nil
}

// postmasterRuns tells whether data's postmaster.pid names a live process.
func postmasterRuns(data string) bool {
	b, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		return false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	return err == nil && pid > 0 && syscall.Kill(pid, 0) == nil
}
