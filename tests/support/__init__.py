"""What tests and benchmarks share beyond fixtures: the server in a subprocess, scratch databases, photos, the
command line in-process, and the fault and admission drills."""
