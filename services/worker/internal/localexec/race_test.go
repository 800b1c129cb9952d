//go:build race

package localexec_test

// raceDetector tells tests the race detector runs: it makes sync.Pool drop
// items at random, and programs allocate more.
const raceDetector = true
