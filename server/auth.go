package server

import (
	"crypto/subtle"
	"strings"

	"github.com/labstack/echo/v4"
)

// requireToken guards the routes that start or stop work when NECTAR_API_TOKENS is set. Status
// and download URLs stay capability URLs: their signature is their authorization.
func (s *Server) requireToken(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if len(s.cfg.APITokens) == 0 {
			return next(c)
		}
		auth := c.Request().Header.Get(echo.HeaderAuthorization)
		got, ok := strings.CutPrefix(auth, "Bearer ")
		if ok && validToken(s.cfg.APITokens, got) {
			return next(c)
		}
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="nectar"`)
		if auth == "" {
			return newError(ErrUnauthorized, "this server needs a bearer token: send Authorization: Bearer <token>")
		}
		return newError(ErrUnauthorized, "the bearer token is not valid")
	}
}

// validToken compares in constant time against every token, so timing tells nothing.
func validToken(tokens []string, got string) bool {
	ok := 0
	for _, t := range tokens {
		ok |= subtle.ConstantTimeCompare([]byte(t), []byte(got))
	}
	return ok == 1
}
