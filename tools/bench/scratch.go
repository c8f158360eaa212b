package main

import (
	"fmt"
	"os"
)

// scratchRoot holds every folder the benchmarks write (their servers' targets): beside the
// project, as the default target (local_targets/) is, not in $TMPDIR, and removed as a whole
// when the bench ends, not row by row.
//
// The reason is this machine's disk. On ext4 without a journal the kernel does not reuse an
// inode deleted less than a minute ago (six while its inode table block is not written back),
// and looks at every such inode of a block group again each time it creates a file there: files
// deleted near a target slow every file its tasks create, for minutes. Measured here: a
// 1,000-leaf fan-in took 0.26 s, and 0.55 s right after 15,000 files were deleted beside it.
// Builds and tests delete thousands in $TMPDIR; one row's cleanup would slow the next row, and
// one bench's (the 50,000-leaf row leaves 150,000 files) the next bench: a 5,000-leaf fan-in
// took 3.1 s right after another bench, against 1.4 s. So the scratch folder is marked a top
// of directory hierarchy (ext4's chattr +T, see scratch_linux.go): the kernel then places each
// bench's folder, and every file under it, in a block group of its own choosing, away from the
// last one's. The leaf floor row shows the file system's state of the moment.
var scratchRoot string

// scratch makes a fresh folder under scratchRoot.
func scratch(prefix string) (string, error) { return os.MkdirTemp(scratchRoot, prefix) }

// makeScratch makes this bench's scratch root under parent; remove deletes it, and parent
// too when no other bench uses it.
func makeScratch(parent string) (remove func(), err error) {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	if err := spreadSubfolders(parent); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %s stays where its parent is (%v): a bench right after another may find files deleted nearby\n", parent, err)
	}
	root, err := os.MkdirTemp(parent, "run-")
	if err != nil {
		return nil, err
	}
	scratchRoot = root
	return func() {
		os.RemoveAll(root)
		os.Remove(parent)
	}, nil
}
