package server

import (
	"context"
	"errors"
	"strings"
	"time"

	"nectar/plugins"
	"nectar/targets"
)

// sourceExpiry is how long a presigned source URL handed to a plugin stays valid: long enough
// to stream a large data set, short enough not to matter if a task logs it.
const sourceExpiry = time.Hour

// storeHost answers plugins that read a source object (ctx.Source): the plugin never holds the
// store's credentials; it gets a local file (the local store) or a presigned URL (S3, MinIO)
// for one object, and errors that name the path but not the store.
type storeHost struct{ store targets.Store }

var _ plugins.Host = storeHost{}

func (h storeHost) Source(ctx context.Context, req *plugins.SourceRequest) (*plugins.SourceResponse, error) {
	fail := func(msg string) (*plugins.SourceResponse, error) { return &plugins.SourceResponse{Error: msg}, nil }
	if err := checkSourcePath(req.Path); err != nil {
		return fail(err.Error())
	}
	info, err := h.store.Stat(ctx, req.Path)
	switch {
	case errors.Is(err, targets.ErrNotExist):
		return fail("no object at this path in the store (put source data there first, as make demo-data does)")
	case err != nil:
		return fail("the target store is unavailable; see the server log")
	}
	if lp, ok := h.store.(targets.LocalPather); ok {
		p, err := lp.LocalPath(req.Path)
		if err != nil {
			return fail(err.Error())
		}
		return &plugins.SourceResponse{LocalPath: p, Size: info.Size}, nil
	}
	if ps, ok := h.store.(targets.Presigner); ok {
		u, err := ps.PresignGet(ctx, req.Path, sourceExpiry)
		if err != nil {
			return fail("the target store could not sign a read; see the server log")
		}
		return &plugins.SourceResponse{URL: u, Size: info.Size}, nil
	}
	return fail("this target store cannot hand out reads")
}

// checkSourcePath refuses keys that could escape the store and the store's own files (a
// segment starting with ".", such as .signing-key).
func checkSourcePath(p string) error {
	if err := targets.CheckKey(p); err != nil {
		return errors.New("not a clean relative path")
	}
	for _, seg := range strings.Split(p, "/") {
		if strings.HasPrefix(seg, ".") {
			return errors.New("paths with a segment starting with '.' are the store's own")
		}
	}
	return nil
}

// CheckDataPath accepts a path where data may be put by hand (nectar put, make demo-data): a
// source path outside the server's own areas (chains/ holds task files, schedules/ their state).
func CheckDataPath(p string) error {
	if err := checkSourcePath(p); err != nil {
		return err
	}
	if strings.HasPrefix(p, "chains/") || strings.HasPrefix(p, "schedules/") {
		return errors.New("chains/ and schedules/ are the server's own; put data elsewhere, such as datasets/")
	}
	return nil
}
