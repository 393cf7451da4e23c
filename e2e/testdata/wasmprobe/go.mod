module example.com/wasmprobe

go 1.22
