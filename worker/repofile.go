package worker

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// Size caps of the files slipway reads from a checkout, or hands BuildKit to
// read. A push chooses their contents, so none is read without a bound.
const (
	RepoConfigMaxBytes   = 256 << 10 // .slipway.yml
	DockerfileMaxBytes   = 1 << 20   // the Dockerfile
	DockerignoreMaxBytes = 1 << 20   // .dockerignore and <Dockerfile>.dockerignore
)

// The rules for a file slipway reads from a checkout (.slipway.yml, the
// Dockerfile, .dockerignore), enforced through os.Root so that no link leads
// out of the checkout:
//
//   - the file itself must be a regular file: a symlink is refused even when it
//     points at a file of the repository, since BuildKit reads the Dockerfile
//     and .dockerignore from its own copy of the folder, where a link resolves
//     differently; one rule for all three keeps what slipway checks and what
//     BuildKit reads the same;
//   - a folder on the way may be a symlink to another folder of the checkout,
//     never to one outside it;
//   - it is at most its cap in size.
//
// Each refusal is an error the build's author fixes (never retried), naming
// the file and saying what to commit instead.

// checkBuildFiles checks what a build hands BuildKit from the checkout dir
// before anything is sent: the context folder, the Dockerfile in it, the
// Dockerfile's own <name>.dockerignore beside it and the context's
// .dockerignore (both optional). It returns the real path of the context
// folder, which is inside dir.
func checkBuildFiles(dir string, cfg *RepoConfig) (string, error) {
	root, err := openCheckout(dir)
	if err != nil {
		return "", err
	}
	defer root.Close()
	contextDir, err := checkoutFolder(root, dir, cfg.Context)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("the build context %s is not in the commit; add the folder or set context: in %s", cfg.Context, RepoConfigFile)
	} else if err != nil {
		return "", fmt.Errorf("build context: %w", err)
	}
	dockerfile := path.Join(cfg.Context, cfg.Dockerfile)
	_, err = statCheckoutFile(root, dockerfile, DockerfileMaxBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("the Dockerfile %s is not in the commit; add it or set dockerfile: in %s (relative to context:)", dockerfile, RepoConfigFile)
	} else if err != nil {
		return "", err
	}
	for _, ignore := range []string{dockerfile + ".dockerignore", path.Join(cfg.Context, ".dockerignore")} {
		if _, err := statCheckoutFile(root, ignore, DockerignoreMaxBytes); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	return contextDir, nil
}

// openCheckout opens the checkout folder dir as an os.Root.
func openCheckout(dir string) (*os.Root, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening the checkout: %w", err)
	}
	return r, nil
}

// statCheckoutFile checks the file rel (slash-separated, relative to root)
// against the rules above and returns its size. A missing file (or folder on
// the way) is an error matching fs.ErrNotExist.
func statCheckoutFile(root *os.Root, rel string, maxBytes int64) (int64, error) {
	if err := checkFolders(root, path.Dir(rel), rel); err != nil {
		return 0, err
	}
	fi, err := root.Lstat(rel)
	if err != nil {
		return 0, checkoutError(rel, err)
	}
	if err := regular(root, rel, fi); err != nil {
		return 0, err
	}
	if fi.Size() > maxBytes {
		return 0, tooBig(rel, fi.Size(), maxBytes)
	}
	return fi.Size(), nil
}

// readCheckoutFile reads the file rel inside root under the rules above: at
// most maxBytes, through os.Root. A missing file is an error matching
// fs.ErrNotExist.
func readCheckoutFile(root *os.Root, rel string, maxBytes int64) ([]byte, error) {
	if _, err := statCheckoutFile(root, rel, maxBytes); err != nil {
		return nil, err
	}
	// O_NONBLOCK: should the file have become a named pipe since the check,
	// opening it does not wait for a writer; the Stat below then refuses it.
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, checkoutError(rel, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", rel, err)
	}
	if err := regular(root, rel, fi); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", rel, err)
	}
	if int64(len(data)) > maxBytes {
		return nil, tooBig(rel, -1, maxBytes)
	}
	return data, nil
}

