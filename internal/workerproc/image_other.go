//go:build unix && !linux

package workerproc

// closeImage: off Linux no image is passed.
func closeImage() {}
