package wasm

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"aloft/internal/fn"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// spinModule imports an i32 global a.g and defines an i64 one, so the
// interrupt global's index is 2; exports "spin", a loop that never ends and
// runs one instruction of most immediate kinds (SIMD, bulk memory,
// references, tables, big constants) each iteration, and "count", a loop
// with a parameter (block type by type index) that counts its argument
// down to 0.
func spinModule(globalAndExports bool) []byte {
	spin := cat([]byte{0x00}, // no locals
		[]byte{0x03, 0x40},                   // loop
		[]byte{0xfd, 0x0c}, make([]byte, 16), // v128.const
		[]byte{0xfd, 0x0c}, make([]byte, 16), // v128.const
		[]byte{0xfd, 0x0d}, []byte{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}, // i8x16.shuffle
		[]byte{0xfd, 0x1b, 0x03, 0x1a},              // i32x4.extract_lane 3, drop
		i32const(0), []byte{0xfd, 0x00, 0x04, 0x00}, // v128.load align=16 offset=0
		[]byte{0xfd, 0x53, 0x1a},                                        // v128.any_true, drop
		i32const(0), i32const(0), i32const(0), []byte{0xfc, 0x0b, 0x00}, // memory.fill
		i32const(0), i32const(0), i32const(0), []byte{0xfc, 0x0a, 0x00, 0x00}, // memory.copy
		[]byte{0x43, 0, 0, 0x80, 0x3f, 0xfc, 0x00, 0x1a},                         // f32.const 1, i32.trunc_sat_f32_s, drop
		[]byte{0x44, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x1a},                         // f64.const 1, drop
		[]byte{0x42, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f}, // i64.const min
		[]byte{0x42, 0x7f, 0x7c, 0x1a},                                           // i64.const -1, i64.add, drop
		[]byte{0xd0, 0x70, 0xd1, 0x1a},                                           // ref.null func, ref.is_null, drop
		[]byte{0xd2, 0x00, 0x1a},                                                 // ref.func 0, drop
		[]byte{0x23, 0x00, 0x1a, 0x23, 0x01, 0x1a},                               // global.get 0, 1, drops
		i32const(1), i32const(2), i32const(1), []byte{0x1c, 0x01, i32, 0x1a}, // select (result i32), drop
		[]byte{0x02, 0x40}, i32const(0), []byte{0x0e, 0x01, 0x00, 0x00, 0x0b}, // block br_table end
		i32const(0), []byte{0x11, 0x00, 0x00}, // call_indirect type 0 table 0
		[]byte{0x3f, 0x00, 0x1a}, // memory.size, drop
		[]byte{0x0c, 0x00},       // br 0
		[]byte{0x0b, 0x0b})       // end loop, end
	count := cat([]byte{0x00},
		[]byte{0x20, 0x00},        // local.get 0
		[]byte{0x03, 0x01},        // loop (type 1: i32 -> i32)
		i32const(1), []byte{0x6b}, // i32.sub
		[]byte{0x22, 0x00, 0x20, 0x00, 0x0d, 0x00}, // local.tee 0, local.get 0, br_if 0
		[]byte{0x0b, 0x0b})                         // end loop, end
	nop := []byte{0x00, 0x0b}
	body := func(b []byte) []byte { return cat(uleb(uint32(len(b))), b) }
	parts := [][]byte{[]byte("\x00asm\x01\x00\x00\x00"),
		section(1, vec(funcType(nil, nil), funcType([]byte{i32}, []byte{i32}))),
		section(2, vec(cat(name("a"), name("g"), []byte{0x03, i32, 0x00}))),
		section(3, vec(uleb(0), uleb(1), uleb(0))),
		section(4, vec([]byte{0x70, 0x00, 0x02})), // a funcref table of 2
		section(5, vec([]byte{0x00, 0x01})),
	}
	if globalAndExports {
		parts = append(parts,
			section(6, vec([]byte{i64, 0x01, 0x42, 0x00, 0x0b})),
			section(7, vec(
				cat(name("spin"), []byte{0x00}, uleb(0)),
				cat(name("count"), []byte{0x00}, uleb(1)),
				cat(name("memory"), []byte{0x02}, uleb(0)))))
	}
	return cat(append(parts,
		section(9, vec(cat([]byte{0x00}, i32const(0), []byte{0x0b}, vec(uleb(2), uleb(0))))), // table = nop, spin
		section(10, vec(body(spin), body(count), body(nop))),
		section(0, cat(name("a custom section"), []byte("kept"))))...)
}

