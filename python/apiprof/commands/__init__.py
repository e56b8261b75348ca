"""One module per `apiprof` command; see apiprof.cli."""
