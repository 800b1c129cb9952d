// Package contracts is rdev's wire contract: the messages every service and
// every external NATS subscriber exchanges, the subjects they travel on and
// the JetStream streams and buckets that hold them.
//
// It depends on the standard library only, so a subscriber can import it
// without pulling in any service. Every message carries a version field
// ("v"); a reader must ignore fields it does not know and refuse versions
// newer than it understands. JSON Schemas generated from these types are
// committed under schema/ for readers in other languages.
package contracts

// Version is the version of every message defined here. It changes only when
// a field changes meaning or disappears; adding an optional field keeps it.
const Version = 1
