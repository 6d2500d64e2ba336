from mda_fast.cli import main

raise SystemExit(main())
