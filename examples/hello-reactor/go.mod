module example.com/hello-reactor

go 1.22
