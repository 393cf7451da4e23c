module example.com/httpecho

go 1.22
