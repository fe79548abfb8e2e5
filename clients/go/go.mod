module foundation/clients/go

go 1.19
