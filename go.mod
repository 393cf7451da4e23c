module aloft

go 1.26.8
