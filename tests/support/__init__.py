"""What tests share beyond fixtures: running the command line in-process."""
