package slipway

import (
	"strconv"
	"strings"
)

// PullRequest is the pull request (a merge request on GitLab) a build is for.
type PullRequest struct {
	Number int    `json:"number"`
	Title  string `json:"title"`
	Author string `json:"author"`
	URL    string `json:"url"` // the forge's web page of the pull request
	// Fork tells that the head branch lives in another repository than the base.
	Fork bool `json:"fork"`
	// Base is the branch it would merge into ("" when the forge did not say).
	Base string `json:"base,omitempty"`
}

// ForkImageSuffix is added to a repository's image for the builds of pull
// requests from forks: registry/acme/app-pr, so untrusted code never lands in
// the repository release images are promoted from.
const ForkImageSuffix = "-pr"

// PullRequestRef is the ref under which the base repository of forge serves the
// head commit of pull request n: refs/merge-requests/N/head on GitLab,
// refs/pull/N/head on GitHub, Gitea and Forgejo.
func PullRequestRef(forge string, n int) string {
	if forge == ForgeGitLab {
		return "refs/merge-requests/" + strconv.Itoa(n) + "/head"
	}
	return "refs/pull/" + strconv.Itoa(n) + "/head"
}

// PullRequestNumber returns N of a pull-request ref (refs/pull/N/head or
// refs/merge-requests/N/head), and false for every other ref.
func PullRequestNumber(ref string) (int, bool) {
	rest, ok := strings.CutPrefix(ref, "refs/pull/")
	if !ok {
		rest, ok = strings.CutPrefix(ref, "refs/merge-requests/")
	}
	if !ok {
		return 0, false
	}
	num, ok := strings.CutSuffix(rest, "/head")
	if !ok || num == "" || num[0] == '0' || len(num) > 9 {
		return 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// PullRequestTags decides the tags a build of ref may add once its tests passed,
// when ref is a pull-request ref: only "pr-N", whatever .slipway.yml's tags
// say, so a pull request never moves a branch, version or latest tag (the
// "sha-…" tag is pushed by the build itself). ok is false for other refs,
// whose tags the repository's templates decide.
func PullRequestTags(ref string) (tags []string, ok bool) {
	n, ok := PullRequestNumber(ref)
	if !ok {
		return nil, false
	}
	return []string{"pr-" + strconv.Itoa(n)}, true
}
