package main

import (
	"go/ast"
	"go/constant"
	"go/token"
	"go/types"
	"regexp"
	"strings"

	"nectar/chains"
	"nectar/chains/cron"
)

// Schedule is a task's declared schedule (chains.Schedule), read from the literal its Schedule
// method returns.
type Schedule struct {
	Cron, TimeZone, Start string
	CatchUp               bool
	Param                 string // the time.Time parameter that receives the interval start
}

// analyzeSchedule reads and checks t's Schedule method, if it has one. The method must return
// a chains.Schedule literal of constants: the server needs the schedule without running user
// code, and a mistake in it must fail `make generate` at its line, not the first tick.
func (a *analyzer) analyzeSchedule(t *Task, named *types.Named) {
	obj, _, _ := types.LookupFieldOrMethod(types.NewPointer(named), true, a.pkg.Types, "Schedule")
	fn, _ := obj.(*types.Func)
	if fn == nil { // no such method (a parameter field may be called Schedule)
		return
	}
	sig := fn.Type().(*types.Signature)
	if sig.Params().Len() != 0 || sig.Results().Len() != 1 || sig.Results().At(0).Type().String() != chainsPkg+".Schedule" {
		a.errorf(obj.Pos(), "%s: Schedule has the wrong signature: want func() chains.Schedule", t.Name)
		return
	}
	decl := a.funcDecl(fn)
	if decl == nil || decl.Body == nil {
		a.errorf(obj.Pos(), "%s: Schedule must be declared in the chain's package", t.Name)
		return
	}
	var lit *ast.CompositeLit
	if len(decl.Body.List) == 1 {
		if ret, ok := decl.Body.List[0].(*ast.ReturnStmt); ok && len(ret.Results) == 1 {
			lit, _ = ast.Unparen(ret.Results[0]).(*ast.CompositeLit)
		}
	}
	if lit == nil {
		at := decl.Body.Pos()
		if len(decl.Body.List) > 0 {
			at = decl.Body.List[0].Pos()
		}
		a.errorf(at, "%s: Schedule must be one return of a chains.Schedule{...} literal of constants (the generator reads it)", t.Name)
		return
	}
	s := &Schedule{}
	strField := map[string]*string{"Cron": &s.Cron, "TimeZone": &s.TimeZone, "Start": &s.Start, "Param": &s.Param}
	pos := map[string]token.Pos{}
	ok := true
	for _, el := range lit.Elts {
		kv, isKV := el.(*ast.KeyValueExpr)
		key, isIdent := ast.Expr(nil), false
		if isKV {
			key = kv.Key
			_, isIdent = key.(*ast.Ident)
		}
		if !isKV || !isIdent {
			a.errorf(el.Pos(), "%s: Schedule fields must be named (Cron: \"@daily\")", t.Name)
			ok = false
			continue
		}
		field := key.(*ast.Ident).Name
		pos[field] = kv.Value.Pos()
		val := a.pkg.TypesInfo.Types[kv.Value].Value
		if val == nil {
			a.errorf(kv.Value.Pos(), "%s: Schedule.%s must be a constant (the generator reads it)", t.Name, field)
			ok = false
			continue
		}
		switch {
		case field == "CatchUp" && val.Kind() == constant.Bool:
			s.CatchUp = constant.BoolVal(val)
		case strField[field] != nil && val.Kind() == constant.String:
			*strField[field] = constant.StringVal(val)
		}
	}
	if !ok {
		return
	}
	at := func(field string) token.Pos {
		if p, ok := pos[field]; ok {
			return p
		}
		return lit.Pos()
	}
	if strings.TrimSpace(s.Cron) == "" {
		a.errorf(at("Cron"), "%s: Schedule needs a Cron expression (such as \"@daily\" or \"0 6 * * 1-5\")", t.Name)
		return
	}
	loc, err := cron.Location(s.TimeZone)
	if err != nil {
		a.errorf(at("TimeZone"), "%s: Schedule: %v", t.Name, err)
		return
	}
	start, err := cron.ParseStart(s.Start, loc)
	if err != nil {
		a.errorf(at("Start"), "%s: Schedule: %v", t.Name, err)
		return
	}
	if _, err := cron.ParseAnchored(s.Cron, loc, start); err != nil {
		a.errorf(at("Cron"), "%s: Schedule: %v", t.Name, err)
		return
	}
	var times []string
	for _, p := range t.Params {
		if p.Kind == KindTime {
			times = append(times, p.Name)
		}
	}
	switch {
	case s.Param != "":
		found := false
		for _, p := range t.Params {
			found = found || p.Name == s.Param && p.Kind == KindTime
		}
		if !found {
			a.errorf(at("Param"), "%s: Schedule.Param %q is not a time.Time parameter of the task (it has: %s)", t.Name, s.Param, orNone(times))
			return
		}
	case len(times) == 1:
		s.Param = times[0]
	case len(times) == 0:
		a.errorf(obj.Pos(), "%s: a scheduled task needs a time.Time parameter to receive the start of each interval (so each interval has its own key)", t.Name)
		return
	default:
		a.errorf(at("Param"), "%s: the task has several time.Time parameters (%s): name the one that receives the interval start in Schedule.Param", t.Name, strings.Join(times, ", "))
		return
	}
	for _, p := range t.Params {
		if p.Required && p.Name != s.Param {
			a.errorf(p.pos, "%s.%s: parameter %s is required, but its schedule gives only %s: give %s a default", t.Name, p.Field, p.Name, s.Param, p.Name)
			return
		}
	}
	t.Schedule = s
}

