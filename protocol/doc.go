// Package protocol is the wire contract of Polos: the one place that names
// every stream, KV bucket, object store, subject, queue group and consumer,
// computes the run partition, provisions all of them, defines the task
// format, the workflow adverts, and the NATS permission sets of each role.
//
// Everything here is public and versioned with docs/subjects.md: other
// systems subscribe to these subjects with any NATS client, and operators
// of a NATS cluster write their server configuration from Permissions. A
// change to a name, a subject's shape or the partition hash is a breaking
// change of the wire, never a refactoring.
//
// Subjects (<ns> is the namespace, <p> the run partition):
//
//	polos.<ns>.run.<p>.<runID>.<event>   POLOS_RUNS_<p>  a run's durable history
//	polos.<ns>.task.<queue>              POLOS_TASKS     "advance run X" tasks (work queue)
//	polos.<ns>.sched.<runID>.<key>       POLOS_TASKS     durable timers
//	polos.<ns>.event.<topic>             POLOS_EVENTS    topics WaitForEvent waits on
//	polos.<ns>.sandbox.<provider>.<op>   (request/reply) sandbox operations
//	polos.<ns>.stream.<runID>            (core NATS)     live token deltas
//	polos.<ns>.ctl.<identity>.<op>       (request/reply) operator requests to polosd
//
// The package imports nothing of Polos above perr, so every layer
// may use it.
package protocol