// instantiate compiles wasm in a runtime that, like the Engine's, does
// not close modules on context ends, next to a module "a" exporting g.
func instantiate(t *testing.T, wasm []byte) (api.Module, *interrupt) {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	t.Cleanup(func() { _ = rt.Close(ctx) })
	a := cat([]byte("\x00asm\x01\x00\x00\x00"),
		section(6, vec(cat([]byte{i32, 0x00}, i32const(7), []byte{0x0b}))),
		section(7, vec(cat(name("g"), []byte{0x03}, uleb(0)))))
	if _, err := rt.InstantiateWithConfig(ctx, a, wazero.NewModuleConfig().WithName("a")); err != nil {
		t.Fatal(err)
	}
	code, err := interruptible(wasm)
	if err != nil {
		t.Fatalf("interruptible: %v", err)
	}
	mod, err := rt.InstantiateWithConfig(ctx, code, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatalf("the rewritten module does not instantiate: %v", err)
	}
	x, err := (&runs{}).newInterrupt()
	if err != nil {
		t.Fatal(err)
	}
	if err := x.attach(mod); err != nil {
		t.Fatal(err)
	}
	return mod, x
}

func TestInterruptStopsALoop(t *testing.T) {
	mod, x := instantiate(t, spinModule(true))
	ctx := context.Background()
	res, err := mod.ExportedFunction("count").Call(ctx, 100_000)
	if err != nil || res[0] != 0 {
		t.Fatalf("count(100000) = %v, %v; want 0", res, err)
	}
	if v := mod.ExportedGlobal(interruptExport).Get(); v != 0 {
		t.Fatalf("the interrupt global starts at %d", v)
	}
	done := inBackground(func() error {
		_, err := mod.ExportedFunction("spin").Call(ctx)
		return err
	})
	time.Sleep(50 * time.Millisecond) // let it spin
	select {
	case err := <-done:
		t.Fatalf("spin returned before the interrupt: %v", err)
	default:
	}
	x.fire()
	x.fire() // a second fire is harmless
	if err := within(t, done, "the interrupt did not stop the loop"); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("spin after the interrupt: %v, want the unreachable trap", err)
	}
	// Every later call traps too: an interrupted instance serves nothing.
	if _, err := mod.ExportedFunction("count").Call(ctx, 3); err == nil {
		t.Fatal("count ran after the interrupt")
	}
}

func TestInterruptAddsMissingSections(t *testing.T) {
	// No global and no export section: both are created, in order.
	mod, x := instantiate(t, spinModule(false))
	if x.flag == nil || mod.ExportedGlobal(interruptExport) == nil {
		t.Fatal("no interrupt global")
	}
}

func TestInterruptWakesASleep(t *testing.T) {
	x, err := (&runs{}).newInterrupt()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { x.sleep(int64(time.Hour)); close(done) }()
	x.fire()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("an hour's sleep was not woken")
	}
	x.sleep(int64(time.Hour)) // after the interrupt, sleeps return at once
}

