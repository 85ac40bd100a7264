from pybuild.cli.main import main

raise SystemExit(main())
