package devstack

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

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

// pgCluster is the stack's PostgreSQL cluster: data/ and postgres.log under
// root, run as the postgres user when we are root (the server refuses root).
type pgCluster struct {
	bin  string
	root string
	cred *syscall.Credential // nil: as ourselves
}

func (c *pgCluster) data() string { return filepath.Join(c.root, "data") }

// command runs a PostgreSQL binary as the cluster's owner.
func (c *pgCluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

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
// (TCP on 127.0.0.1 only) and makes the databases slipway and slipway_test.
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
	c := &pgCluster{bin: bin, root: root, cred: cred}
	if _, err := os.Stat(filepath.Join(c.data(), "PG_VERSION")); err != nil {
		initLog := filepath.Join(s.logs, "initdb.log")
		if err := s.runLogged(c.command("initdb", "-D", c.data(), "-U", "postgres", "--auth=trust",
			"--encoding=UTF8", "--locale=C"), initLog); err != nil {
			return s.failed("initdb failed: "+err.Error(), initLog)
		}
	}
	// pg_ctl writes the server log as the server's user.
	pgLog := filepath.Join(root, "postgres.log")
	f, err := os.OpenFile(pgLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	f.Close()
	if cred != nil {
		if err := os.Chown(pgLog, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	link := filepath.Join(s.logs, "postgres.log")
	_ = os.Remove(link)
	if err := os.Symlink(pgLog, link); err != nil {
		return err
	}
	// TCP only (-k ''): a socket folder's path may be too long or not ours.
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k '' %s", port, s.o.PGOptions)
	ctlLog := filepath.Join(s.logs, "pg_ctl.log")
	start := c.command("pg_ctl", "-D", c.data(), "-l", pgLog, "-w", "-t", strconv.Itoa(int(s.o.timeout().Seconds())), "-o", opts, "start")
	if err := s.runLogged(start, ctlLog); err != nil {
		return s.failed("postgres did not start: "+err.Error(), link)
	}
	url := PostgresURL(port, "postgres")
	var conn *pgx.Conn
	err = waitReady(ctx, "postgres", nil, s.o.timeout(), func(ctx context.Context) error {
		var err error
		conn, err = pgx.Connect(ctx, url)
		return err
	})
	if err != nil {
		return s.failed(err.Error(), link)
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
// runs: fast (sessions are ended), then immediate.
func (s *stack) stopPostgres() error {
	b, err := os.ReadFile(filepath.Join(s.run, "pgroot"))
	if err != nil || len(b) == 0 {
		return nil
	}
	c := &pgCluster{root: strings.TrimSpace(string(b))}
	if !postmasterRuns(c.data()) {
		return nil
	}
	if c.bin, err = PostgresBinDir(); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		var st syscall.Stat_t
		if err := syscall.Stat(c.data(), &st); err != nil {
			return err
		}
		c.cred = &syscall.Credential{Uid: st.Uid, Gid: st.Gid}
	}
	if out, err := c.command("pg_ctl", "-D", c.data(), "-m", "fast", "-w", "-t", "30", "stop").CombinedOutput(); err != nil {
		s.logf("postgres did not stop fast (%v: %s); stopping it immediately", err, strings.TrimSpace(string(out)))
		if out, err := c.command("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
			return fmt.Errorf("stopping postgres: %v: %s", err, out)
		}
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