func TestInterruptibleRejects(t *testing.T) {
	good := spinModule(true)
	reserved := cat([]byte("\x00asm\x01\x00\x00\x00"),
		section(6, vec([]byte{i32, 0x00, 0x41, 0x00, 0x0b})),
		section(7, vec(cat(name(interruptExport), []byte{0x03}, uleb(0)))))
	atomics := cat([]byte("\x00asm\x01\x00\x00\x00"),
		section(1, vec(funcType(nil, nil))),
		section(3, vec(uleb(0))),
		section(5, vec([]byte{0x00, 0x01})),
		section(10, vec(cat(uleb(9), []byte{0x00}, i32const(0), []byte{0xfe, 0x10, 0x02, 0x00, 0x1a, 0x0b})))) // i32.atomic.load
	tryBlock := cat([]byte("\x00asm\x01\x00\x00\x00"),
		section(1, vec(funcType(nil, nil))),
		section(3, vec(uleb(0))),
		section(10, vec(cat(uleb(5), []byte{0x00, 0x06, 0x40, 0x0b, 0x0b})))) // try end
	for _, c := range []struct {
		name, want string
		wasm       []byte
	}{
		{"not wasm", "does not start with the bytes \\0asm", []byte("#!/bin/sh\n")},
		{"truncated", "runs past the end", good[:len(good)-10]},
		{"reserved export", "a name Aloft reserves", reserved},
		{"reserved start export", `exports "aloft:start"`, cat([]byte("\x00asm\x01\x00\x00\x00"),
			section(1, vec(funcType(nil, nil))),
			section(3, vec(uleb(0))),
			section(7, vec(cat(name(startExport), []byte{0x00}, uleb(0)))),
			section(10, vec(cat(uleb(2), []byte{0x00, 0x0b}))))},
		{"atomics", "instruction 0xfe is outside WebAssembly 2.0", atomics},
		{"exceptions", "instruction 0x6 is outside WebAssembly 2.0", tryBlock},
	} {
		_, err := interruptible(c.wasm)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

// A reactor that sleeps past its timeout answers the timeout and is
// closed; the Go module's own loops are interrupted as a hand-written
// one's are.
func TestReactorSleepPastTimeout(t *testing.T) {
	i := newInstance(t, goReactor(t), Limits{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := within(t, serving(ctx, i, "/sleep"), "a sleeping reactor was not stopped at its timeout")
	if fe := (*FunctionError)(nil); !errors.As(err, &fe) || fe.Type != ErrTimeout {
		t.Fatalf("err = %v, want a timeout", err)
	}
	requireDone(t, i, "the instance is still open after its timeout")
}

// Closing the engine interrupts a call that has no deadline of its own
// (Close waits for it before freeing anything: were memory freed under
// the running code, the process would crash); afterwards nothing runs.
func TestEngineCloseStopsRunningCalls(t *testing.T) {
	m := goReactor(t)
	i := newInstance(t, m, Limits{})
	spare := newInstance(t, m, Limits{})
	done := serving(context.Background(), i, "/loop")
	time.Sleep(100 * time.Millisecond) // let it loop
	if err := m.e.Close(context.Background()); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := within(t, done, "the looping call was not stopped by Close"); err == nil {
		t.Fatal("the looping call succeeded")
	}
	if err := spare.Serve(context.Background(), httptest.NewRecorder(), httptest.NewRequest("GET", "/counter", nil)); err == nil {
		t.Error("an instance served after the engine closed")
	}
	if _, err := m.NewInstance(context.Background(), Limits{}); !errors.Is(err, errEngineClosed) {
		t.Errorf("new instance after close: %v, want errEngineClosed", err)
	}
}

// Closing an instance while it serves (its function deleted, its pool
// stopped) interrupts the request; the instance's memory is freed only
// after the request returned (under it, the process would crash).
func TestInstanceCloseWhileServing(t *testing.T) {
	i := newInstance(t, goReactor(t), Limits{})
	done := serving(context.Background(), i, "/loop")
	time.Sleep(100 * time.Millisecond) // let it loop
	if err := i.Close(context.Background()); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := within(t, done, "the looping request was not stopped by Close"); err == nil {
		t.Fatal("the looping request succeeded")
	}
	requireDone(t, i, "the instance is not done after Close")
}

// inBackground runs f on a goroutine of its own; its error comes on the
// channel.
func inBackground(f func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	return done
}

// serving serves GET path on i in the background.
func serving(ctx context.Context, i *Instance, path string) <-chan error {
	return inBackground(func() error {
		return i.Serve(ctx, httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	})
}

// within returns what done delivers, failing the test with stuck if
// nothing comes within 30 seconds.
func within(t *testing.T, done <-chan error, stuck string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal(stuck)
		return nil
	}
}

// requireDone fails the test with msg if i is not done.
func requireDone(t *testing.T, i *Instance, msg string) {
	t.Helper()
	select {
	case <-i.Done():
	default:
		t.Fatal(msg)
	}
}

// FuzzInterruptible feeds the rewrite arbitrary bytes (modules are user
// uploads): it must never panic, and whatever it returns for a module
// wazero accepts must be accepted too.
func FuzzInterruptible(f *testing.F) {
	f.Add(spinModule(true))
	f.Add(spinModule(false))
	f.Add(tinyCommand(tinyResponse))
	f.Add(tinyModule([2]string{"wasi_snapshot_preview1", "sched_yield"}))
	f.Add([]byte("\x00asm\x01\x00\x00\x00"))
	f.Add(startModule(true))
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	f.Fuzz(func(t *testing.T, wasm []byte) {
		out, err := interruptible(wasm)
		if err != nil {
			return
		}
		orig, err := rt.CompileModule(ctx, wasm)
		if err != nil {
			return // not valid to begin with: wazero reports it at deploy
		}
		_ = orig.Close(ctx)
		cm, err := rt.CompileModule(ctx, out)
		if err != nil {
			t.Fatalf("wazero accepts the module but not its rewrite: %v", err)
		}
		_ = cm.Close(ctx)
	})
}

// startModule is a command module whose start section runs body: a
// function that stores 42 at address 0 and then, if spin, loops forever.
func startModule(spin bool) []byte {
	body := cat([]byte{0x00}, i32const(0), i32const(42), []byte{0x36, 0x02, 0x00}) // i32.store
	if spin {
		body = append(body, 0x03, 0x40, 0x0c, 0x00, 0x0b) // loop br 0 end
	}
	body = append(body, 0x0b)
	nop := []byte{0x00, 0x0b}
	return cat([]byte("\x00asm\x01\x00\x00\x00"),
		section(1, vec(funcType(nil, nil))),
		section(3, vec(uleb(0), uleb(0))),
		section(5, vec([]byte{0x00, 0x01})),
		section(7, vec(
			cat(name("memory"), []byte{0x02}, uleb(0)),
			cat(name("_start"), []byte{0x00}, uleb(0)))),
		section(8, uleb(1)), // start: function 1
		section(10, vec(cat(uleb(uint32(len(nop))), nop), cat(uleb(uint32(len(body))), body))))
}

// A start section runs once, right after instantiation, as the format says;
// one that never ends is cut by the context instead of hanging the
// instantiation (it would run before any interrupt could be set).
func TestStartSectionRunsUnderInterrupt(t *testing.T) {
	out, err := interruptible(startModule(false))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	mod, err := rt.InstantiateWithConfig(ctx, out, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := mod.Memory().ReadUint32Le(0); v != 0 {
		t.Fatalf("the start function ran inside instantiation (memory[0] = %d)", v)
	}
	x, err := (&runs{}).newInterrupt()
	if err != nil {
		t.Fatal(err)
	}
	if err := x.attach(mod); err != nil {
		t.Fatal(err)
	}
	if err := runStart(ctx, mod, x, newCappedMemory(0)); err != nil {
		t.Fatal(err)
	}
	if v, _ := mod.Memory().ReadUint32Le(0); v != 42 {
		t.Fatalf("memory[0] = %d after runStart, want 42", v)
	}

	m := compile(t, newEngine(t, ""), startModule(true))
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	done := inBackground(func() error {
		_, err := m.Prepare(tctx, Limits{})
		return err
	})
	err = within(t, done, "an endless start function hung the instantiation")
	if fe := (*FunctionError)(nil); !errors.As(err, &fe) || fe.Type != ErrTimeout {
		t.Fatalf("prepare: %v, want a timeout", err)
	}
}

// A start section naming a function with parameters is invalid; the
// rewrite makes it an export, so the compile checks it instead.
func TestStartFunctionSignatureChecked(t *testing.T) {
	wasm := cat([]byte("\x00asm\x01\x00\x00\x00"),
		section(1, vec(funcType(nil, nil), funcType([]byte{i32}, nil))),
		section(3, vec(uleb(0), uleb(1))),
		section(7, vec(cat(name("_start"), []byte{0x00}, uleb(0)))),
		section(8, uleb(1)),
		section(10, vec(cat(uleb(2), []byte{0x00, 0x0b}), cat(uleb(2), []byte{0x00, 0x0b}))))
	_, err := newEngine(t, "").Compile(context.Background(), "k", wasm)
	var fe *fn.Error
	if !errors.As(err, &fe) || fe.Status != http.StatusBadRequest || !strings.Contains(err.Error(), "start function") {
		t.Fatalf("compile: %v, want the start function's signature refused as a client error", err)
	}
}
