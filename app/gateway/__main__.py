"""``python -m app.gateway``: the same as ``unet-dicom-gateway``."""

from app.gateway.main import main

raise SystemExit(main())
