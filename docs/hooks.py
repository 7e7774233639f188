"""MkDocs hook: publish the studies' figures (``experiments/**/*.png``) with the site, at their repository
paths, so a page can show ``experiments/recipe/recipe_small.png`` as it is committed."""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent


def on_files(files, config):
    for png in sorted((ROOT / "experiments").glob("*/*.png")):
        path = png.relative_to(ROOT).as_posix()
        files.append(File(path, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
