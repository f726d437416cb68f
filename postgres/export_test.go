package postgres

// SQLEnqueue is sqlEnqueue, for the plan test.
var SQLEnqueue = sqlEnqueue
