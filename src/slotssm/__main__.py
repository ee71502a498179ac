from slotssm.cli import main

raise SystemExit(main())
