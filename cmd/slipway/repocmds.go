package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"text/tabwriter"

	"github.com/slipway-ci/slipway"
)

const repoUsage = `usage: slipway repo add FORGE OWNER/NAME [--clone-url URL] [--image IMAGE] [--no-secret] [--json]
       slipway repo list [--json]
       slipway repo rotate-secret OWNER/NAME [--forge FORGE] [--json]
       (each also takes --server URL and --token T; admin role)

add registers a repository (FORGE: github, gitlab or gitea; a GitLab OWNER may
hold subgroups, group/sub) with a webhook secret of its own, which slipway
generates and prints once, with the webhook URL to give the forge. The clone
URL comes from the forge's base URL setting unless --clone-url names it.
rotate-secret makes a new secret (the old one stops working at once).
Exit codes: 0 done, 3 token missing or role too low, 4 the repository exists,
5 no such repository, 6 rejected input, 1 anything else.
`

// repoAnswer is what POST and PATCH /api/v1/repos answer.
type repoAnswer struct {
	slipway.Repo
	WebhookSecret string `json:"webhook_secret"`
	WebhookURL    string `json:"webhook_url"`
}

// runRepo is `slipway repo`.
func runRepo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || slices.Contains([]string{"help", "-h", "-help", "--help"}, args[0]) {
		fmt.Fprint(stderr, repoUsage)
		if len(args) == 0 {
			return usageErrorf("repo needs a subcommand: add, list or rotate-secret")
		}
		return nil
	}
	fs := flag.NewFlagSet("repo "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, repoUsage) }
	client := clientFlags(fs, getenv)
	asJSON := fs.Bool("json", false, "print the server's JSON answer")
	cloneURL := fs.String("clone-url", "", "add: the repository's clone URL (default from the forge's base URL)")
	image := fs.String("image", "", "add: image repository (default $SLIPWAY_REGISTRY/<owner>/<name>)")
	noSecret := fs.Bool("no-secret", false, "add: use the forge's global webhook secret instead of one of its own")
	forge := fs.String("forge", "", "rotate-secret: the forge, when the name exists on two")
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	sub := args[0]
	var method, path string
	var body map[string]any
	switch sub {
	case "list":
		if len(pos) != 0 {
			return usageErrorf("repo list takes no arguments")
		}
		method, path = http.MethodGet, "/api/v1/repos"
	case "add":
		if len(pos) != 2 {
			return usageErrorf("repo add needs FORGE and OWNER/NAME, e.g. slipway repo add github acme/app")
		}
		owner, name, err := splitRepo(pos[1])
		if err != nil {
			return err
		}
		body = map[string]any{"forge": pos[0], "owner": owner, "name": name, "generate_webhook_secret": !*noSecret}
		if *cloneURL != "" {
			body["clone_url"] = *cloneURL
		}
		if *image != "" {
			body["image"] = *image
		}
		method, path = http.MethodPost, "/api/v1/repos"
	case "rotate-secret":
		if len(pos) != 1 {
			return usageErrorf("repo rotate-secret needs OWNER/NAME")
		}
		owner, name, err := splitRepo(pos[0])
		if err != nil {
			return err
		}
		body = map[string]any{"generate_webhook_secret": true}
		method, path = http.MethodPatch, "/api/v1/repos/"+url.PathEscape(owner)+"/"+url.PathEscape(name)
		if *forge != "" {
			path += "?forge=" + url.QueryEscape(*forge)
		}
	default:
		fmt.Fprint(stderr, repoUsage)
		return usageErrorf("unknown repo subcommand %q: add, list or rotate-secret", sub)
	}
	c, err := client()
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.do(ctx, method, path, body, &raw); err != nil {
		return err
	}
	if *asJSON {
		_, err := fmt.Fprintln(stdout, string(raw))
		return err
	}
	if sub == "list" {
		var list struct {
			Repos []slipway.Repo `json:"repos"`
		}
		if err := json.Unmarshal(raw, &list); err != nil {
			return fmt.Errorf("decoding the repositories: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FORGE\tREPOSITORY\tOWN SECRET\tIMAGE\tCLONE URL")
		for _, r := range list.Repos {
			fmt.Fprintf(tw, "%s\t%s\t%t\t%s\t%s\n", r.Forge, r.FullName(), r.HasWebhookSecret, r.Image, r.CloneURL)
		}
		return tw.Flush()
	}
	var a repoAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		return fmt.Errorf("decoding the repository: %w", err)
	}
	fmt.Fprintf(stdout, "%s %s on %s: image %s, cloned from %s\n", map[string]string{"add": "registered", "rotate-secret": "new secret for"}[sub],
		a.FullName(), a.Forge, a.Image, a.CloneURL)
	fmt.Fprintf(stdout, "webhook URL:    %s\n", a.WebhookURL)
	if a.WebhookSecret != "" {
		fmt.Fprintf(stdout, "webhook secret: %s\n", a.WebhookSecret)
		fmt.Fprintln(stdout, "Give the forge's webhook this URL and secret now: slipway shows the secret only this once.")
	} else {
		fmt.Fprintln(stdout, "webhook secret: the forge's global secret (SLIPWAY_GITHUB_WEBHOOK_SECRET, SLIPWAY_GITLAB_WEBHOOK_TOKEN or SLIPWAY_GITEA_WEBHOOK_SECRET)")
	}
	return nil
}

// splitRepo splits OWNER/NAME at its last "/" (a GitLab owner may hold
// subgroups).
func splitRepo(s string) (owner, name string, err error) {
	if owner, name = slipway.SplitRepo(s); owner == "" || name == "" {
		return "", "", usageErrorf("%q is not OWNER/NAME", s)
	}
	return owner, name, nil
}
