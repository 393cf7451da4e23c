package wasm

import (
	"context"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// The engine's WASI is wazero's but for the command line and the
// environment (args_* and environ_*), which read what Engine.setProc set
// for the calling instance rather than the module config. An instance can
// then be told them after it is instantiated: a command module is
// instantiated ahead of its request (Prepare) and learns the request's
// CGI variables when it runs.

// procArgs are an instance's command line and environment ("KEY=value").
type procArgs struct{ args, env []string }

// procs maps an instance (api.Module) to its *procArgs.
type procs struct{ m sync.Map }

func (p *procs) set(mod api.Module, args, env []string) {
	p.m.Store(mod, &procArgs{args: args, env: env})
}

func (p *procs) drop(mod api.Module) { p.m.Delete(mod) }

func (p *procs) get(mod api.Module) *procArgs {
	if v, ok := p.m.Load(mod); ok {
		return v.(*procArgs)
	}
	return &procArgs{}
}

// WASI errnos the overrides answer.
const (
	errnoSuccess = 0
	errnoFault   = 21
)

// instantiateWASI instantiates wasi_snapshot_preview1 in rt with the
// overrides reading from p.
func instantiateWASI(ctx context.Context, rt wazero.Runtime, p *procs) error {
	b := rt.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	args := func(a *procArgs) []string { return a.args }
	env := func(a *procArgs) []string { return a.env }
	for name, f := range map[string]api.GoModuleFunc{
		"args_sizes_get":    p.sizesGet(args),
		"args_get":          p.valuesGet(args),
		"environ_sizes_get": p.sizesGet(env),
		"environ_get":       p.valuesGet(env),
	} {
		b.NewFunctionBuilder().
			WithGoModuleFunction(f, []api.ValueType{api.ValueTypeI32, api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}).
			Export(name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

// sizesGet implements args_sizes_get and environ_sizes_get: the count of
// values and the bytes they take, each NUL-terminated.
func (p *procs) sizesGet(pick func(*procArgs) []string) api.GoModuleFunc {
	return func(_ context.Context, mod api.Module, stack []uint64) {
		vals := pick(p.get(mod))
		size := 0
		for _, v := range vals {
			size += len(v) + 1
		}
		mem := mod.Memory()
		if mem == nil || !mem.WriteUint32Le(uint32(stack[0]), uint32(len(vals))) || !mem.WriteUint32Le(uint32(stack[1]), uint32(size)) {
			stack[0] = errnoFault
			return
		}
		stack[0] = errnoSuccess
	}
}

// valuesGet implements args_get and environ_get: a pointer per value at
// stack[0], the NUL-terminated values from stack[1].
func (p *procs) valuesGet(pick func(*procArgs) []string) api.GoModuleFunc {
	return func(_ context.Context, mod api.Module, stack []uint64) {
		vals := pick(p.get(mod))
		ptrs, buf := uint32(stack[0]), uint32(stack[1])
		mem := mod.Memory()
		if mem == nil {
			stack[0] = errnoFault
			return
		}
		for i, v := range vals {
			if !mem.WriteUint32Le(ptrs+4*uint32(i), buf) || !mem.WriteString(buf, v) || !mem.WriteByte(buf+uint32(len(v)), 0) {
				stack[0] = errnoFault
				return
			}
			buf += uint32(len(v)) + 1
		}
		stack[0] = errnoSuccess
	}
}
