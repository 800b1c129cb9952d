//go:build race

package streamer_test

// The race detector deepens every frame: stack sizes are not measured.
const raceEnabled = true
