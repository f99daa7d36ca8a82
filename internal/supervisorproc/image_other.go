//go:build unix && !linux

package supervisorproc

import "os"

// images: off Linux every worker is executed from the binary on disk.
type images struct{ path string }

func newImages(path string) (*images, error)                 { return &images{path: path}, nil }
func (im *images) pathFor(gen int) (string, *os.File, error) { return im.path, nil, nil }
func (im *images) close()                                    {}
