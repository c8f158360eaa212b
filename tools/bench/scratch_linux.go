package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// fsTopdirFlag is FS_TOPDIR_FL (chattr +T): the folder is the top of a directory hierarchy,
// and ext4 spreads the folders made in it over the disk's block groups.
const fsTopdirFlag = 0x00020000

// spreadSubfolders marks dir a top of directory hierarchy (see scratchRoot). A file system
// other than ext2/3/4 refuses, and nothing changes.
func spreadSubfolders(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	if flags&fsTopdirFlag != 0 {
		return nil
	}
	return unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, flags|fsTopdirFlag)
}
