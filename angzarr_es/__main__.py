"""`python -m angzarr_es ...` runs the `angzarr-es` command line."""

from angzarr_es.cli import main

raise SystemExit(main())
