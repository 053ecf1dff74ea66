from paralab.cli import main

raise SystemExit(main())
