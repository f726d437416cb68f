package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
)

func TestTestCases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	tc := postgres.NewTestCaseService(b.db)
	res, err := b.builds.EnqueueTrigger(ctx, newTrigger(triggerOpts{Delivery: "tc"}), "reg/acme/app")
	require.NoError(t, err)
	id := res.Build.ID

	got, err := tc.FindTestCases(ctx, id)
	require.NoError(t, err)
	require.NotNil(t, got)
	require.Empty(t, got)

	msg := strings.Repeat("x", slipway.MaxCaseMessage)
	amd := []slipway.TestCase{
		{Name: "test_publish", Classname: "tests.mqtt", TimeSeconds: 0.25, Status: slipway.CasePassed},
		{Name: "test_subscribe", Classname: "tests.mqtt", TimeSeconds: 1.5, Status: slipway.CaseFailed, Message: msg},
		{Name: "test_skip", Status: slipway.CaseSkipped, Message: "needs arm64"},
		{Name: "test_error", Status: slipway.CaseError, Message: "refused"},
		// Test and Platform come from the arguments, not the case.
		{Test: "other", Platform: "linux/s390x", Name: "test_z", Status: slipway.CasePassed},
	}
	require.NoError(t, tc.ReplaceTestCases(ctx, id, "pytest", "linux/amd64", amd))
	require.NoError(t, tc.ReplaceTestCases(ctx, id, "pytest", "linux/arm64", amd[:1]))
	got, err = tc.FindTestCases(ctx, id)
	require.NoError(t, err)
	var order []string
	for _, c := range got {
		require.Equal(t, "pytest", c.Test)
		order = append(order, c.Platform+" "+c.Name+" "+string(c.Status))
	}
	require.Equal(t, []string{
		"linux/amd64 test_subscribe failed", "linux/amd64 test_error error",
		"linux/amd64 test_skip skipped",
		"linux/amd64 test_publish passed", "linux/amd64 test_z passed", "linux/arm64 test_publish passed",
	}, order, "failures first, then skips, then passes; report order within")
	require.Equal(t, msg, got[0].Message)
	require.Equal(t, 1.5, got[0].TimeSeconds)
	require.Equal(t, "tests.mqtt", got[0].Classname)

	// A second attempt replaces the cases of its test and platform only.
	require.NoError(t, tc.ReplaceTestCases(ctx, id, "pytest", "linux/amd64", amd[:1]))
	got, err = tc.FindTestCases(ctx, id)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.NoError(t, tc.ReplaceTestCases(ctx, id, "pytest", "linux/amd64", nil))
	got, err = tc.FindTestCases(ctx, id)
	require.NoError(t, err)
	require.Len(t, got, 1)

	err = tc.ReplaceTestCases(ctx, id+1000, "pytest", "linux/amd64", amd)
	require.Equal(t, slipway.ENOTFOUND, slipway.ErrorCode(err), "%v", err)

	// A bad row (a message over 4 KiB) fails the whole replacement.
	err = tc.ReplaceTestCases(ctx, id, "pytest", "linux/arm64", []slipway.TestCase{{Name: "ok", Status: slipway.CasePassed}, {Name: "big", Status: slipway.CaseFailed, Message: msg + "y"}})
	require.Error(t, err)
	got, err = tc.FindTestCases(ctx, id)
	require.NoError(t, err)
	require.Len(t, got, 1, "the arm64 case of before is kept")

	// 10,000 cases go in one statement.
	many := make([]slipway.TestCase, 10000)
	for i := range many {
		many[i] = slipway.TestCase{Name: "case", Status: slipway.CasePassed, TimeSeconds: float64(i)}
	}
	require.NoError(t, tc.ReplaceTestCases(ctx, id, "load", "linux/amd64", many))
	got, err = tc.FindTestCases(ctx, id)
	require.NoError(t, err)
	require.Len(t, got, 10001)
}
