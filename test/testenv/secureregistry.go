package testenv

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/slipway-ci/slipway/test/devstack"
)

// SecureRegistry is a distribution registry that needs a login (htpasswd,
// basic auth) and speaks only TLS, with a certificate from a CA of its own.
type SecureRegistry struct {
	// Host is host:port. It listens on 127.0.0.2, a loopback address that
	// go-containerregistry and BuildKit do not treat as "localhost", so they
	// speak https only and never fall back to plain http.
	Host     string
	User     string
	Password string
	// CAFile is the PEM file of the CA that signed the registry's certificate.
	CAFile string

	log *SyncBuffer
}

// StartSecureRegistry starts a SecureRegistry with the user and password
// until the test ends. The test is skipped when docker-registry is not
// installed.
func StartSecureRegistry(tb testing.TB, user, password string) *SecureRegistry {
	tb.Helper()
	if _, err := exec.LookPath("docker-registry"); err != nil {
		tb.Skip(devstack.ErrNoRegistry)
	}
	dir := tb.TempDir()
	ip := net.ParseIP("127.0.0.2")
	// A free port on 127.0.0.2.
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		tb.Fatalf("listening on 127.0.0.2: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	caFile, certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := writeTestCA(ip, caFile, certFile, keyFile); err != nil {
		tb.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		tb.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	r := &SecureRegistry{Host: fmt.Sprintf("127.0.0.2:%d", port), User: user, Password: password, CAFile: caFile, log: &SyncBuffer{}}
	p, err := devstack.StartRegistry(context.Background(), devstack.RegistryConfig{
		Addr: r.Host, Dir: dir, LogLevel: "warn", Htpasswd: htpasswd, Realm: "slipway-test",
		CertFile: certFile, KeyFile: keyFile, CAFile: caFile,
	}, devstack.ProcOptions{Log: r.log, Timeout: 30 * time.Second})
	if err != nil {
		tb.Fatalf("%v\n%s", err, r.log.String())
	}
	tb.Cleanup(func() {
		p.Stop(10 * time.Second)
		if tb.Failed() {
			tb.Logf("secure registry log:\n%s", r.log.String())
		}
	})
	return r
}

// DockerConfig writes a Docker config.json into dir with an `auths` entry
// for each host and its user:password, and returns its path.
func DockerConfig(tb testing.TB, dir string, creds map[string][2]string) string {
	tb.Helper()
	auths := map[string]map[string]string{}
	for host, up := range creds {
		auths[host] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(up[0] + ":" + up[1]))}
	}
	b, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(dir, "config.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// Uploads returns how many blob uploads the registry finished (PUT
// …/blobs/uploads/…) as its access log tells so far.
func (r *SecureRegistry) Uploads() int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(r.log.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"PUT /v2/`) && strings.Contains(sc.Text(), "/blobs/uploads/") {
			n++
		}
	}
	return n
}

// Log is what the registry wrote so far (access log included).
func (r *SecureRegistry) Log() string { return r.log.String() }

// writeTestCA makes a CA and a server certificate for ip signed by it.
func writeTestCA(ip net.IP, caFile, certFile, keyFile string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "slipway test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: ip.String()},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{ip}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caTmpl, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{caFile, "CERTIFICATE", caDER}, {certFile, "CERTIFICATE", srvDER}, {keyFile, "EC PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return err
		}
	}
	return nil
}
