module github.com/clusterflock/clusterflock/bench

go 1.26.0

require github.com/clusterflock/clusterflock v0.0.0

replace github.com/clusterflock/clusterflock => ../