// checkoutFolder resolves the folder rel ("." for the checkout itself) of the
// checkout dir and returns its real path. Symlinked folders on the way are
// followed while they stay inside the checkout; one that leads out, or a rel
// that is not a folder, is an error naming it. The result is what may be
// handed to BuildKit: nothing outside the checkout.
func checkoutFolder(root *os.Root, dir, rel string) (string, error) {
	rel = path.Clean(rel)
	if rel != "." {
		if err := checkFolders(root, rel, rel); err != nil {
			return "", err
		}
	}
	// os.Root has checked every link on the way; resolve them the same way for
	// BuildKit, which walks the real path, and check the result once more.
	top, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("opening the checkout: %w", err)
	}
	real, err := filepath.EvalSymlinks(filepath.Join(top, filepath.FromSlash(rel)))
	if err != nil {
		return "", checkoutError(rel, err)
	}
	if r, err := filepath.Rel(top, real); err != nil || !filepath.IsLocal(r) && r != "." {
		return "", fmt.Errorf("%s leads outside the repository; name a folder of the repository", rel)
	}
	return real, nil
}

// checkFolders checks each folder of the slash-separated folder path dirs
// ("." for none): a symlink among them must lead to a folder inside the
// checkout. what names the file or folder they lead to, for messages.
func checkFolders(root *os.Root, dirs, what string) error {
	if dirs = path.Clean(dirs); dirs == "." {
		return nil
	}
	cur := ""
	for _, part := range strings.Split(dirs, "/") {
		cur = path.Join(cur, part)
		fi, err := root.Lstat(cur)
		if err != nil {
			return checkoutError(cur, err)
		}
		switch {
		case fi.IsDir():
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := root.Readlink(cur)
			st, err := root.Stat(cur)
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ELOOP) {
				return checkoutError(cur, err)
			}
			if err != nil {
				return fmt.Errorf("%s is a symlink to %s, outside the repository; commit the folder itself or link to one inside the repository", cur, target)
			}
			if !st.IsDir() {
				return fmt.Errorf("%s is a symlink to %s, which is not a folder; %s needs a folder there", cur, target, what)
			}
		default:
			return fmt.Errorf("%s is %s, not a folder; %s needs a folder there", cur, kind(fi.Mode()), what)
		}
	}
	return nil
}

// regular refuses anything but a regular file, naming what rel is instead.
func regular(root *os.Root, rel string, fi fs.FileInfo) error {
	switch m := fi.Mode(); {
	case m.IsRegular():
		return nil
	case m&fs.ModeSymlink != 0:
		target, _ := root.Readlink(rel)
		return fmt.Errorf("%s is a symlink to %s; slipway reads it only as a regular file, so commit the file itself instead of a link", rel, target)
	default:
		return fmt.Errorf("%s is %s; commit it as a regular file", rel, kind(m))
	}
}

// checkoutError words an error of opening rel in the checkout. A missing file
// still matches fs.ErrNotExist.
func checkoutError(rel string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", rel, fs.ErrNotExist)
	}
	if errors.Is(err, syscall.ELOOP) {
		return fmt.Errorf("%s goes through a loop of symlinks; commit regular files and folders", rel)
	}
	// os.Root's own error for a link out of it ("path escapes from parent").
	if strings.Contains(err.Error(), "escapes from parent") {
		return fmt.Errorf("%s leads outside the repository through a symlink; commit regular files and folders", rel)
	}
	return fmt.Errorf("reading %s: %w", rel, err)
}

// tooBig is the error of the file name of size bytes (-1: unknown) over its
// cap of maxBytes.
func tooBig(name string, size, maxBytes int64) error {
	is := "is over " + byteSize(maxBytes)
	if size >= 0 {
		is = fmt.Sprintf("is %d bytes", size)
	}
	return fmt.Errorf("%s %s; slipway reads at most %s of it, so make it smaller", name, is, byteSize(maxBytes))
}

// kind names a non-regular file mode for a message.
func kind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a file"
	case m.IsDir():
		return "a folder"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}

// byteSize formats n bytes as "256 KiB", "1 MiB" or "1.5 MiB".
func byteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return trimZero(fmt.Sprintf("%.1f", float64(n)/(1<<20))) + " MiB"
	case n >= 1<<10:
		return trimZero(fmt.Sprintf("%.1f", float64(n)/(1<<10))) + " KiB"
	}
	return fmt.Sprintf("%d bytes", n)
}

func trimZero(s string) string { return strings.TrimSuffix(s, ".0") }
