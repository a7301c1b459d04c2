"""How scan.svs and scan-dicom/ were made: the test fixture of a DICOM WSI written from a
TIFF by wsidicomizer (tests/codecs/test_dicom_wsi.py).

wsidicomizer pins an older wsidicom than the one we read with, so it is not a test
dependency; the files it wrote are kept here (243 kB). To make them again:

    python3.11 -m venv /tmp/wz && /tmp/wz/bin/pip install wsidicomizer==0.26.1 tiffslide
    /tmp/wz/bin/python tests/codecs/wsidicomizer/make.py

scan.svs: an Aperio SVS (tiled JPEG level 0, a 4x level; tests/samples.py's writer);
scan-dicom/: wsidicomizer's conversion of it (tiffslide source, JPEG-LS lossless tiles,
no label, overview or thumbnail), so the two hold the same pixels.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))


def main() -> None:
    from wsidicom.codec import JpegLsSettings
    from wsidicomizer import WsiDicomizer
    from wsidicomizer.sources import TiffSlideSource

    from tests.samples import gradient_rgb, write_svs

    image = gradient_rgb(700, 900)
    image[200:450, 150:600] = [200, 120, 170]  # something to segment
    write_svs(HERE / "scan.svs", image)
    out = HERE / "scan-dicom"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    WsiDicomizer.convert(
        HERE / "scan.svs", out, tile_size=256, encoding=JpegLsSettings(),
        include_label=False, include_overview=False, include_thumbnail=False,
        preferred_source=TiffSlideSource,
    )  # fmt: skip
    for number, file in enumerate(sorted(out.iterdir(), key=lambda p: -p.stat().st_size)):
        file.rename(out / f"level{number}.dcm")


if __name__ == "__main__":
    main()
