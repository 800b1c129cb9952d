//go:build !race

package localexec_test

const raceDetector = false
