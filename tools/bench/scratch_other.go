//go:build !linux

package main

// spreadSubfolders does nothing here: the block-group placement it asks for is ext4's.
func spreadSubfolders(string) error { return nil }
