// Package deploytest checks slipway's deployment descriptors: the Helm chart in
// deploy/helm/slipway and the top-level docker-compose.yml. It is its own
// module so that Helm, the Kubernetes API types and compose-go stay out of
// slipway's go.mod; scripts/test.sh runs it after slipway's own tests.
//
// Both descriptors are compared with deploy/settings.txt, which a test in
// cmd/slipway keeps equal to the settings slipway reads.
package deploytest
