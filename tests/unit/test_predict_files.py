"""What predict lists, reads and writes, on real files in temporary folders: special
files and link loops never hang and each get a row, each real file is read once, an
annotation or a results file never replaces a file it should not."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
from PIL import Image

from happysad.data.listing import NO_MATCH, expand
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
    Image.new("RGB", (size, size), (200, 30, 30)).save(path)
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
