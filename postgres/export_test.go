package postgres

// SQLJobInsert is sqlJobInsert, for the plan test.
var SQLJobInsert = sqlJobInsert
