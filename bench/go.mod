module github.com/clusterflock/clusterflock/bench

go 1.26.0

require github.com/clusterflock/clusterflock v0.0.0

require (
	github.com/libp2p/go-reuseport v0.4.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

replace github.com/clusterflock/clusterflock => ../
