from hscode.cli import main

raise SystemExit(main())
