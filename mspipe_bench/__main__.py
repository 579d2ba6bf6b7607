from mspipe_bench.cli import main

raise SystemExit(main())
