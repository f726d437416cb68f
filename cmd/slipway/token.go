package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/postgres"
)

const tokenUsage = `usage: slipway token create --name NAME --role viewer|developer|release-manager|admin
       slipway token list
       slipway token delete ID

Manages API tokens directly in the database (SLIPWAY_DATABASE_URL). create
prints the new token on stdout: it is shown this once and stored only as its
SHA-256.
`

// runToken is `slipway token create|list|delete`.
func runToken(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, tokenUsage)
		return usageErrorf("token needs create, list or delete")
	}
	fs := flag.NewFlagSet("token "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, tokenUsage); fs.PrintDefaults() }
	var name, role *string
	switch args[0] {
	case "create":
		name = fs.String("name", "", "name of the token, shown in audit rows (required)")
		role = fs.String("role", "", "viewer, developer, release-manager or admin (required)")
	case "list", "delete":
	default:
		fmt.Fprint(stderr, tokenUsage)
		return usageErrorf("unknown token command %q", args[0])
	}
	if err := fs.Parse(args[1:]); err != nil {
		return usageErrorf("%v", err)
	}
	var id int64
	switch args[0] {
	case "create":
		if *name == "" || *role == "" || fs.NArg() != 0 {
			fs.Usage()
			return usageErrorf("token create needs --name and --role")
		}
		if !slipway.Role(*role).Valid() {
			return usageErrorf("--role %q is not viewer, developer, release-manager or admin", *role)
		}
		if !slipway.ValidTokenName(*name) {
			return usageErrorf("--name %q: use 1 to 100 letters, digits and _.@-, starting with a letter or digit", *name)
		}
	case "list":
		if fs.NArg() != 0 {
			return usageErrorf("token list takes no arguments")
		}
	case "delete":
		var err error
		if fs.NArg() == 1 {
			id, err = strconv.ParseInt(fs.Arg(0), 10, 64)
		}
		if fs.NArg() != 1 || err != nil || id < 1 {
			return usageErrorf("token delete needs one token id (see token list)")
		}
	}
	dbURL := getenv("SLIPWAY_DATABASE_URL")
	if dbURL == "" {
		return usageErrorf("SLIPWAY_DATABASE_URL: is required")
	}
	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.SchemaCurrent(ctx); err != nil {
		return err
	}
	tokens := postgres.NewTokenService(db)
	switch args[0] {
	case "create":
		secret := slipway.NewTokenSecret()
		t, err := tokens.CreateToken(ctx, *name, slipway.Role(*role), secret)
		if err != nil {
			return clientError(err)
		}
		fmt.Fprintf(stderr, "Created token %d %q with role %s. It is shown only now:\n", t.ID, t.Name, t.Role)
		_, err = fmt.Fprintln(stdout, secret)
		return err
	case "list":
		list, err := tokens.FindTokens(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tROLE\tCREATED\tLAST USED")
		for _, t := range list {
			used := "never"
			if t.LastUsedAt != nil {
				used = t.LastUsedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, t.CreatedAt.Format(time.RFC3339), used)
		}
		return tw.Flush()
	default:
		if err := tokens.DeleteToken(ctx, id); err != nil {
			return clientError(err)
		}
		fmt.Fprintf(stderr, "Deleted token %d.\n", id)
		return nil
	}
}

// clientError gives a domain error the exit code a script can branch on.
func clientError(err error) error {
	switch slipway.ErrorCode(err) {
	case slipway.ECONFLICT:
		return &exitError{code: exitRefused, err: fmt.Errorf("%s", slipway.ErrorMessage(err))}
	case slipway.ENOTFOUND:
		return &exitError{code: exitNotFound, err: fmt.Errorf("%s", slipway.ErrorMessage(err))}
	case slipway.EINVALID:
		return &exitError{code: exitBadInput, err: fmt.Errorf("%s", slipway.ErrorMessage(err))}
	}
	return err
}
