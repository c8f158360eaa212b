package local

import "syscall"

// A path component that is a file (key a/b when a is an object) is "not found" too.
var syscallENOTDIR = syscall.ENOTDIR
