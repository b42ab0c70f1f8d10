"""What predict lists, reads and writes, on real files in temporary folders: special
files and link loops never hang and each get a row, each real file is read once, an
annotation or a results file never replaces a file it should not."""

from __future__ import annotations

import csv
import json
import os
import socket
import threading
from pathlib import Path

import pytest
from PIL import Image

from happysad.data.listing import NO_MATCH, expand
from happysad.errors import ConfigError
from happysad.results.annotate import annotate_all, check_folder
from happysad.results.files import RowsFile, fitting_name, write_new
from happysad.serving.images import Unusable, read_file


def _within(seconds: float, call, *args):
    """call(*args), its answer or its exception, failing the test if it has not ended
    in `seconds` (a hang)."""
    done: list = []

    def run():
        try:
            done.append((call(*args), None))
        except Exception as err:
            done.append((None, err))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert done, f"{call.__name__}{args} did not end within {seconds} s"
    answer, error = done[0]
    if error is not None:
        raise error
    return answer


def _picture(path: Path, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (200, 30, 30)).save(path, format="PNG")
    return path


@pytest.fixture
def album(tmp_path, monkeypatch) -> Path:
    """album/: two pictures, one in a subfolder, a hidden file, a FIFO, a link to the
    subfolder, a link to the FIFO, a link to nothing and a link back to album itself."""
    monkeypatch.chdir(tmp_path)
    album = tmp_path / "album"
    _picture(album / "a.png")
    _picture(album / "sub" / "b.png")
    _picture(album / ".hidden.png")
    os.mkfifo(album / "pipe.png")
    (album / "linked").symlink_to("sub")
    (album / "pipe-link.png").symlink_to("pipe.png")
    (album / "nowhere.png").symlink_to("gone.png")
    (album / "sub" / "up").symlink_to("..")
    return album


def test_a_folder_lists_special_files_and_links_once_and_ends(album):
    files, notes = _within(10, expand, ["album"])
    assert files == ["album/a.png", "album/nowhere.png", "album/pipe.png", "album/sub/b.png"]
    assert notes == [
        ("album/linked", "a link to a folder already listed: not entered again"),
        ("album/sub/up", "a link to a folder already listed: not entered again"),
    ]


