module tandem/tests/audit_sink/vectors

go 1.22

require github.com/transparency-dev/merkle v0.0.2
