"""examples/thumbnails run by `rediswq local` from its folder, on pictures the test makes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from conftest import cli_env
from PIL import Image

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "thumbnails"


def test_local_makes_a_thumbnail_of_each_picture_and_rejects_the_rest(tmp_path: Path) -> None:
    pictures, thumbnails = tmp_path / "in", tmp_path / "out"
    pictures.mkdir()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(pictures / "wide.png")
    Image.new("L", (50, 400), 128).save(pictures / "tall.jpg")
    Image.new("RGB", (20, 10), (0, 0, 255)).save(pictures / "small.gif")
    (pictures / "readme.png").write_text("not a picture", encoding="utf-8")
    (pictures / "albums").mkdir()  # a folder: no retry makes it a picture
    items = tmp_path / "items.txt"
    names = ["wide.png", "tall.jpg", "small.gif", "readme.png", "../escape.png", "albums"]
    items.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    env = cli_env(INPUT_DIR=str(pictures), OUTPUT_DIR=str(thumbnails), THUMBNAIL_SIZE="64")
    env.pop("PYTHONPATH")  # found in the working directory, as a user running it there would
    run = subprocess.run(
        [sys.executable, "-m", "rediswq", "local", "--items", str(items), "--workers", "2",
         "--results", "--item-timeout", "60", "--handler", "thumbnails.handler:make_thumbnail"],
        cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    out = run.stdout
    assert "Summary: 3/6 done, 3 failed" in out, out + run.stderr
    results = {
        entry["item"]: entry["result"]
        for entry in (json.loads(line[len("result ") :]) for line in out.splitlines()
                      if line.startswith("result "))
    }  # fmt: skip
    expected = {"wide.png": [64, 43], "tall.jpg": [8, 64], "small.gif": [20, 10]}
    assert {item: result["thumbnail"] for item, result in results.items()} == expected
    for item, result in results.items():
        written = thumbnails / f"{Path(item).stem}.png"
        with Image.open(written) as made:
            assert (made.format, list(made.size)) == ("PNG", expected[item])
        assert result["sha256"] == hashlib.sha256(written.read_bytes()).hexdigest()
    assert results["wide.png"]["size"] == [300, 200]
    assert "dead letter 'readme.png': Reject: readme.png is not a picture" in out
    assert "dead letter '../escape.png': Reject: '../escape.png' is outside" in out
    assert "Failed on readme.png (attempt 1; rejected" in out  # no retries for a verdict
    assert "Failed on albums (attempt 1; rejected" in out


def test_the_items_name_the_sample_pictures() -> None:
    items = (EXAMPLE / "items.txt").read_text(encoding="utf-8").split()
    assert sorted(items) == sorted(path.name for path in (EXAMPLE / "samples").iterdir())
