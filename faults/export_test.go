package faults

// Clone is the upstream's copy of a rule, for specs.
var Clone = clone
