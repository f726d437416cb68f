package slipway

import (
	"slices"
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
	// AuthorAssociation is how the author is associated with the base
	// repository, as GitHub's signed pull_request payload says
	// (pull_request.author_association: OWNER, MEMBER, COLLABORATOR,
	// CONTRIBUTOR, FIRST_TIME_CONTRIBUTOR, FIRST_TIMER, MANNEQUIN, NONE); ""
	// from GitLab, Gitea and Forgejo, whose payloads carry no such field.
	AuthorAssociation string `json:"author_association,omitempty"`
}

// The author associations a repository may trust (Repo.TrustedAssociations):
// GitHub's values for the repository's owner, a member of its organization
// and a collaborator invited to it. The others (CONTRIBUTOR,
// FIRST_TIME_CONTRIBUTOR, FIRST_TIMER, MANNEQUIN, NONE) say nothing about
// write access and are refused as a setting.
const (
	AssociationOwner        = "OWNER"
	AssociationMember       = "MEMBER"
	AssociationCollaborator = "COLLABORATOR"
)

// TrustableAssociations lists the values Repo.TrustedAssociations may hold.
var TrustableAssociations = []string{AssociationOwner, AssociationMember, AssociationCollaborator}

// ValidateTrustedAssociations checks the trusted_associations setting of a
// repository on forge ("" while the forge is not known): each entry one of
// TrustableAssociations (upper case, as GitHub sends them), none twice, and
// none at all for GitLab, Gitea and Forgejo, whose pull-request payloads name
// no association (a setting that could never apply would only mislead).
// field names the list in the EINVALID error.
func ValidateTrustedAssociations(field, forge string, list []string) error {
	if len(list) > 0 && forge != "" && forge != ForgeGitHub {
		return Errorf(EINVALID, "%s must be empty for a %s repository: only GitHub's pull_request payload names the author's association (author_association), so a fork's pull request on %s always waits for a developer's approval.",
			field, forge, forge)
	}
	for i, a := range list {
		if !slices.Contains(TrustableAssociations, a) {
			return Errorf(EINVALID, "%s[%d] %q is not an author association slipway can trust; use %s (GitHub's author_association values).",
				field, i, Truncate(a, 100), strings.Join(TrustableAssociations, ", "))
		}
		if slices.Contains(list[:i], a) {
			return Errorf(EINVALID, "%s lists %s twice.", field, a)
		}
	}
	return nil
}

// ForkTrusted tells whether a fork's pull request may run without a
// developer's approval: pr comes from a fork and its author's association,
// as the forge's signed payload gave it, is one the repository trusts
// (trusted: Repo.TrustedAssociations). The build still runs as a fork's:
// without build secrets or the integration webhook, pushed to the image
// with ForkImageSuffix. false for a pull request that is not a fork's (it
// needs no approval) and for an empty association.
func ForkTrusted(pr *PullRequest, trusted []string) bool {
	return pr != nil && pr.Fork && pr.AuthorAssociation != "" && slices.Contains(trusted, pr.AuthorAssociation)
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
