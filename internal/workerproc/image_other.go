//go:build unix && !linux

package workerproc

// closeImage: off Linux no image is passed.
func closeImage() {}

// nameImage: off Linux the worker runs under its own name.
func nameImage(int) {}
