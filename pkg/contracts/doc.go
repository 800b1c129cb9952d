// Package contracts is rdev's wire contract: the messages every service and
// every external NATS subscriber exchanges, the subjects they travel on,
// the JetStream streams and buckets that hold them, and every request and
// reply body of the HTTP API and its Server-Sent Events.
//
// It depends on the standard library only, so a subscriber can import it
// without pulling in any service. Every message carries a version field
// ("v"); a reader must ignore fields it does not know and refuse versions
// newer than it understands. HTTP bodies carry no "v": the API's path
// (/v1/...) versions them, with the same rule for unknown fields. JSON
// Schemas generated from these types are committed under schema/ for
// readers in other languages.
//
// One name means one thing on the wire:
//   - "id" is the identity of the object that holds it (Job.ID is the job,
//     Batch.ID the batch, Key.ID the key); "job_id", "stream_id",
//     "batch_id" refer from one object to another. A job is thus "id" in
//     Job and "job_id" everywhere else; both names stay, as clients read
//     them.
//   - "seq" is a line's number in its stream (OutputLine.Seq, from 1) and
//     a stored message's JetStream sequence only in DeadLetter.Seq; the
//     SSE event id (Last-Event-ID) is the stream's JetStream sequence and
//     is never called seq on the wire.
package contracts

// Version is the version of every message defined here. It changes only when
// a field changes meaning or disappears; adding an optional field keeps it.
const Version = 1

// OutputLineVersion is the version of OutputLine. It is 2 since lines are
// published to SubjectOutput, which carries the project (version 1 lines
// are on SubjectOutputLegacy); the line's fields are those of version 1.
// Readers accept both.
const OutputLineVersion = 2