def test_a_double_star_pattern_over_two_link_loops_ends_with_each_file_once(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _picture(one / "p.png")
    _picture(two / "deep" / "q.png")
    (one / "to-two").symlink_to(two)
    (two / "to-one").symlink_to(one)
    (one / "self").symlink_to(".")
    files, notes = _within(10, expand, [f"{one}/**/*.png"])
    assert files == [str(one / "p.png"), str(one / "to-two" / "deep" / "q.png")]
    assert notes == []
    # As Python's glob: `**` matches no folder too, and hidden names only when named.
    _picture(one / ".h" / "r.png")
    assert _within(10, expand, [f"{one}/**/p.png"])[0] == [str(one / "p.png")]
    assert _within(10, expand, [f"{one}/.h/*.png"])[0] == [str(one / ".h" / "r.png")]


def test_patterns_list_fifos_but_not_folders_and_say_when_nothing_matches(album):
    assert expand(["album/*.png"]) == (["album/a.png", "album/nowhere.png", "album/pipe.png"], [])
    assert expand(["album/pipe.png", "album/zz*.png"]) == (
        ["album/pipe.png"],
        [("album/zz*.png", NO_MATCH)],
    )
    # A PATH named twice is read twice, as asked; one walk reads each real file once.
    assert expand(["album/a.png", "album"])[0].count("album/a.png") == 2


def test_read_file_never_opens_what_is_not_a_regular_file(album, tmp_path):
    reasons = {}
    server = socket.socket(socket.AF_UNIX)
    server.bind("sock.png")  # relative: a socket's path must be short
    try:
        for name in ["album/pipe.png", "album/pipe-link.png", "album/sub", "sock.png"]:
            with pytest.raises(Unusable) as err:
                _within(10, read_file, name)
            reasons[name] = str(err.value)
    finally:
        server.close()
    assert reasons == {
        "album/pipe.png": "a named pipe (FIFO), not a picture file: not opened",
        "album/pipe-link.png": "a named pipe (FIFO), not a picture file: not opened",
        "album/sub": "a folder, not a picture file: not opened",
        "sock.png": "a socket, not a picture file: not opened",
    }
    if os.path.exists("/dev/null"):
        with pytest.raises(Unusable, match="^a device, not a picture file"):
            read_file("/dev/null")
    with pytest.raises(Unusable, match=r"^a link that leads nowhere \(No such file"):
        read_file("album/nowhere.png")
    (tmp_path / "empty.png").touch()
    with pytest.raises(Unusable, match="^empty file$"):
        read_file("empty.png")
    assert read_file("album/a.png") == (album / "a.png").read_bytes()


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux's /proc/self/io")
def test_read_file_reads_only_the_header_of_what_is_not_an_image(tmp_path):
    big = tmp_path / "video.png"
    with open(big, "wb") as f:
        f.write(b"\x1aE\xdf\xa3 not an image" + os.urandom(1024) * 32 * 1024)  # 32 MiB

    def read_bytes() -> int:
        return int(Path("/proc/self/io").read_text().split()[1])  # rchar

    before = read_bytes()
    with pytest.raises(Unusable, match="^not an image Pillow can read$"):
        read_file(str(big))
    assert read_bytes() - before < 1024 * 1024


def _whole(path: Path | str, label: str = "happy") -> dict:
    """The row predict gives a picture classified whole."""
    return {
        "path": str(path),
        "face": None,
        "x": 0,
        "y": 0,
        "width": 8,
        "height": 8,
        "label": label,
        "probability": 0.9,
        "error": None,
    }


def test_annotations_never_replace_a_file_nor_follow_a_link(tmp_path):
    album = tmp_path / "album"
    png, gif = _picture(album / "pic.png"), _picture(album / "pic.gif")
    other = _picture(album / "other" / "pic.png")
    long = _picture(album / ("é" * 126 + "x.b"))  # 255 bytes, the most a name may have
    seen = tmp_path / "seen"
    seen.mkdir()
    (tmp_path / "notes.txt").write_text("my notes")
    (seen / "pic.png").write_text("a file of the user's")
    (seen / "pic-1.png").symlink_to(tmp_path / "notes.txt")
    (seen / "pic-2.png").symlink_to(tmp_path / "nothing.txt")
    rows = [_whole(p) for p in (png, gif, other, long)]
    rows.append({**_whole(album / "pipe.png"), "error": "a named pipe (FIFO)"})
    os.mkfifo(album / "pipe.png")

    assert _within(30, annotate_all, rows, seen, 10**6) == 4
    assert (seen / "pic.png").read_text() == "a file of the user's"
    assert (tmp_path / "notes.txt").read_text() == "my notes"
    assert not (tmp_path / "nothing.txt").exists()
    made = sorted(p.name for p in seen.iterdir() if not p.is_symlink())
    # Annotated as a PNG, its name would be 257 bytes: shortened, keeping the extension.
    short = "é" * 125 + ".png"
    assert made == sorted(["pic.png", "pic-3.png", "pic-4.png", "pic-5.png", short])
    for name in made:
        if name != "pic.png":
            with Image.open(seen / name) as image:
                assert image.size == (8, 8) and image.format == "PNG"
    assert [p.name for p in seen.iterdir() if p.name.startswith(".")] == []  # no temporary


def test_a_new_file_is_whole_or_absent(tmp_path):
    def fails(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_new(tmp_path, "out.png", fails)
    assert list(tmp_path.iterdir()) == []
    assert write_new(tmp_path, "out.png", lambda f: f.write(b"whole")).name == "out.png"
    assert write_new(tmp_path, "out.png", lambda f: f.write(b"again")).name == "out-1.png"
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["out-1.png", "out.png"]
    assert fitting_name(tmp_path, "x" * 1000, ".png") == "x" * 251 + ".png"


def test_an_annotation_folder_that_holds_an_input_is_refused(tmp_path, monkeypatch, capsys):
    from happysad.predict import main

    album = tmp_path / "album"
    pic = _picture(album / "sub" / "pic.png")
    before = pic.read_bytes()
    check_folder(tmp_path / "seen", [str(pic)])
    for folder in (album, album / "sub", tmp_path / "link"):
        (tmp_path / "link").unlink(missing_ok=True)
        (tmp_path / "link").symlink_to(album)
        with pytest.raises(ConfigError, match=f"^--annotate {folder} holds the input picture"):
            check_folder(folder, [str(pic)])
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_folder(pic, [])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    assert main([str(album), "--annotate", str(album)]) == 2
    assert capsys.readouterr().err.endswith(
        f"error: --annotate {album} holds the input picture {pic}: name a folder for the "
        "annotated copies that holds none of the pictures (nothing was written)\n"
    )
    assert [p.name for p in album.rglob("*")] == ["sub", "pic.png"]
    assert pic.read_bytes() == before


FIELDS = ["path", "face", "x", "y", "width", "height", "label", "probability", "error"]


def test_a_results_file_replaces_the_old_one_only_when_complete(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("old results\n")
    rows = [
        {**_whole('=HYPERLINK("http://x")'), "x": -3},
        {**_whole("caf\udce9\n.png"), "label": None, "error": "@SUM(1)"},
        _whole("+1.png"),
        _whole("-1.png"),
        _whole("\tx.png"),
        _whole("é.png"),
    ]
    written = RowsFile(out, FIELDS)
    written.add(rows)
    assert out.read_text() == "old results\n"
    assert written.finish() == out
    with open(out, newline="", encoding="utf-8") as f:
        cells = list(csv.reader(f))
    assert cells[0] == FIELDS
    assert [row[0] for row in cells[1:]] == [
        '\'=HYPERLINK("http://x")',
        "caf\\xe9\\x0a.png",
        "'+1.png",
        "'-1.png",
        "\\x09x.png",  # control characters are escaped: no tab starts the cell
        "é.png",
    ]
    assert cells[1][1:] == ["", "-3", "0", "8", "8", "happy", "0.9", ""]  # numbers as they are
    assert cells[2][6:] == ["", "0.9", "'@SUM(1)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]  # no temporary left


def test_interrupted_results_are_kept_beside_the_untouched_file(tmp_path):
    out, real = tmp_path / "out.json", tmp_path / "real.json"
    real.write_text("[]\n")
    out.symlink_to(real)
    kept = []
    for _ in range(2):
        partial = RowsFile(out, FIELDS)
        partial.add([_whole(Path("a.png")), _whole(Path("b.png"))])
        kept.append(partial.keep_partial())
    assert [p.name for p in kept] == ["real.json.partial", "real.json-1.partial"]
    assert real.read_text() == "[]\n" and out.is_symlink()
    assert [r["path"] for r in json.loads(kept[1].read_text())] == ["a.png", "b.png"]
    RowsFile(out, FIELDS).finish()  # a link to the file: the file is replaced, the link kept
    assert json.loads(real.read_text()) == [] and out.is_symlink()
    empty = RowsFile(tmp_path / "none.csv", FIELDS).keep_partial()
    assert empty.read_bytes() == ",".join(FIELDS).encode() + b"\r\n"