// funcDecl finds the declaration of a method of the package being analyzed.
func (a *analyzer) funcDecl(fn *types.Func) *ast.FuncDecl {
	for _, f := range a.pkg.Syntax {
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Pos() == fn.Pos() {
				return fd
			}
		}
	}
	return nil
}

func orNone(ss []string) string {
	if len(ss) == 0 {
		return "none"
	}
	return strings.Join(ss, ", ")
}

// analyzeConnections reads t's Connections method, if it has one: a []string literal of
// constant names, each a valid connection name, so a typo fails `make generate`, not a run.
func (a *analyzer) analyzeConnections(t *Task, named *types.Named) {
	ret, pos, ok := a.oneReturn(t, named, "Connections", "[]string", "func() []string")
	if !ok {
		return
	}
	lit, _ := ret.(*ast.CompositeLit)
	if lit == nil {
		a.errorf(pos, "%s: Connections must be one return of a []string{...} literal of constants (the generator reads it)", t.Name)
		return
	}
	seen := map[string]bool{}
	for _, el := range lit.Elts {
		val := a.pkg.TypesInfo.Types[el].Value
		if val == nil || val.Kind() != constant.String {
			a.errorf(el.Pos(), "%s: Connections: each name must be a string constant", t.Name)
			return
		}
		name := constant.StringVal(val)
		if !connectionName.MatchString(name) {
			a.errorf(el.Pos(), "%s: Connections: %q is not a connection name (lower case letters, digits and _, starting with a letter; the server reads NECTAR_CONN_<NAME>)", t.Name, name)
			return
		}
		if !seen[name] {
			seen[name] = true
			t.Connections = append(t.Connections, name)
		}
	}
}

// analyzeQueue reads t's Queue method, if it has one: one return of a string constant that
// names a queue (chains.Queuer), so workers know at start which queues the chains name.
func (a *analyzer) analyzeQueue(t *Task, named *types.Named) {
	ret, pos, ok := a.oneReturn(t, named, "Queue", "string", "func() string")
	if !ok {
		return
	}
	var val constant.Value
	if ret != nil {
		val = a.pkg.TypesInfo.Types[ret].Value
	}
	if val == nil || val.Kind() != constant.String {
		a.errorf(pos, "%s: Queue must be one return of a string constant (the generator reads it)", t.Name)
		return
	}
	name := constant.StringVal(val)
	if err := chains.CheckQueueName(name); err != nil {
		a.errorf(ret.Pos(), "%s: Queue: %v", t.Name, err)
		return
	}
	t.Queue = name
}

// oneReturn finds t's method of that name with no parameters and one result of type result,
// and the expression of its body's single return statement (nil if the body is anything
// else); pos is where to report a bad body. ok is false when t has no such method, or when
// its signature is wrong, which is reported here.
func (a *analyzer) oneReturn(t *Task, named *types.Named, method, result, want string) (ret ast.Expr, pos token.Pos, ok bool) {
	obj, _, _ := types.LookupFieldOrMethod(types.NewPointer(named), true, a.pkg.Types, method)
	fn, _ := obj.(*types.Func)
	if fn == nil {
		return nil, 0, false
	}
	sig := fn.Type().(*types.Signature)
	if sig.Params().Len() != 0 || sig.Results().Len() != 1 || sig.Results().At(0).Type().String() != result {
		a.errorf(obj.Pos(), "%s: %s has the wrong signature: want %s", t.Name, method, want)
		return nil, 0, false
	}
	decl := a.funcDecl(fn)
	if decl != nil && decl.Body != nil && len(decl.Body.List) == 1 {
		if r, ok := decl.Body.List[0].(*ast.ReturnStmt); ok && len(r.Results) == 1 {
			return ast.Unparen(r.Results[0]), obj.Pos(), true
		}
	}
	return nil, obj.Pos(), true
}

var connectionName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
