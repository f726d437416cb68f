package postgres

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
)

// TestIntakeTake: a batch takes the oldest calls, never two of one ref or
// one delivery id nor one of a ref or delivery id in flight, and a call left
// behind is not overtaken by a later call of its ref.
func TestIntakeTake(t *testing.T) {
	call := func(delivery, ref string) *intakeCall {
		tr := slipway.Trigger{Forge: "github", Owner: "Acme", Name: "App", Ref: ref, DeliveryID: delivery}
		return &intakeCall{keys: intakeKeys(tr)}
	}
	var in intake
	a, b, c, d, e := call("1", "refs/heads/main"), call("2", "refs/heads/main"), call("3", "refs/heads/dev"),
		call("1", "refs/heads/other"), call("5", "refs/heads/x")
	in.queue = []*intakeCall{a, b, c, d, e}
	require.Equal(t, []*intakeCall{a, c, e}, in.take())
	require.Equal(t, []*intakeCall{b, d}, in.queue, "left behind, in order")

	f := call("6", "refs/heads/dev")
	in.queue = append(in.queue, f)
	require.Empty(t, in.take(), "main, delivery 1 and dev are in flight")
	require.Len(t, in.queue, 3)

	delete(in.busy, a.keys[0])
	delete(in.busy, a.keys[1])
	require.Equal(t, []*intakeCall{b, d}, in.take(), "a's ref and delivery id are free again")
	require.Equal(t, []*intakeCall{f}, in.queue)

	in = intake{}
	for i := range intakeBatchMax + 3 {
		in.queue = append(in.queue, call(fmt.Sprint("d", i), fmt.Sprint("refs/heads/b", i)))
	}
	require.Len(t, in.take(), intakeBatchMax)
	require.Len(t, in.queue, 3)
}
