"""MkDocs hook: model/*.png become files of the site, at its root.

The model card (model/MODEL_CARD.md, included by docs/model-card.md with pymdownx.snippets)
shows `example.png` and `training_curves.png` by paths relative to itself; copied to the
site's root they resolve from docs/model-card.md exactly as they do beside the card, and
`mkdocs build --strict` checks that they exist.
"""

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

MODEL = Path(__file__).resolve().parent.parent / "model"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for png in sorted(MODEL.glob("*.png")):
        files.append(File(png.name, str(MODEL), config.site_dir, config.use_directory_urls))
    return files
