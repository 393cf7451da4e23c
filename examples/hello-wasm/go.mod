module example.com/hello-wasm

go 1.22
