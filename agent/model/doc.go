// Package model holds the host agent's vocabulary: a VM's spec and record,
// its desired and observed states, which user operation is allowed in which
// state, the events that form the ledger, and the host capacity arithmetic.
// It is pure: no I/O, no clock, so the daemon, the store, policies and cost
// all agree on one meaning of each state.
package model
