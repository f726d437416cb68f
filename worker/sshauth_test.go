package worker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// TestSSHCloneDeployKey clones from a real OpenSSH server with the
// repository's deploy key: the checkout succeeds, the key is in no
// environment value, workspace file or log, and its file is gone after the
// checkout; a key the server does not know, a host key not in
// SLIPWAY_SSH_KNOWN_HOSTS, no setting and no deploy key fail with errors
// that say what to fix and are not infrastructure failures.
func TestSSHCloneDeployKey(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	key, pub := testenv.NewSSHKey(t)
	sshd.Authorize(t, pub)
	repoDir := filepath.Join(t.TempDir(), "app.git")
	commit := testenv.NewGitRepo(t, repoDir, map[string]string{"README": "hello over ssh\n"})
	build := &slipway.Build{ID: 1, Repo: "acme/app", CloneURL: sshd.URL(repoDir), Ref: "refs/heads/main", Commit: commit}
	rc := &slipway.RepoCredentials{CloneURL: build.CloneURL, DeployKey: key}
	w := &Worker{cfg: Config{SSHKnownHosts: sshd.KnownHosts}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var logged []string
	log := func(s string) { logged = append(logged, s) }

	clone := func(w *Worker, rc *slipway.RepoCredentials) (string, error) {
		t.Helper()
		sink := newLogSink(build.ID, nil, zerolog.Nop())
		env, remove, err := w.sshAuth(build, rc, build.CloneURL, sink)
		if err != nil {
			return "", err
		}
		defer remove()
		for _, kv := range env {
			require.NotContains(t, kv, strings.TrimSpace(string(key)), "the key's text in the environment")
		}
		ws := t.TempDir()
		return ws, checkout(ctx, slipway.GitPolicy{}, ws, build.CloneURL, build.Ref, commit, log, env...)
	}

	sink := newLogSink(build.ID, nil, zerolog.Nop())
	env, remove, err := w.sshAuth(build, rc, build.CloneURL, sink)
	require.NoError(t, err)
	require.Len(t, env, 2)
	keyFile := strings.Trim(strings.Fields(strings.TrimPrefix(env[0], "GIT_SSH_COMMAND="))[2], "'")
	fi, err := os.Stat(keyFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	dirInfo, err := os.Stat(filepath.Dir(keyFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), dirInfo.Mode().Perm())
	keyBody := strings.Split(strings.TrimSpace(string(key)), "\n")[1] // a line of the key's base64
	require.NotContains(t, sink.mask("key: "+string(key)), keyBody, "the key is masked in the log")
	ws := t.TempDir()
	require.NoError(t, checkout(ctx, slipway.GitPolicy{}, ws, build.CloneURL, build.Ref, commit, log, env...))
	remove()
	_, err = os.Stat(filepath.Dir(keyFile))
	require.True(t, os.IsNotExist(err), "the key's directory is removed: %v", err)
	got, err := os.ReadFile(filepath.Join(ws, "README"))
	require.NoError(t, err)
	require.Equal(t, "hello over ssh\n", string(got))
	require.NoError(t, filepath.Walk(ws, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NotContains(t, string(b), keyBody, "the key in workspace file %s", path)
		return nil
	}))
	require.NotContains(t, strings.Join(logged, "\n"), keyBody)

	// A key the server does not know: the deploy key's fault, no retry.
	other, _ := testenv.NewSSHKey(t)
	_, err = clone(w, &slipway.RepoCredentials{CloneURL: build.CloneURL, DeployKey: other})
	require.Error(t, err)
	require.Contains(t, err.Error(), "Permission denied")
	require.Contains(t, sshHint(build.CloneURL, err), "deploy-key")
	require.False(t, IsInfra(err), "%v", err)

	// The host's key is not in the known_hosts file.
	empty := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	_, err = clone(&Worker{cfg: Config{SSHKnownHosts: empty}}, rc)
	require.Error(t, err)
	require.Contains(t, err.Error(), "No ED25519 host key is known for")
	hint := sshHint(build.CloneURL, err)
	require.Contains(t, hint, KnownHostsSetting)
	host := "[127.0.0.1]:" + sshd.Addr[strings.LastIndex(sshd.Addr, ":")+1:]
	require.Contains(t, hint, host)
	require.False(t, IsInfra(err), "%v", err)

	// Another key for the host: a changed (or spoofed) server.
	_, otherHost := testenv.NewSSHKey(t)
	changed := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(changed, []byte(host+" "+strings.Join(strings.Fields(otherHost)[:2], " ")+"\n"), 0o644))
	_, err = clone(&Worker{cfg: Config{SSHKnownHosts: changed}}, rc)
	require.Error(t, err)
	require.Contains(t, sshHint(build.CloneURL, err), KnownHostsSetting, "%v", err)
	require.False(t, IsInfra(err), "%v", err)

	// No setting, a setting naming no file, no deploy key.
	_, err = clone(&Worker{}, rc)
	require.ErrorContains(t, err, KnownHostsSetting)
	_, err = clone(&Worker{cfg: Config{SSHKnownHosts: filepath.Join(t.TempDir(), "missing")}}, rc)
	require.ErrorContains(t, err, KnownHostsSetting)
	_, err = clone(w, nil)
	require.ErrorContains(t, err, "PUT /api/v1/repos/{owner}/{name}/deploy-key")
	_, err = clone(w, &slipway.RepoCredentials{CloneURL: build.CloneURL, CloneToken: "a-token-only"})
	require.ErrorContains(t, err, "no deploy key")

	// Another URL (a submodule, an https clone) never gets the key.
	for _, u := range []string{sshd.URL(filepath.Join(filepath.Dir(repoDir), "lib.git")), "https://git.example.com/acme/app.git"} {
		env, remove, err := w.sshAuth(build, rc, u, newLogSink(build.ID, nil, zerolog.Nop()))
		require.NoError(t, err)
		require.Empty(t, env, u)
		remove()
	}
}
