"""`python -m pybuild.builder.executor.daemon`: run the sandbox daemon (see `server`)."""

from pybuild.builder.executor.daemon.server import main

main()
