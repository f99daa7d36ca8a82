module github.com/clusterflock/clusterflock

go 1.26.0

require (
	github.com/libp2p/go-reuseport v0.4.0
	golang.org/x/sys v0.50.0
)

require github.com/google/go-cmp v0.7.0
